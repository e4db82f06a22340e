"""Same-host shared memory (``transport/_shm.py``, PROTOCOL.md 4.4): large buffers go
through sealed memfds between same-user peers on one host, only when both agreed,
and nothing is left behind when a process is killed. Peers are real processes.

About 20 s in all (two processes per test, most under a second each).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import netlet
from netlet.transport import _shm
from tests._support import STEP, Proc, wait_until

np = pytest.importorskip("numpy")
pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(_shm.local_identity() is None,
                                 reason="needs Linux with memfd_create and /proc")]

MiB = 1024 * 1024
SHM = 1 * MiB

PEER = r"""
import hashlib, os, sys
import numpy as np
import netlet
from netlet.transport import _shm

@netlet.expose
class Store:
    def __init__(self):
        self.kept = []

    def keep(self, value):
        self.kept.append(value)
        return hashlib.sha256(memoryview(value).cast("B")).hexdigest()

    def digest(self, value):
        return hashlib.sha256(memoryview(value).cast("B")).hexdigest()

    def drop(self):
        self.kept.clear()

    def make(self, n, seed):
        return np.full(n // 8, seed, dtype=np.float64)

    def echo(self, value):
        return value

    def totals(self):
        t = _shm.TOTALS
        return [t.sent, t.received]

listen, key, shm = sys.argv[1], sys.argv[2], int(sys.argv[3])
node = netlet.Node(listen=listen, key=bytes.fromhex(key) if key else None,
                   shared_memory=shm)
node.serve(Store(), "store")
print(node.address, flush=True)
node.wait()
"""


def memfds(pid: int) -> tuple[int, int]:
    """(descriptors, mappings) of process ``pid`` that are netlet memfds."""
    fds = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("/memfd:netlet-"):
                fds += 1
        except OSError:
            pass  # closed meanwhile
    maps = Path(f"/proc/{pid}/maps").read_text().count("/memfd:netlet-")
    return fds, maps


def dev_shm() -> set[str]:
    """What netlet might have named in /dev/shm (its memfds are "netlet-..."); other
    processes of the machine (a test running beside this one, a multiprocessing
    semaphore) come and go there and are none of our business."""
    try:
        return {n for n in os.listdir("/dev/shm") if "netlet" in n and "netlet-sim" not in n}
    except OSError:
        return set()


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Any]:
    started: list[Proc] = []

    def start(listen: str, key: bytes | None, shm: int = SHM) -> Proc:
        p = Proc.spawn([sys.executable, "-c", PEER, listen, key.hex() if key else "",
                        str(shm)], name="shm-peer")
        started.append(p.wait_address(timeout=STEP * 2))
        return p

    start.tmp = tmp_path  # type: ignore[attr-defined]
    yield start
    for p in started:
        p.kill()


def payload(kind: str, seed: int, n: int = 2 * MiB) -> Any:
    arr = np.random.default_rng(seed).random(n // 8)
    return arr if kind == "numpy" else arr.tobytes()


def sha(value: Any) -> str:
    return hashlib.sha256(memoryview(value).cast("B")).hexdigest()


def _call(proxy: Any, path: str, method: str, *args: Any) -> Any:
    m = getattr(proxy, method)
    return m(*args) if path == "direct" else m.future(*args).result(30)


@pytest.mark.parametrize("how", ["tcp+key", "unix"])
@pytest.mark.parametrize("path", ["direct", "link"])
def test_large_values_go_through_shared_memory(peers: Any, node_factory: Any, how: str,
                                               path: str) -> None:
    """Both ways, bytes and arrays arrive whole; the peer maps the arrays it keeps, and
    once it drops them no memfd is left in either process."""
    key = os.urandom(32) if how == "tcp+key" else None
    listen = "tcp://127.0.0.1:0" if key else f"unix://{peers.tmp}/s"
    peer = peers(listen, key)
    client = node_factory(key=key, shared_memory=SHM)
    proxy = client.proxy(peer.address, "store")
    sent0, got0 = _shm.TOTALS.sent, _shm.TOTALS.received
    values = [payload("numpy", 1), payload("bytes", 2), payload("numpy", 3)]
    for v in values:
        assert _call(proxy, path, "keep", v) == sha(v)
    assert _shm.TOTALS.sent - sent0 == 3
    assert memfds(peer.pid)[1] == 2  # the two arrays it keeps view the maps: no copy
    back = _call(proxy, path, "make", 4 * MiB, 7.0)
    assert back.flags.writeable  # a copy-on-write map: writing never reaches the memfd
    assert (back == 7.0).all()
    back[0] = 1.0
    assert _shm.TOTALS.received - got0 == 1
    wait_until(lambda: memfds(os.getpid()) == (0, 1), what="only our map of the reply is left")
    del back
    _call(proxy, path, "drop")
    wait_until(lambda: memfds(peer.pid) == (0, 0), what="the peer holds no memfd")
    assert memfds(os.getpid()) == (0, 0)


@pytest.mark.parametrize("case", ["no key over tcp", "peer has it off", "we have it off",
                                  "below the threshold"])
def test_otherwise_the_socket_carries_them(peers: Any, node_factory: Any, case: str) -> None:
    key = None if case == "no key over tcp" else os.urandom(32)
    peer = peers("tcp://127.0.0.1:0", key, 0 if case == "peer has it off" else SHM)
    ours = {"we have it off": 0, "below the threshold": 8 * MiB}.get(case, SHM)
    proxy = node_factory(key=key, shared_memory=ours).proxy(peer.address, "store")
    before = proxy.totals()
    sent0 = _shm.TOTALS.sent
    for kind in ("numpy", "bytes"):
        v = payload(kind, 5)
        assert proxy.keep(v) == sha(v)
        assert proxy.keep.future(v).result(30) == sha(v)
    got0 = _shm.TOTALS.received
    assert (proxy.make(2 * MiB, 3.0) == 3.0).all()
    assert _shm.TOTALS.sent == sent0
    if case == "below the threshold":  # each side's own threshold decides what it sends
        assert proxy.totals() == [before[0] + 1, before[1]]
        assert _shm.TOTALS.received == got0 + 1
    else:
        assert proxy.totals() == before
    assert memfds(peer.pid) == (0, 0)


def test_sigkill_leaves_nothing(peers: Any, node_factory: Any) -> None:
    """A peer killed while it holds our arrays, or while we hold its: nothing stays in
    /dev/shm, no descriptor stays open, and what we hold is still whole."""
    shm_before = dev_shm()
    key = os.urandom(32)
    peer = peers("tcp://127.0.0.1:0", key)
    client = node_factory(key=key, shared_memory=SHM)
    proxy = client.proxy(peer.address, "store")
    for seed in range(3):
        proxy.keep(payload("numpy", seed))
        proxy.keep.oneway(payload("numpy", seed + 10))
    ours = proxy.make(8 * MiB, 9.0)
    wait_until(lambda: memfds(peer.pid)[1] == 6, what="the peer maps all six arrays")
    peer.proc.send_signal(signal.SIGKILL)
    peer.proc.wait(STEP)
    assert (ours == 9.0).all()  # the kernel keeps the memfd while we map it
    assert memfds(os.getpid()) == (0, 1)
    del ours
    assert memfds(os.getpid()) == (0, 0)
    assert dev_shm() == shm_before


def test_sigkill_of_the_sender_mid_stream_leaves_nothing(peers: Any, node_factory: Any) -> None:
    """The peer streams arrays to us (oneway) and is killed mid-stream: once we drop what
    we received, no memfd is left anywhere, and nothing was named in /dev/shm."""
    shm_before = dev_shm()
    key = os.urandom(32)
    received: list[Any] = []

    @netlet.expose
    class Sink:
        def put(self, value: Any) -> None:
            received.append(value)

    server = node_factory("tcp://127.0.0.1:0", key=key, shared_memory=SHM)
    server.serve(Sink(), "sink")
    script = (
        "import sys, numpy as np, netlet\n"
        "with netlet.Node(key=bytes.fromhex(sys.argv[2]), shared_memory=1 << 20) as n:\n"
        "    p = n.proxy(sys.argv[1], 'sink')\n"
        "    a = np.ones(1 << 18)\n"
        "    print('tcp://sending', flush=True)\n"
        "    while True:\n"
        "        p.put.oneway(a)\n")
    sender = Proc.spawn([sys.executable, "-c", script, str(server.address), key.hex()],
                        name="shm-sender")
    try:
        sender.stdout.wait_for("sending", STEP * 2)
        wait_until(lambda: len(received) >= 20, what="arrays arriving")
    finally:
        sender.kill()
    wait_until(lambda: memfds(os.getpid())[0] == 0, what="no memfd descriptor left open")
    assert all((a == 1.0).all() for a in received)
    received.clear()
    wait_until(lambda: memfds(os.getpid()) == (0, 0), what="no memfd mapped")
    assert dev_shm() == shm_before


def test_agreement_needs_the_same_host_user_and_proof() -> None:
    """``agree``'s rules, one broken at a time (the hellos as they came, in-process)."""
    import socket

    ours = _shm.local_identity()
    assert ours is not None
    boot, ns, uid, _ = ours
    token = os.urandom(32)

    def agree(theirs: Any, *, authenticated: bool = True, threshold: int = SHM,
              sock: socket.socket | None = None) -> Any:
        return _shm.agree(ours, theirs, threshold, token, True, authenticated, sock)

    other = os.getppid()  # a process of ours that exists
    peer = agree([boot, ns, uid, other])
    assert peer is not None
    assert peer.pid == other
    assert peer.send_name != peer.recv_name
    assert agree([boot, ns, uid, 2**22 + 1]) is None  # no such process: /proc has no fds
    assert agree([boot[::-1], ns, uid, other]) is None  # another host (or boot)
    assert agree([boot, ns + 1, uid, other]) is None  # another pid namespace
    assert agree([boot, ns, uid + 1, other]) is None  # another user, by its word
    assert agree([boot, ns, uid, other], threshold=0) is None  # we have it off
    assert agree(None) is None  # the peer did not offer
    assert agree([boot, ns, str(uid), other]) is None  # malformed
    assert agree([boot, ns, uid, other], authenticated=False) is None  # no key, no socket
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert agree([boot, ns, uid, other], authenticated=False, sock=a) is not None
    t = socket.socket()
    with t:
        assert agree([boot, ns, uid, other], authenticated=False, sock=t) is None  # tcp


def test_a_buffer_that_cannot_go_as_a_memfd_goes_inline() -> None:
    """No memfd to be had (here: the connection closed meanwhile; out of descriptors or
    memory alike): the frame carries the bytes, as without shared memory."""
    import struct

    from netlet.transport._framing import frame_parts

    ours = _shm.local_identity()
    assert ours is not None
    peer = _shm.agree(ours, ours, SHM, os.urandom(32), True, True, None)
    assert peer is not None
    link = _shm.ShmLink(peer)
    data = b"y" * (2 * MiB)
    head, _, desc = frame_parts(b"x", [data], link)
    assert struct.unpack(">I", bytes(head)[8:12])[0] == _shm.SHM_FLAG | len(data)
    assert len(desc) == 4
    assert link.outstanding == 1
    link.close()  # closes the memfd not acked
    assert link.outstanding == 0
    head, _, inline = frame_parts(b"x", [data], link)
    assert struct.unpack(">I", bytes(head)[8:12])[0] == len(data)
    assert inline is data
