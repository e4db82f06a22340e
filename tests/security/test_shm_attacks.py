"""A keyed peer that abuses shared memory (PROTOCOL.md 4.4) gets a clear error and changes
nothing: a memfd it could still write to, a size it lied about, a descriptor that is not
a memfd made for this connection, an ack for nothing, shared memory it never agreed to.
A peer that never acks is counted like one that never reads.

The attacker speaks the wire by hand (``RawClient``) against a real node over TCP; its
memfds live in this process, which the node opens through /proc like any other peer's.
About 3 s in all.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import pytest

import netlet
from netlet.transport import _shm
from netlet.transport._handshake import transcript_token
from tests._support import wait_until
from tests.conftest import RawClient, hmac_proof
from tests.security._spawn import as_nobody, nobody_available

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(_shm.local_identity() is None,
                                 reason="needs Linux with memfd_create and /proc")]

_WHY_NOT = nobody_available()
needs_nobody = pytest.mark.skipif(_WHY_NOT is not None and os.environ.get("CI") != "true",
                                  reason=_WHY_NOT or "")

MiB = 1024 * 1024
KEY = os.urandom(32)
SEALED = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
F_SEAL_FUTURE_WRITE = 0x0010  # Linux 5.1: no new writes, but writable maps stay writable
DATA = bytes(range(256)) * 8192  # 2 MiB


@netlet.expose
class Store:
    def digest(self, value: bytes) -> int:
        return len(value)

    def make(self, n: int) -> bytes:
        return b"x" * n


def memfd_fds() -> int:
    n = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            n += os.readlink(fd).startswith("/memfd:netlet-")
        except OSError:
            pass
    return n


class Attacker:
    """A keyed client that offered shared memory, speaking frames by hand."""

    def __init__(self, address: str, offer: bool = True, role: str = "link") -> None:
        self.raw = RawClient.connect(address)
        extra = {"shm": _shm.local_identity()} if offer else {}
        self.raw.hello(key=KEY, role=role, **extra)
        reply_body, _ = self.raw.recv_frame()
        self.reply = msgpack.unpackb(reply_body, raw=False)
        assert self.raw.recv_msg()["proof"] == hmac_proof(KEY, b"server", self.raw.hello_body,
                                                          reply_body)
        self.raw.send_msg({"proof": hmac_proof(KEY, b"client", self.raw.hello_body,
                                               reply_body)})
        assert self.raw.recv_msg() == {"ok": True}
        token = transcript_token(self.raw.hello_body, reply_body)
        self.name = _shm._name(token, b"client")  # what the node expects our memfds named
        self.fds: list[int] = []
        self.writer: mmap.mmap | None = None

    def memfd(self, data: bytes, seals: int = SEALED, name: str | None = None) -> int:
        fd = os.memfd_create(name or self.name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.write(fd, data)
        if seals:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        self.fds.append(fd)
        return fd

    def call_with(self, fd: int, size: int, cid: int = 1) -> None:
        """``store.digest(<buffer 0>)`` with buffer 0 the memfd ``fd`` of ``size`` bytes."""
        body = msgpack.packb([1, cid, "store", "digest",
                              [msgpack.ExtType(13, msgpack.packb(0))], None])
        head = struct.pack(">III", len(body), 1, _shm.SHM_FLAG | size)
        self.raw.send_raw(head + body + struct.pack(">I", fd))

    def recv(self) -> tuple[str, Any]:
        """("ack", descriptors) or ("msg", message, descriptors of its memfds)."""
        body_len, nbufs = struct.unpack(">II", self.raw._recv_exact(8))
        if nbufs == _shm.ACK:
            return "ack", list(struct.unpack(f">{body_len // 4}I",
                                             self.raw._recv_exact(body_len)))
        lens = struct.unpack(f">{nbufs}I", self.raw._recv_exact(4 * nbufs)) if nbufs else ()
        body = msgpack.unpackb(self.raw._recv_exact(body_len), raw=False,
                               strict_map_key=False)
        bufs = [self.raw._recv_exact(4 if n & _shm.SHM_FLAG else n) for n in lens]
        return "msg", (body, bufs)

    def close(self) -> None:
        self.raw.close()
        if self.writer is not None:
            self.writer.close()
        for fd in self.fds:
            os.close(fd)
        self.fds = []


@pytest.fixture
def server(node_factory: Any) -> Any:
    node = node_factory("tcp://127.0.0.1:0", key=KEY, shared_memory=MiB)
    node.serve(Store(), "store")
    return node


@pytest.mark.parametrize("role", ["link", "direct"])
def test_a_well_formed_memfd_is_taken(server: Any, role: str) -> None:
    """The attacks below differ from this only in what they break."""
    a = Attacker(str(server.address), role=role)
    try:
        assert "shm" in a.reply
        fd = a.memfd(DATA)
        a.call_with(fd, len(DATA))
        assert a.recv() == ("ack", [fd])
        assert a.recv() == ("msg", ([2, 1, len(DATA)], []))
        # (what stays is the connection's ring buffer, a few KiB)
        wait_until(lambda: server.budget.used < 64 * 1024, what="the call's memory given back")
    finally:
        a.close()


def _future_write(a: Attacker) -> int:
    fd = a.memfd(DATA, seals=0)
    writer = mmap.mmap(fd, len(DATA))  # kept: it could write on after sending
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, F_SEAL_FUTURE_WRITE | fcntl.F_SEAL_GROW
                | fcntl.F_SEAL_SHRINK)
    a.writer = writer
    return fd


ATTACKS = {
    "unsealed": (lambda a: (a.memfd(DATA, seals=0), len(DATA)), "not sealed"),
    "still writable through a map": (lambda a: (_future_write(a), len(DATA)), "not sealed"),
    "size lie": (lambda a: (a.memfd(DATA), len(DATA) + 4096),
                 f"holds {len(DATA)} bytes, announced {len(DATA) + 4096}"),
    "no such descriptor": (lambda a: (99999, len(DATA)), "cannot open"),
    "a file, not a memfd": (lambda a: (_file(a), len(DATA)), "not a memfd"),
    "another connection's memfd": (
        lambda a: (a.memfd(DATA, name="netlet-" + "0" * 24), len(DATA)),
        "not a shared-memory buffer made for this connection"),
}


def _file(a: Attacker) -> int:
    fd = os.open(__file__, os.O_RDONLY | os.O_CLOEXEC)  # a file of ours the node could read
    a.fds.append(fd)
    return fd


@pytest.mark.parametrize("role", ["link", "direct"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_bad_memfd_is_refused_and_changes_nothing(server: Any, node_factory: Any,
                                                    caplog: pytest.LogCaptureFixture,
                                                    attack: str, role: str) -> None:
    """On the main link (read by the loop) and on a direct connection (by a thread)."""
    make, words = ATTACKS[attack]
    caplog.set_level(logging.WARNING)
    a = Attacker(str(server.address), role=role)
    try:
        fd, size = make(a)
        a.call_with(fd, size)
        assert a.raw.closed_by_peer(), "the node kept talking to the attacker"
        wait_until(lambda: words in caplog.text, what=f"a warning saying {words!r}")
    finally:
        a.close()
    assert memfd_fds() == 0
    wait_until(lambda: server.budget.used == 0, what="the budget given back")
    proxy = node_factory(key=KEY, shared_memory=MiB).proxy(server.address, "store")
    assert proxy.digest(DATA) == len(DATA)  # the node serves others as before


@pytest.mark.parametrize("role", ["link", "direct"])
@pytest.mark.parametrize("attack", ["ack for nothing", "memfd not agreed"])
def test_shared_memory_frames_out_of_turn_are_refused(server: Any,
                                                      caplog: pytest.LogCaptureFixture,
                                                      attack: str, role: str) -> None:
    caplog.set_level(logging.WARNING)
    a = Attacker(str(server.address), offer=attack == "ack for nothing", role=role)
    try:
        if attack == "ack for nothing":
            a.raw.send_raw(struct.pack(">IIi", 4, _shm.ACK, 5))
            words = "descriptor 5, never sent"
        else:
            a.call_with(a.memfd(DATA), len(DATA))
            words = "did not agree to shared memory"
        assert a.raw.closed_by_peer()
        wait_until(lambda: words in caplog.text, what=f"a warning saying {words!r}")
    finally:
        a.close()


@pytest.mark.parametrize("role", ["link", "direct"])
def test_a_peer_that_never_acks_is_a_peer_that_never_reads(server: Any, role: str) -> None:
    """Replies sent as memfds count in the node's budget until acked, as bytes queued for
    a peer that does not read would; when the peer goes, they are closed."""
    a = Attacker(str(server.address), role=role)
    try:
        for cid in range(1, 4):
            body = msgpack.packb([1, cid, "store", "make", [2 * MiB], None])
            a.raw.send_frame(body)
            kind, (msg, bufs) = a.recv()
            assert kind == "msg"
            assert msg[:2] == [2, cid]
            assert len(bufs) == 1  # a descriptor, never acked
        assert memfd_fds() == 3
        assert server.budget.used >= 3 * 2 * MiB
    finally:
        a.close()
    wait_until(lambda: memfd_fds() == 0, what="the node closes the unacked memfds")
    wait_until(lambda: server.budget.used == 0, what="the budget given back")


NOBODY = r"""
import sys
from netlet.transport import _handshake, _shm

