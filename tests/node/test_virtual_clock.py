"""Node timers on a virtual clock: keepalive and call deadlines, exactly at their boundaries.

Each test runs real nodes over real sockets, with the client's clock a
``netlet.testing.VirtualClock``: nothing times out until the test moves the
clock, and then it does at once, so a boundary is checked both ways (just
before: alive; just after: dead) without waiting for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import netlet
from netlet.node import DEFAULT_TIMEOUT
from netlet.testing import VirtualClock
from netlet.transport import Connection, FaultyConnection
from tests._support import wait_until

NodeFactory = Callable[..., netlet.Node]

SWEEP = 0.0625  # a step longer than the node's 50 ms sweep, exact in binary


@netlet.expose
class Service:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.waiting = 0

    def echo(self, value: Any) -> Any:
        return value

    async def hang(self) -> str:
        """Answer only when the test says so (the peer stays alive and talking)."""
        self.waiting += 1
        await asyncio.to_thread(self.release.wait)
        return "released"



def _armed(clock: VirtualClock, n: int = 1) -> None:
    """Wait (real time) until ``n`` timers are armed: the node's tasks are waiting on it."""
    wait_until(lambda: clock.pending >= n, what=f"{n} timer(s) armed on the virtual clock")


@pytest.fixture
def server(node_factory: NodeFactory) -> Iterator[tuple[netlet.Node, Service]]:
    node = node_factory("tcp://127.0.0.1:0")
    svc = Service()
    node.serve(svc, "svc")
    yield node, svc
    svc.release.set()


def _client(node_factory: NodeFactory, clock: VirtualClock,
            conns: list[FaultyConnection] | None = None, **options: Any) -> netlet.Node:
    def wrap(conn: Connection) -> Connection:
        faulty = FaultyConnection(conn)
        assert conns is not None
        conns.append(faulty)
        return faulty

    return node_factory(clock=clock, direct_calls=False,
                        wrap_connection=wrap if conns is not None else None, **options)


@pytest.mark.timeout(30)
def test_a_silent_peer_is_closed_just_after_three_keepalives(
        node_factory: NodeFactory, server: tuple[netlet.Node, Service]) -> None:
    clock = VirtualClock()
    conns: list[FaultyConnection] = []
    client = _client(node_factory, clock, conns, keepalive=2.0)
    proxy = client.proxy(server[0].address or "", "svc", timeout=None)
    assert proxy.echo("warm") == "warm"
    call = proxy.hang.future()
    wait_until(lambda: server[1].waiting == 1, what="the call to start")
    conns[0].partition()  # from now on the server says nothing and hears nothing
    _armed(clock)
    clock.advance(2.5)  # silent for more than a keepalive: pinged (the ping is lost)
    assert not call.done()
    clock.advance(3.5)  # silent for exactly three keepalives: not yet closed
    assert not call.done()
    clock.advance(SWEEP)  # the first sweep after: closed, and the waiter told
    with pytest.raises(netlet.ConnectionLost, match="stopped answering"):
        call.result(10)


@pytest.mark.timeout(30)
def test_a_peer_that_answers_pings_is_never_closed(
        node_factory: NodeFactory, server: tuple[netlet.Node, Service]) -> None:
    clock = VirtualClock()
    client = _client(node_factory, clock, keepalive=2.0)
    proxy = client.proxy(server[0].address or "", "svc", timeout=None)
    call = proxy.hang.future()
    wait_until(lambda: server[1].waiting == 1, what="the call to start")
    _armed(clock)
    for _ in range(40):  # 20 s of virtual time, ten keepalives: its pongs keep it
        clock.advance(0.5)
        # A ping went if it was quiet for a keepalive: let the pong land (real time).
        wait_until(lambda: clock.monotonic() - _last_heard(client) <= 2.0 or call.done(),
                   what="the pong")
    assert not call.done()
    server[1].release.set()
    assert call.result(10) == "released"


@pytest.mark.timeout(30)
def test_a_call_idle_link_is_not_closed_when_a_long_call_starts(
        node_factory: NodeFactory, server: tuple[netlet.Node, Service]) -> None:
    """A link quiet for longer than three keepalives (no call waiting, so nobody
    pinged) is not dead: a new call on it gets the peer a ping and its chance."""
    clock = VirtualClock()
    client = _client(node_factory, clock, keepalive=2.0)
    proxy = client.proxy(server[0].address or "", "svc", timeout=None)
    assert proxy.echo("warm") == "warm"
    _armed(clock)
    clock.advance(60.0)  # idle: nothing pending, nothing said
    call = proxy.hang.future()
    wait_until(lambda: server[1].waiting == 1, what="the call to start")
    clock.advance(0.5)  # the next liveness look: a ping goes, the peer answers
    wait_until(lambda: _last_heard(client) == clock.monotonic() or call.done(), what="the pong")
    clock.advance(0.5)
    assert not call.done(), call.exception()
    server[1].release.set()
    assert call.result(10) == "released"


def _last_heard(node: netlet.Node) -> float:
    links = node.links.all()
    return max((link.last_heard for link in links), default=0.0)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("style", ["future", "aio"])
