"""Same-host shared memory for large out-of-band buffers: a sealed memfd per buffer.

Between two processes of one user on one host (PROTOCOL.md section 9.1), a
buffer of at least ``TransportConfig.shared_memory`` bytes is written once into
an anonymous ``memfd`` that is then sealed (no write, grow or shrink, ever
again); the frame carries only its descriptor number. The receiver opens it
through ``/proc/<sender pid>/fd/<n>``, checks its name, seals and size, and maps
it copy-on-write: a numpy array views the map, no copy; ``bytes`` are copied
out of it. It then tells the sender which descriptors it opened (an ack frame),
and the sender closes them.

Nothing is ever named in ``/dev/shm``: the kernel frees a memfd when its last
descriptor or mapping goes, so a process killed at any point leaks nothing.
Until its ack the sender counts a buffer as bytes waiting to be sent (its
``Account``), so a peer that never acks is treated like one that never reads.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import mmap
import os
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netlet.codec import Buffer
from netlet.errors import ProtocolError
from netlet.transport._budget import Account

__all__ = ["ACK", "SHM_FLAG", "TOTALS", "ShmLink", "ShmPeer", "ack_frame", "agree",
           "local_identity"]

SHM_FLAG = 0x80000000
"""Set in a buffer's length in a frame header: the buffer is a memfd of that many bytes
(the low 31 bits); the stream carries its descriptor number as a u32, not its bytes."""
ACK = 0xFFFFFFFF
"""The buffer count of an ack frame: its body is u32 descriptor numbers the receiver opened."""
DESCRIPTOR = struct.Struct(">I")
MAX_SIZE = 0x7FFFFFFF
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK


@functools.cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


class _Totals:
    """Buffers this process sent and received through shared memory (for tests and
    diagnostics; counted without a global lock, so only about right under load)."""

    def __init__(self) -> None:
        self.sent = 0
        self.sent_bytes = 0
        self.received = 0
        self.received_bytes = 0


TOTALS = _Totals()


def local_identity() -> list[Any] | None:
    """``[boot_id, pid namespace, uid, pid]`` of this process for the hello, or None
    where shared memory cannot work (not Linux, no memfd, no /proc)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "memfd_create"):
        return None
    boot, ns = _boot_id(), _pid_namespace()
    if not boot or not ns:
        return None
    return [boot, ns, os.getuid(), os.getpid()]


@dataclass(frozen=True, slots=True)
class ShmPeer:
    """What the handshake agreed for shared memory on one connection."""

    pid: int
    """The peer's process id (the descriptors we open are its)."""
    threshold: int
    """Our buffers of at least this many bytes go through shared memory."""
    send_name: str
    """The name our memfds carry: derived from the connection's token, so the peer
    opens only descriptors made for this connection."""
    recv_name: str


def agree(ours: list[Any] | None, theirs: Any, threshold: int, token: bytes,
          client: bool, authenticated: bool, sock: socket.socket | None) -> ShmPeer | None:
    """Shared memory for this connection, or None. Both ends decide alike: both offered,
    same boot and pid namespace, and the same user, proven by the key (``authenticated``)
    or by the kernel (``SO_PEERCRED`` on a unix socket); and we may open the peer's
    descriptors through /proc."""
    if threshold <= 0 or ours is None or type(theirs) is not list or len(theirs) != 4:
        return None
    boot, ns, uid, pid = theirs
    if (type(boot) is not str or type(ns) is not int or type(uid) is not int
            or type(pid) is not int or pid <= 0):
        return None
    if boot != ours[0] or ns != ours[1] or uid != ours[2]:
        return None
    if not authenticated:
        if sock is None or sock.family != socket.AF_UNIX:
            return None
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, peer_uid, _ = struct.unpack("3i", cred)
        if peer_uid != os.getuid():
            return None
    if not os.access(f"/proc/{pid}/fd", os.R_OK | os.X_OK):
        return None  # its descriptors are out of our reach (hidepid, not dumpable, gone)
    mine, other = (b"client", b"server") if client else (b"server", b"client")
    return ShmPeer(pid, threshold, _name(token, mine), _name(token, other))


def _name(token: bytes, side: bytes) -> str:
    return "netlet-" + hashlib.sha256(b"netlet shm\0" + side + b"\0" + token).hexdigest()[:24]


def ack_frame(fds: Sequence[int]) -> list[Buffer]:
    """The parts of one ack frame naming ``fds``."""
    body = struct.pack(f">{len(fds)}I", *fds)
    return [struct.pack(">II", len(body), ACK), body]