if sys.argv[2] == "force":  # claim the server's uid, and agree whatever the socket says
    ident = _shm.local_identity()
    _handshake.local_identity = lambda: [*ident[:2], 0, ident[3]]

    def forced(ours, theirs, threshold, token, client, authenticated, sock):
        return _shm.ShmPeer(int(theirs[3]), 1 << 20, _shm._name(token, b"client"),
                            _shm._name(token, b"server"))
    _handshake.agree = forced
import netlet
with netlet.Node(shared_memory=1 << 20, call_timeout=10) as n:
    p = n.proxy(sys.argv[1], "store")
    try:
        print("GOT", p.digest(b"x" * (2 << 20)), _shm.TOTALS.sent)
    except Exception as e:
        print("REFUSED", type(e).__name__, e)
"""


@needs_nobody
@pytest.mark.parametrize("how", ["honest", "force"])
def test_another_user_on_a_unix_socket_gets_no_shared_memory(
        node_factory: Any, caplog: pytest.LogCaptureFixture, how: str) -> None:
    """A keyless unix socket another user may reach: ``SO_PEERCRED`` says it is not us,
    so no memfd goes either way; one it sends anyway closes its connection."""
    caplog.set_level(logging.WARNING, "netlet.transport")
    where = tempfile.mkdtemp(prefix="netlet-shm-")
    try:
        os.chmod(where, 0o755)
        node = node_factory(f"unix://{where}/s", shared_memory=MiB)
        node.serve(Store(), "store")
        os.chmod(f"{where}/s", 0o777)
        received = _shm.TOTALS.received
        out = as_nobody(NOBODY, str(node.address), how, timeout=60).stdout
        if how == "honest":
            assert out.split() == ["GOT", str(2 * MiB), "0"]
        else:
            assert out.startswith("REFUSED"), out
            wait_until(lambda: "did not agree to shared memory" in caplog.text,
                       what="the node's warning")
        assert _shm.TOTALS.received == received
    finally:
        shutil.rmtree(where, ignore_errors=True)