def test_a_call_deadline_fires_exactly_when_due(
        node_factory: NodeFactory, server: tuple[netlet.Node, Service], style: str) -> None:
    clock = VirtualClock()
    client = _client(node_factory, clock)
    proxy = client.proxy(server[0].address or "", "svc", timeout=1.0)
    assert proxy.echo("warm") == "warm"
    if style == "future":
        call = proxy.hang.future()
    else:
        async def aio() -> Any:
            return await proxy.hang.aio()
        assert client.loop is not None
        call = asyncio.run_coroutine_threadsafe(aio(), client.loop)
    wait_until(lambda: server[1].waiting == 1, what="the call to start")
    _armed(clock)
    clock.advance(1.0 - SWEEP)  # just before its deadline: still waiting
    assert not call.done()
    clock.advance(SWEEP)  # its deadline: failed, with no real wait
    with pytest.raises(netlet.CallTimeout):
        call.result(10)
    assert proxy.echo("after") == "after"  # the link itself is fine


@pytest.mark.timeout(30)
def test_a_blocking_call_deadline_follows_the_virtual_clock(
        node_factory: NodeFactory, server: tuple[netlet.Node, Service]) -> None:
    clock = VirtualClock()
    client = _client(node_factory, clock)
    proxy = client.proxy(server[0].address or "", "svc", timeout=1.0)
    assert proxy.echo("warm") == "warm"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(proxy.hang)
        wait_until(lambda: server[1].waiting == 1, what="the call to start")
        clock.advance(0.75)
        assert not call.done()
        clock.advance(0.25)  # returns once the waiting thread has seen its deadline
        with pytest.raises(netlet.CallTimeout):
            call.result(10)


class _SlowSend(FaultyConnection):
    """A connection whose next send takes ``moves`` seconds of the clock: time passes
    after the request went and before the caller goes on (a thread descheduled there,
    or a test that saw the call arrive and moved the clock)."""

    def __init__(self, inner: Connection, clock: VirtualClock) -> None:
        super().__init__(inner)
        self.virtual = clock
        self.moves = 0.0

    def send(self, body: Any, buffers: Any = ()) -> None:
        super().send(body, buffers)
        moves, self.moves = self.moves, 0.0
        if moves:
            self.virtual.advance(moves)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("style", ["future", "blocking"])
def test_a_call_deadline_counts_from_before_its_request_went(
        node_factory: NodeFactory, server: tuple[netlet.Node, Service], style: str) -> None:
    # CI once saw a future call never time out: the clock moved between the request
    # going out and its deadline being set, so the deadline moved with it.
    clock = VirtualClock()
    conns: list[_SlowSend] = []

    def wrap(conn: Connection) -> Connection:
        conns.append(_SlowSend(conn, clock))
        return conns[-1]

    client = node_factory(clock=clock, direct_calls=False, wrap_connection=wrap)
    proxy = client.proxy(server[0].address or "", "svc", timeout=1.0)
    assert proxy.echo("warm") == "warm"
    conns[0].moves = 1.0 - SWEEP
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = proxy.hang.future() if style == "future" else pool.submit(proxy.hang)
        wait_until(lambda: server[1].waiting == 1, what="the call to start")
        wait_until(lambda: clock.monotonic() > 1000.5, what="the send to move the clock")
        assert not call.done()
        clock.advance(SWEEP)  # one second after the request went: its deadline
        with pytest.raises(netlet.CallTimeout):
            call.result(10)


@pytest.mark.timeout(30)
def test_the_default_timeout_is_the_nodes_call_timeout(
        node_factory: NodeFactory, server: tuple[netlet.Node, Service]) -> None:
    # One "not given" value for every timeout: DEFAULT_TIMEOUT, what leaving it out means.
    clock = VirtualClock()
    client = _client(node_factory, clock, call_timeout=2.0)
    address = server[0].address or ""
    proxy = client.proxy(address, "svc")
    assert proxy._route.timeout == 2.0
    assert client.proxy(address, "svc", timeout=DEFAULT_TIMEOUT)._route.timeout == 2.0
    assert client.proxy(address, "svc", timeout=None)._route.timeout is None
    assert proxy.with_options(timeout=5.0).with_options()._route.timeout == 5.0
    kept = proxy.with_options(timeout=None).with_options(timeout=DEFAULT_TIMEOUT)
    assert kept._route.timeout is None
    assert repr(DEFAULT_TIMEOUT) == "DEFAULT_TIMEOUT"
    call = proxy.hang.future()
    wait_until(lambda: server[1].waiting == 1, what="the call to start")
    clock.advance(2.0 - SWEEP)
    assert not call.done()
    clock.advance(SWEEP)
    with pytest.raises(netlet.CallTimeout):
        call.result(10)


@pytest.mark.timeout(30)
def test_a_direct_blocking_call_deadline_follows_the_virtual_clock(
        node_factory: NodeFactory, server: tuple[netlet.Node, Service]) -> None:
    # A blocking call over tcp goes over a direct connection, read by the calling
    # thread: it reads in real slices and looks at the clock between them.
    clock = VirtualClock()
    client = node_factory(clock=clock)
    proxy = client.proxy(server[0].address or "", "svc", timeout=3600.0)
    assert proxy.echo("warm") == "warm"
    assert client.caller.direct_pools(), "the call did not take the direct path"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(proxy.hang)
        wait_until(lambda: server[1].waiting == 1, what="the call to start")
        clock.advance(3599.0)
        assert not call.done()
        clock.advance(1.0)  # an hour of virtual time: it gives up now, not in an hour
        with pytest.raises(netlet.CallTimeout):
            call.result(10)
