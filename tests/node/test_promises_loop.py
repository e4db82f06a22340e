"""README: "``async def`` methods run on the node's event loop; plain methods never block it."

A peer makes every plain method it can reach block: more blocked calls than
the node has pool threads, on a concurrent object, on a serial one and on a
serial object that also has ``async`` methods (its plain methods go to the
pool). While they all hang, an ``async`` method of another object still
answers, and so does a PING: the loop was never blocked. Ordering, not time,
is asserted: the answers come while the blocked calls are provably still
running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import netlet
from tests.conftest import STEP, RawClient

NodeFactory = Callable[..., netlet.Node]

pytestmark = pytest.mark.timeout(60)

RELEASE = threading.Event()
STARTED = threading.Semaphore(0)


def _block() -> str:
    STARTED.release()
    RELEASE.wait(STEP * 3)
    return "released"


@netlet.expose(concurrent=True)
class Concurrent:
    def block(self) -> str:
        return _block()


@netlet.expose
class Serial:
    def block(self) -> str:
        return _block()


@netlet.expose
class SerialMixed:
    def block(self) -> str:
        return _block()

    async def ping(self) -> str:
        return "pong"


@netlet.expose
class Fast:
    async def now(self) -> str:
        return "now"


def test_blocked_plain_methods_leave_the_loop_free(node_factory: NodeFactory) -> None:
    RELEASE.clear()
    server = node_factory("tcp://127.0.0.1:0", max_threads=4)
    for name, obj in (("concurrent", Concurrent()), ("serial", Serial()),
                      ("mixed", SerialMixed()), ("fast", Fast())):
        server.serve(obj, name)
    assert server.address is not None
    client = node_factory(call_timeout=STEP * 3)
    blocked = [client.proxy(server.address, "concurrent").block.future() for _ in range(8)]
    blocked += [client.proxy(server.address, name).block.future()
                for name in ("serial", "mixed")]
    try:
        for _ in range(4):  # the pool (max_threads=4) is full of blocked calls
            assert STARTED.acquire(timeout=STEP)
        fast = node_factory(call_timeout=STEP).proxy(server.address, "fast")
        assert fast.now() == "now"
        assert fast.now.future().result(STEP) == "now"
        with RawClient.connect(server.address) as raw:
            raw.handshake()
            raw.send_msg([5, b"tok"])  # PING
            assert raw.recv_msg() == [6, b"tok"]
        assert not any(f.done() for f in blocked)  # all of them still hang
    finally:
        RELEASE.set()
    assert [f.result(STEP * 2) for f in blocked] == ["released"] * len(blocked)
