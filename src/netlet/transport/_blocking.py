"""Blocking frame I/O on a socket owned by one thread at a time (the direct call path).

Same wire format as ``_framing``; used when a thread sends a request and reads
its own reply, which saves two thread hops per call compared with going
through the event loop.

As on the loop, a large frame's memory grows as its bytes arrive
(``GrowingBuffer``), never from its header alone; with an ``Account`` it is
charged, and a read that would pass the budget waits (the peer is slowed by
TCP) until memory is given back, or fails after ``budget_wait`` seconds.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Sequence

from netlet.clock import REAL_CLOCK, Clock
from netlet.codec import Buffer
from netlet.errors import ConnectionLost, FrameTooLarge, ProtocolError
from netlet.transport._budget import Account, GrowingBuffer
from netlet.transport._framing import frame_parts, split_lens
from netlet.transport._lazy import LazyBuffers, received_size
from netlet.transport._pool import (
    MIN_CACHED,
    bytes_api,
    bytes_window,
    fresh_bytes,
    reset_bytes_hash,
)
from netlet.transport._shm import ACK, MAX_SIZE, SHM_FLAG, ShmLink, ShmPeer, ack_frame

__all__ = ["BlockingFramer", "LazyBuffers", "SendStalled", "received_size"]

# LazyBuffers and received_size live in _lazy (re-exported here for the framer's users).

_HEAD = struct.Struct(">II")
_SMALL = 64 * 1024


class SendStalled(TimeoutError):
    """The peer took none of a frame for the allowed time; the stream is cut mid-frame."""


class _NoFrame(Exception):
    """The wait timed out before any byte of a frame came (the stream is intact)."""


class BlockingFramer:
    """Send and receive whole frames on a blocking socket."""

    def __init__(self, sock: socket.socket, max_frame: int, max_buffers: int,
                 account: Account | None = None, budget_wait: float = 30.0,
                 shm: ShmPeer | None = None) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.shm = None if shm is None else ShmLink(shm, account)
        """Large buffers go through shared memory, if the handshake agreed (``_shm``)."""
        self.max_frame = max_frame
        self.max_buffers = max_buffers
        self.account = account
        self.budget_wait = budget_wait
        self._held: list[GrowingBuffer | _KeptBytes | _Charged] = []
        self._whole: set[int] = set()  # ids of held buffers whose frame came whole
        # Small frames are read whole, usually with a single recv, into a reused buffer.
        self._buf = bytearray(64 * 1024)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._timeout: float | None = None
        self._send_timeout: float | None = None
        self._pending: LazyBuffers | None = None

    def send(self, body: Buffer, buffers: Sequence[Buffer] = (), stall: float | None = None,
             clock: Clock = REAL_CLOCK) -> float:
        """Send one frame. With ``stall``, raise ``SendStalled`` once the peer took none
        of it for ``stall`` s of ``clock`` (a frozen peer, its buffers full): a slow
        link that keeps taking bytes is waited on. The frame is then cut short.

        Returns ``clock``'s time just before the write that finished the frame: the
        peer may have answered, and time moved, before this returns (a reply deadline
        counts from it)."""
        if not buffers and len(body) < 16384 and (stall is None or
                                                  clock.io_slice(stall) == stall):
            if stall != self._send_timeout:  # a real-time stall: the kernel's timeout is it
                self._set_send_timeout(stall)
            before = clock.monotonic()
            try:
                self.sock.sendall(_HEAD.pack(len(body), 0) + body)
            except (BlockingIOError, TimeoutError):
                raise SendStalled(f"the peer took none of the frame for {stall} s") from None
            except OSError as e:
                raise ConnectionLost(f"send failed: {e}") from None
            return before
        parts = [memoryview(p).cast("B") for p in frame_parts(body, buffers, self.shm)]
        moved = before = clock.monotonic()
        if stall is None and self._send_timeout is not None:
            self._set_send_timeout(None)
        try:
            while parts:
                if stall is not None:
                    self._set_send_timeout(clock.io_slice(max(moved + stall - clock.monotonic(),
                                                              0.0)))
                before = moved
                try:
                    sent = self.sock.sendmsg(parts)
                except (BlockingIOError, TimeoutError):  # SO_SNDTIMEO: nothing taken
                    if stall is None:
                        raise
                    if clock.monotonic() - moved >= stall:
                        raise SendStalled(f"the peer took none of the frame for {stall} s"
                                          ) from None
                    continue
                moved = clock.monotonic()
                while sent:
                    if sent >= parts[0].nbytes:
                        sent -= parts[0].nbytes
                        parts.pop(0)
                    else:
                        parts[0] = parts[0][sent:]
                        sent = 0
        except SendStalled:
            raise
        except OSError as e:
            raise ConnectionLost(f"send failed: {e}") from None
        return before

    def _fill(self, need: int) -> None:
        """Make at least ``need`` bytes available from ``_start`` in the buffer."""
        if self._start + need > len(self._buf):
            n = self._end - self._start
            self._buf[:n] = self._buf[self._start : self._end]
            self._start, self._end = 0, n
        while self._end - self._start < need:
            got = self.sock.recv_into(self._view[self._end :])
            if got == 0:
                raise ConnectionLost("the peer closed the connection")
            self._end += got

    def _read_exact(self, view: memoryview) -> None:
        sock = self.sock
        while view.nbytes:
            n = sock.recv_into(view)
            if n == 0:
                raise ConnectionLost("the peer closed the connection")
            view = view[n:]

    def _read_body(self, head: int, body_len: int) -> memoryview:
        """The body of a frame whose buffers are read separately."""
        if head + body_len <= len(self._buf):
            self._fill(head + body_len)
            p0 = self._start + head
            self._start += head + body_len
            return self._view[p0 : p0 + body_len]
        self._start += head
        return self.read_growing(body_len)

    def read_growing(self, n: int) -> memoryview:
        """The next ``n`` bytes of the stream in memory that grows as they arrive."""
        if n < _SMALL:
            small = bytearray(n)
            self.read_into(memoryview(small))
            return memoryview(small)
        account = self.account
        g = None
        if account is not None:
            g = GrowingBuffer.take(n, account)  # counted already: no admission
            if g is None:
                self._admit(account, n)
                g = GrowingBuffer(n, account, n)
            self._held.append(g)
        else:
            g = GrowingBuffer(n)
        pos = min(self._end - self._start, n)
        if pos:
            g.window(0)[:pos] = self._view[self._start : self._start + pos]
            self._start += pos
            if self._start == self._end:
                self._start = self._end = 0
        sock = self.sock
        while pos < n:
            got = sock.recv_into(g.window(pos))
            if got == 0:
                raise ConnectionLost("the peer closed the connection")
            pos += got
        self._whole.add(id(g))
        return memoryview(g.map)[:n]

    def read_bytes(self, n: int) -> bytes:
        """The next ``n`` bytes of the stream as a ``bytes`` object, received straight
        into it: one the budget kept from an earlier frame if nothing uses it, else a
        new one (admitted and charged like ``read_growing``)."""
        account = self.account
        new_bytes = bytes_api()
        if account is None or n < MIN_CACHED or new_bytes is None:
            fresh = fresh_bytes(n)
            if fresh is None:
                buf = bytearray(n)
                self.read_into(memoryview(buf))
                return bytes(buf)
            self.read_into(fresh[1])
            return fresh[0]
        obj: bytes | None = account.budget.take(bytes, n, account)
        if obj is not None:
            reset_bytes_hash(obj)
        else:
            self._admit(account, n)
            obj = new_bytes(None, n)
            account.charge(n)
            account.budget.withdraw(n)
        kept = _KeptBytes(obj, account)
        self._held.append(kept)
        self.read_into(bytes_window(obj))
        self._whole.add(id(kept))
        return obj

    def _admit(self, account: Account, n: int) -> None:
        """Wait (not reading: TCP slows the peer) until the budget sets ``n`` bytes aside."""
        room = threading.Event()
        budget = account.budget
        if budget.admit(n, room.set):
            return
        if room.wait(self.budget_wait):
            return
        if not budget.cancel(room.set):
            budget.withdraw(n)  # admitted just now, too late
        raise ConnectionLost(f"no room in the node's memory budget for a frame of {n} bytes "
                             f"within {self.budget_wait:.0f} s; the frame was not read")

    def release(self) -> None:
        """Give back the memory of the frames read so far (their call finished)."""
        held, self._held = self._held, []
        whole, self._whole = self._whole, set()
        for g in held:
            g.give_back(keep=id(g) in whole)

    def read_into(self, target: memoryview) -> None:
        """Fill ``target`` with the next bytes of the stream (buffered ones first)."""
        k = min(self._end - self._start, target.nbytes)
        if k:
            target[:k] = self._view[self._start : self._start + k]
            self._start += k
            if self._start == self._end:
                self._start = self._end = 0
        if k < target.nbytes:
            self._read_exact(target[k:])

    def has_partial(self) -> bool:
        """Bytes of an unfinished frame are buffered (the peer stopped mid-frame)."""
        return self._end > self._start

    def _set_send_timeout(self, timeout: float | None) -> None:
        if timeout != self._send_timeout:
            t = 0.0 if timeout is None else max(timeout, 1e-3)
            sec = int(t)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                 struct.pack("ll", sec, int((t - sec) * 1e6)))
            self._send_timeout = timeout

    def _set_timeout(self, timeout: float | None) -> None:
        # The kernel's receive timeout: a socket timeout in Python would add a poll()
        # before every recv.
        if timeout != self._timeout:
            t = 0.0 if timeout is None else max(timeout, 1e-3)
            sec = int(t)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 struct.pack("ll", sec, int((t - sec) * 1e6)))
            self._timeout = timeout

    def recv(self, timeout: float | None = None) -> tuple[memoryview, Sequence[Buffer]]:
        """One frame; the body is valid until the next ``recv``. Raises TimeoutError.

        Large out-of-band buffers come as a ``LazyBuffers``: read from the socket
        when the decoder asks for them (the rest are read by the next ``recv``).
        """
        while True:
            frame = self._recv(timeout)
            if frame is not None:
                return frame

    def drained(self, lazy: LazyBuffers) -> None:
        """``lazy``, a frame's buffers read on demand, was read to its end: the next
        frame may start (nothing is left to drain first)."""
        if self._pending is lazy:
            self._pending = None

    def _recv(self, timeout: float | None) -> tuple[memoryview, Sequence[Buffer]] | None:
        """One frame, or None for an ack frame (taken care of)."""
        if self._pending is not None:
            self._pending.drain()
        try:
            if self._end - self._start < 8:
                self._set_timeout(timeout)
                try:
                    self._fill(8)
                except (TimeoutError, BlockingIOError):
                    if self._end == self._start:  # nothing of a frame yet: safe to wait on
                        raise _NoFrame from None
                    raise
            body_len, nbufs = _HEAD.unpack_from(self._buf, self._start)
            if not nbufs and body_len <= self.max_frame:
                # Most frames: a body alone. Is it all here already (one read brought it)?
                p0 = self._start + 8
                end = p0 + body_len
                if end <= self._end:
                    if end == self._end:
                        self._start = self._end = 0
                    else:
                        self._start = end
                    return self._view[p0:end], ()
            if nbufs > self.max_buffers:
                if nbufs == ACK and self.shm is not None:
                    self._take_ack(body_len)
                    return None
                raise ProtocolError(f"frame announces {nbufs} buffers")
            head = 8 + 4 * nbufs
            self._fill(head)
            lens: tuple[int, ...] = (
                struct.unpack_from(f">{nbufs}I", self._buf, self._start + 8) if nbufs else ())
            shm_lens: tuple[int, ...] = ()
            if nbufs:  # most frames carry no buffer: no call for them
                lens, shm_lens = split_lens(lens, body_len, self.shm is not None,
                                            self.max_frame)
            payload = body_len + sum(lens)
            if payload > self.max_frame:
                raise FrameTooLarge(f"frame of {payload} bytes (limit {self.max_frame})")
            if shm_lens:
                return self._recv_shm(head, body_len, lens, shm_lens)
            if nbufs and payload > len(self._buf):
                # Large buffers are read when the decoder asks, into what it will keep.
                body = self._read_body(head, body_len)
                self._pending = LazyBuffers(self, lens[:])
                return body, self._pending
            return self._read_frame(head, body_len, lens)
        except _NoFrame:
            raise TimeoutError("no frame within the timeout") from None
        except (TimeoutError, BlockingIOError):  # SO_RCVTIMEO expired in mid-frame
            raise ConnectionLost("the peer stalled in the middle of a frame") from None
        except OSError as e:
            raise ConnectionLost(f"receive failed: {e}") from None

    def _take_ack(self, body_len: int) -> None:
        """An ack frame: close the memfds the peer opened."""
        assert self.shm is not None
        if body_len > 4 * max(self.max_buffers, 1):
            raise ProtocolError(f"shared-memory ack of {body_len} bytes")
        self._fill(8 + body_len)
        p0 = self._start + 8
        self._start = p0 + body_len
        if self._start == self._end:
            self._start = self._end = 0
        self.shm.acked(self._view[p0 : p0 + body_len])

    def _read_frame(self, head: int, body_len: int,
                    lens: tuple[int, ...]) -> tuple[memoryview, list[Buffer]]:
        """The rest of a frame whose head is buffered: its body and buffers, read whole."""
        payload = body_len + sum(lens)
        if head + payload <= len(self._buf):
            self._fill(head + payload)
            p0 = self._start + head
            self._start += head + payload
            if self._start == self._end:
                self._start = self._end = 0
            view = self._view[p0 : p0 + payload]
            return view[:body_len], _split(view, body_len, lens, copy=True)
        # A large frame: a buffer of its own that grows as the bytes come.
        self._start += head
        view = self.read_growing(payload)
        return view[:body_len], _split(view, body_len, lens, copy=False)

    def _recv_shm(self, head: int, body_len: int, lens: tuple[int, ...],
                  shm_lens: tuple[int, ...]) -> tuple[memoryview, Sequence[Buffer]]:
        """A frame with memfds: the body and descriptors, then the peer's maps; charged
        (admitted first) like a frame read from the stream, and acked."""
        assert self.shm is not None
        body, bufs = self._read_frame(head, body_len, lens)
        size = sum(n & MAX_SIZE for n in shm_lens if n & SHM_FLAG)
        account = self.account
        if account is not None:
            self._admit(account, size)
            account.charge(size)
            account.budget.withdraw(size)
            self._held.append(_Charged(size, account))
        opened = self.shm.open_all(bufs, shm_lens)
        self.sock.sendmsg(ack_frame(opened))
        return body, bufs

    def shutdown_read(self) -> None:
        """End the reading side: a blocked ``recv`` returns EOF, replies can still go out."""
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.shm is not None:
            self.shm.close()


def _split(view: memoryview, body_len: int, lens: tuple[int, ...], copy: bool) -> list[Buffer]:
    bufs: list[Buffer] = []
    pos = body_len
    for n in lens:
        bufs.append(bytes(view[pos : pos + n]) if copy else view[pos : pos + n])
        pos += n
    return bufs


class _Charged:
    """Memory a frame's memfds hold, charged until its call ends."""

    __slots__ = ("account", "size")

    def __init__(self, size: int, account: Account) -> None:
        self.size = size
        self.account: Account | None = account

    def give_back(self, keep: bool = False) -> None:
        acct, self.account = self.account, None
        if acct is not None:
            acct.release(self.size)


class _KeptBytes:
    """A ``bytes`` object a frame was received into, charged until its call ends."""

    __slots__ = ("account", "obj")

    def __init__(self, obj: bytes, account: Account) -> None:
        self.obj: bytes | None = obj
        self.account: Account | None = account

    def give_back(self, keep: bool = False) -> None:
        acct, obj = self.account, self.obj
        self.account = self.obj = None
        if acct is not None and obj is not None:
            if keep:
                acct.budget.keep(obj, len(obj), acct)
            else:
                acct.release(len(obj))