class ShmLink:
    """One connection's shared memory: the memfds we sent and wait to be acked, and
    how we open the peer's. Thread-safe."""

    def __init__(self, peer: ShmPeer, account: Account | None = None) -> None:
        self.peer = peer
        self.threshold = peer.threshold
        self.account = account
        self._lock = threading.Lock()
        self._sent: dict[int, int] = {}  # descriptor -> size, until acked
        self._closed = False

    @property
    def outstanding(self) -> int:
        """Descriptors sent and not acked yet."""
        return len(self._sent)

    def wants(self, size: int) -> bool:
        return self.threshold <= size <= MAX_SIZE

    # -- sending ------------------------------------------------------------

    def export(self, buf: Buffer) -> tuple[int, bytes]:
        """Copy ``buf`` into a new sealed memfd; returns (its size, the descriptor's
        4 stream bytes). Raises OSError (the caller then sends the bytes instead)."""
        view = memoryview(buf).cast("B")
        size = view.nbytes
        fd = os.memfd_create(self.peer.send_name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            pos = 0
            while pos < size:
                pos += os.pwrite(fd, view[pos:], pos)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS | fcntl.F_SEAL_SEAL)
            with self._lock:
                if self._closed:
                    raise OSError("the connection is closed")
                self._sent[fd] = size
                TOTALS.sent += 1
                TOTALS.sent_bytes += size
        except BaseException:
            os.close(fd)
            raise
        if self.account is not None:
            self.account.queue(size)
        return size, DESCRIPTOR.pack(fd)

    def acked(self, body: Buffer) -> None:
        """The peer opened the descriptors ``body`` names: close ours."""
        view = memoryview(body).cast("B")
        if view.nbytes % 4:
            raise ProtocolError("malformed shared-memory ack")
        freed = 0
        with self._lock:
            for (fd,) in struct.iter_unpack(">I", view):
                size = self._sent.pop(fd, None)
                if size is None:
                    raise ProtocolError(f"shared-memory ack for descriptor {fd}, never sent")
                os.close(fd)
                freed += size
        if freed and self.account is not None:
            self.account.unqueue(freed)

    def close(self) -> None:
        """Close every descriptor not acked yet (the connection is gone)."""
        with self._lock:
            self._closed = True
            sent, self._sent = self._sent, {}
        for fd in sent:
            os.close(fd)
        if sent and self.account is not None:
            self.account.unqueue(sum(sent.values()))

    # -- receiving ----------------------------------------------------------

    def open(self, descriptor: Buffer, size: int) -> memoryview:
        """Map the peer's memfd that ``descriptor`` (4 stream bytes) names, announced as
        ``size`` bytes; raises ``ProtocolError`` (and holds nothing) unless it is a
        memfd made for this connection, sealed, of exactly that size."""
        if memoryview(descriptor).nbytes != 4:
            raise ProtocolError("malformed shared-memory descriptor")
        (n,) = DESCRIPTOR.unpack(descriptor)
        try:
            fd = os.open(f"/proc/{self.peer.pid}/fd/{n}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ProtocolError(
                f"cannot open the peer's shared-memory buffer (descriptor {n} of process "
                f"{self.peer.pid}): {e.strerror}") from None
        try:
            try:
                name = os.readlink(f"/proc/self/fd/{fd}")
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                st_size = os.fstat(fd).st_size
            except OSError as e:
                raise ProtocolError(f"shared-memory buffer {n} of the peer: {e.strerror} "
                                    "(not a memfd)") from None
            if name != f"/memfd:{self.peer.recv_name} (deleted)":
                raise ProtocolError(f"descriptor {n} of the peer is not a shared-memory "
                                    "buffer made for this connection")
            if seals & _SEALS != _SEALS:
                raise ProtocolError(f"shared-memory buffer {n} of the peer is not sealed "
                                    "against writing and resizing")
            if st_size != size:
                raise ProtocolError(f"shared-memory buffer {n} of the peer holds {st_size} "
                                    f"bytes, announced {size}")
            if size == 0:
                return memoryview(b"")
            return _map(fd, size)
        finally:
            os.close(fd)

    def open_all(self, bufs: list[Buffer], lens: Sequence[int]) -> list[int]:
        """Replace each buffer whose length has ``SHM_FLAG`` with its map, in place;
        returns the descriptor numbers opened (to ack). All or nothing."""
        opened: list[int] = []
        maps: list[tuple[int, memoryview]] = []
        for i, n in enumerate(lens):
            if n & SHM_FLAG:
                maps.append((i, self.open(bufs[i], n & MAX_SIZE)))
                opened.append(DESCRIPTOR.unpack(bufs[i])[0])
        for i, m in maps:
            bufs[i] = m
            TOTALS.received += 1
            TOTALS.received_bytes += m.nbytes
        return opened




_libc: Any = None
_types: dict[int, Any] = {}  # a map's type by its length (few: lengths are rounded)


def _span(size: int) -> int:
    """``size`` rounded up to one of 8 steps per power of two (and whole pages): so few
    lengths that their types can be kept, whatever sizes a peer sends."""
    step = max(mmap.PAGESIZE, 1 << max(size.bit_length() - 4, 0))
    return -(-size // step) * step


def _map(fd: int, size: int) -> memoryview:
    """``size`` bytes of ``fd`` mapped copy-on-write, unmapped when the last view goes.

    Through libc, not ``mmap.mmap``: that keeps a duplicate of the descriptor open as
    long as the map lives (before Python 3.13), one per value a program keeps. The map
    may be longer than the file (``_span``); only its first ``size`` bytes are seen.
    """
    global _libc
    import ctypes  # here, not at import: ~1 ms, and only large buffers need it

    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc = libc
    span = _span(size)
    kind = _types.get(span)
    if kind is None:
        munmap = _libc.munmap

        class Mapped(ctypes.c_ubyte * span):  # type: ignore[misc]
            def __del__(self) -> None:
                munmap(ctypes.addressof(self), span)

        kind = _types[span] = Mapped
    addr = _libc.mmap(None, span, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        raise ProtocolError(f"cannot map the peer's shared-memory buffer: {os.strerror(err)}")
    return memoryview(kind.from_address(addr))[:size]
