"""Calls over a misbehaving network: drops, duplicates, reordering, delay, cuts, partitions.

Every test runs over tcp, unix and mem: the client node wraps its connections in
``FaultyConnection`` through ``wrap_connection`` and the promises of the call
layer must hold whatever the network does. Faults are seeded, so a failure can
be replayed.

About the direct path: a blocking call over tcp/unix normally goes over a side
connection that the node serves in a thread of its own, outside the main link.
A node with ``wrap_connection`` set opens no direct connections (client side)
and accepts none (server side: the side connection is closed and the client
falls back to the main link), so injected faults apply to every call style.
Before commit 5f59417 the server side did serve them, unwrapped, and a plain
client's blocking calls bypassed the server's faults
(``test_server_side_faults_apply_to_blocking_calls``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import netlet
from netlet.errors import CallTimeout, ConnectionLost
from netlet.testing import VirtualClock
from netlet.transport import Connection, Faults, FaultyConnection
from tests._support import wait_until
from tests.conftest import arun

NodeFactory = Callable[..., netlet.Node]
STYLES = ["blocking", "future", "aio"]


@netlet.expose(concurrent=True)
class Service:
    def __init__(self) -> None:
        self.runs: Counter[Any] = Counter()
        self.lock = threading.Lock()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def echo(self, value: Any) -> Any:
        return value

    def count(self, key: Any) -> int:
        with self.lock:
            self.runs[key] += 1
            return self.runs[key]

    def hold(self, value: Any) -> Any:
        """Returns only when the test opens the gate."""
        self.entered.set()
        self.gate.wait(10)
        return value


class Injector:
    """A ``wrap_connection`` hook: every new connection gets the same faults (and a
    seed of its own, derived from ``seed``); the wrapped connections are kept."""

    def __init__(self, out: Faults | None = None, into: Faults | None = None,
                 seed: int = 0) -> None:
        self.out, self.into, self.seed = out, into, seed
        self.made: list[FaultyConnection] = []

    def __call__(self, conn: Connection) -> Connection:
        fc = FaultyConnection(conn, self.out, self.into, seed=self.seed + len(self.made))
        self.made.append(fc)
        return fc

    @property
    def last(self) -> FaultyConnection:
        assert self.made, "no connection was wrapped"
        return self.made[-1]


@pytest.fixture(params=["tcp", "unix", "mem"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def listen_address(transport: str, short_tmp: Path, free_mem_address: str) -> str:
    return {"tcp": "tcp://127.0.0.1:0", "unix": f"unix://{short_tmp}/faults.sock",
            "mem": free_mem_address}[transport]


@pytest.fixture
def server(node_factory: NodeFactory, listen_address: str) -> Iterator[tuple[str, Service]]:
    node = node_factory(listen_address)
    service = Service()
    node.serve(service, "svc")
    assert node.address is not None
    try:
        yield node.address, service
    finally:
        service.gate.set()


def call(proxy: netlet.Proxy, style: str, method: str, *args: Any) -> Any:
    """Make one call in the given style (``aio`` from a loop that is not the node's)."""
    m = getattr(proxy, method)
    if style == "blocking":
        return m(*args)
    if style == "future":
        return m.future(*args).result(10)

    async def main() -> Any:
        return await m.aio(*args)

    return arun(main())


def seed_for(pattern: list[bool], p: float) -> int:
    """A seed whose generator's first draws ``< p`` exactly where ``pattern`` is True.

    With only ``drop`` set, a FaultyConnection draws one number per frame, so this
    picks which frames are dropped."""
    for seed in range(100_000):
        rnd = random.Random(seed)
        if all((rnd.random() < p) == want for want in pattern):
            return seed
    raise AssertionError("no such seed")


# -- drop ---------------------------------------------------------------------------------


def _deadlines_armed(node: netlet.Node, clock: VirtualClock, style: str, n: int = 1) -> bool:
    """Has the call's deadline been set (so that moving the clock reaches it)?"""
    if style == "blocking":  # a thread waits on the clock, beside the node's sweep
        return clock.pending >= 1 + n
    return sum(map(len, node._watch._deadlines.values())) >= n



# On a virtual clock, a call times out exactly at its deadline and not an instant
# before, whatever the transport and the style, and no test waits for it.
BEFORE, AT = 0.4375, 0.0625  # to 1/16 s short of the 0.5 s timeout, then onto it


@pytest.mark.parametrize("style", STYLES)
def test_dropped_reply_times_out_and_the_next_call_works(
        server: tuple[str, Service], node_factory: NodeFactory, style: str) -> None:
    address, service = server
    injector = Injector(into=Faults(drop=0.5), seed=seed_for([True] + [False] * 6, 0.5))
    clock = VirtualClock()
    client = node_factory(wrap_connection=injector, clock=clock)
    proxy = client.proxy(address, "svc", timeout=0.5)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(call, proxy, style, "count", "first")
        wait_until(lambda: service.runs["first"] == 1 and _deadlines_armed(client, clock, style),
                   what="the call to run and its deadline to be set")
        clock.advance(BEFORE)
        assert not first.done()
        clock.advance(AT)
        with pytest.raises(CallTimeout):
            first.result(10)
    assert service.runs["first"] == 1  # it ran: only the reply was lost
    for i in range(3):
        assert call(proxy, style, "echo", i) == i
    assert len(injector.made) == 1, "the later calls should reuse the same connection"


def test_dropped_reply_on_the_nodes_own_loop(server: tuple[str, Service]) -> None:
    address, _ = server
    injector = Injector(into=Faults(drop=0.5), seed=seed_for([True] + [False] * 6, 0.5))
    clock = VirtualClock()

    async def main() -> list[Any]:
        async with netlet.open_node(wrap_connection=injector, clock=clock) as node:
            proxy = node.proxy(address, "svc", timeout=0.5)
            lost = asyncio.ensure_future(proxy.echo.aio("lost"))
            for _ in range(5000):  # connecting, then the call goes out with its deadline
                if _deadlines_armed(node, clock, "aio"):
                    break
                await asyncio.sleep(0.002)
            await clock.advance_aio(BEFORE)
            assert not lost.done()
            await clock.advance_aio(AT)
            with pytest.raises(CallTimeout):
                await lost
            return [await proxy.echo.aio(i) for i in range(3)]

    assert arun(main()) == [0, 1, 2]


def test_everything_dropped_every_call_times_out(server: tuple[str, Service],
                                                 node_factory: NodeFactory) -> None:
    address, _ = server
    clock = VirtualClock()
    client = node_factory(wrap_connection=Injector(out=Faults(drop=1.0)), clock=clock)
    proxy = client.proxy(address, "svc", timeout=0.5)
    futures = [proxy.echo.future(i) for i in range(20)]
    wait_until(lambda: _deadlines_armed(client, clock, "future", 20), what="20 deadlines")
    clock.advance(BEFORE)
    assert not any(f.done() for f in futures)
    clock.advance(AT)
    for f in futures:
        with pytest.raises(CallTimeout):
            f.result(5)


# -- duplicate ---------------------------------------------------------------------------------


def test_duplicated_call_frames_run_the_method_once(server: tuple[str, Service],
                                                    node_factory: NodeFactory) -> None:
    address, service = server
    client = node_factory(wrap_connection=Injector(out=Faults(duplicate=1.0), seed=3))
    proxy = client.proxy(address, "svc", timeout=5)
    for i in range(10):
        assert proxy.count(("blocking", i)) == 1
    futures = [proxy.count.future(("future", i)) for i in range(50)]
    assert [f.result(5) for f in futures] == [1] * 50

    async def main() -> list[int]:
        return list(await asyncio.gather(*(proxy.count.aio(("aio", i)) for i in range(50))))

    assert arun(main()) == [1] * 50
    # A last call after all the duplicates have arrived: each method ran exactly once.
    assert proxy.echo("done") == "done"
    assert len(service.runs) == 110
    assert set(service.runs.values()) == {1}


def test_duplicated_replies_are_ignored(server: tuple[str, Service],
                                        node_factory: NodeFactory) -> None:
    address, _ = server
    client = node_factory(wrap_connection=Injector(into=Faults(duplicate=1.0), seed=4))
    proxy = client.proxy(address, "svc", timeout=5)
    for i in range(20):
        assert proxy.echo(i) == i
    futures = [proxy.echo.future(("f", i)) for i in range(100)]
    assert [f.result(5) for f in futures] == [("f", i) for i in range(100)]
    assert proxy.echo("last") == "last"


def test_duplicates_both_ways(server: tuple[str, Service], node_factory: NodeFactory) -> None:
    address, service = server
    client = node_factory(wrap_connection=Injector(
        out=Faults(duplicate=0.5), into=Faults(duplicate=0.5), seed=5))
    proxy = client.proxy(address, "svc", timeout=5)
    futures = [proxy.count.future(i) for i in range(100)]
    assert [f.result(5) for f in futures] == [1] * 100
    assert proxy.echo("sync") == "sync"
    assert set(service.runs.values()) == {1}


# -- reorder and jitter ---------------------------------------------------------------------------


def _settle(proxy: netlet.Proxy, futures: list[concurrent.futures.Future[Any]],
            within: float = 4.0) -> None:
    """Wait for ``futures``, sending more calls meanwhile: a frame held back for
    reordering goes out when the next one overtakes it."""
    deadline = time.monotonic() + within
    n = 0
    while not all(f.done() for f in futures):
        assert time.monotonic() < deadline, "calls did not complete under reordering"
        proxy.echo.future(("flush", n))
        n += 1
        concurrent.futures.wait(futures, timeout=0.02)


def test_reorder_keeps_every_reply_matched_to_its_call(server: tuple[str, Service],
                                                       node_factory: NodeFactory) -> None:
    address, service = server
    client = node_factory(wrap_connection=Injector(
        out=Faults(reorder=0.5), into=Faults(reorder=0.5), seed=6))
    proxy = client.proxy(address, "svc", timeout=5)
    futures = [proxy.count.future(("r", i)) for i in range(200)]
    echoes = [proxy.echo.future(i) for i in range(200)]
    _settle(proxy, futures + echoes)
    assert [f.result() for f in echoes] == list(range(200))
    assert [f.result() for f in futures] == [1] * 200
    assert all(service.runs[("r", i)] == 1 for i in range(200))


def test_jitter_lets_frames_overtake_yet_replies_match(server: tuple[str, Service],
                                                       node_factory: NodeFactory) -> None:
    address, _ = server
    client = node_factory(wrap_connection=Injector(
        out=Faults(jitter=0.03), into=Faults(jitter=0.03), seed=7))
    proxy = client.proxy(address, "svc", timeout=5)
    futures = [proxy.echo.future(i) for i in range(200)]
    assert [f.result(5) for f in futures] == list(range(200))


def test_reorder_alone_never_strands_a_frame(node_factory: NodeFactory) -> None:
    # "Hold a frame back and let the next one overtake it": when no next frame
    # comes, the held one must still be delivered, or reordering becomes loss.
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(Service(), "svc")
    assert server.address is not None
    client = node_factory(wrap_connection=Injector(out=Faults(reorder=1.0), seed=8))
    proxy = client.proxy(server.address, "svc", timeout=1.0)
    assert proxy.echo("alone") == "alone"


# -- delay and bandwidth ----------------------------------------------------------------------


def test_delay_slows_calls_but_each_completes(server: tuple[str, Service],
                                              node_factory: NodeFactory) -> None:
    address, _ = server
    client = node_factory(wrap_connection=Injector(
        out=Faults(delay=0.05), into=Faults(delay=0.05)))
    proxy = client.proxy(address, "svc", timeout=5)
    start = time.monotonic()
    assert proxy.echo("slow") == "slow"
    assert time.monotonic() - start >= 0.1
    start = time.monotonic()
    futures = [proxy.echo.future(i) for i in range(100)]
    assert [f.result(5) for f in futures] == list(range(100))
    elapsed = time.monotonic() - start
    assert 0.1 <= elapsed < 2.0  # delayed, but in parallel: not 100 x 0.1 s


def test_bandwidth_cap_slows_large_payloads(server: tuple[str, Service],
                                            node_factory: NodeFactory) -> None:
    address, _ = server
    client = node_factory(wrap_connection=Injector(
        out=Faults(bandwidth=2_000_000), into=Faults(bandwidth=2_000_000)))
    proxy = client.proxy(address, "svc", timeout=5)
    blob = random.Random(9).randbytes(400_000)  # out of band, 0.2 s each way at the cap
    start = time.monotonic()
    assert proxy.echo(blob) == blob
    elapsed = time.monotonic() - start
    assert 0.35 <= elapsed < 3.0, elapsed
    # Small calls still flow, and correctly, once the pipe is free.
    assert [proxy.echo.future(i).result(5) for i in range(10)] == list(range(10))


# -- cut and partition -----------------------------------------------------------------------------


def test_cut_fails_pending_calls_promptly_and_the_next_call_reconnects(
        server: tuple[str, Service], node_factory: NodeFactory) -> None:
    address, service = server
    injector = Injector(out=Faults(cut_after=2))
    # A clock that never moves: the callers cannot be failing by their timeout.
    client = node_factory(wrap_connection=injector, clock=VirtualClock())
    proxy = client.proxy(address, "svc", timeout=10)
    assert proxy.echo("one") == "one"                   # frame 1
    pending = proxy.hold.future("held")                 # frame 2: runs until the gate opens
    assert service.entered.wait(5)
    with pytest.raises(ConnectionLost):
        proxy.echo("three")                             # frame 3: the cut
    with pytest.raises(ConnectionLost):
        pending.result(5)
    service.gate.set()
    injector.out = None                                 # the next connection is sound
    assert proxy.echo("again") == "again"               # a new connection
    assert len(injector.made) == 2
    assert [proxy.echo.future(i).result(5) for i in range(5)] == list(range(5))


def test_cut_fails_async_callers_too(server: tuple[str, Service]) -> None:
    address, service = server
    injector = Injector(out=Faults(cut_after=1))

    async def main() -> Any:
        # A clock that never moves: the callers cannot be failing by their timeout.
        async with netlet.open_node(wrap_connection=injector, clock=VirtualClock()) as node:
            proxy = node.proxy(address, "svc", timeout=10)
            held = asyncio.ensure_future(proxy.hold.aio("held"))  # frame 1
            await asyncio.to_thread(service.entered.wait, 5)
            with pytest.raises(ConnectionLost):
                await proxy.echo.aio("cut")                       # frame 2: the cut
            with pytest.raises(ConnectionLost):
                await held
            service.gate.set()
            return await proxy.echo.aio("reconnected")

    assert arun(main()) == "reconnected"
    assert len(injector.made) == 2


def test_partition_then_heal(server: tuple[str, Service], node_factory: NodeFactory) -> None:
    address, service = server
    injector = Injector()
    client = node_factory(wrap_connection=injector)
    proxy = client.proxy(address, "svc", timeout=0.3)
    assert proxy.echo("before") == "before"
    injector.last.partition()
    with pytest.raises(CallTimeout):
        proxy.count("during")
    with pytest.raises(CallTimeout):
        proxy.echo.future("during").result(5)
    assert service.runs["during"] == 0  # nothing got through
    injector.last.heal()
    assert proxy.echo("after") == "after"
    assert [proxy.echo.future(i).result(5) for i in range(5)] == list(range(5))
    assert len(injector.made) == 1  # the same connection, healed


def test_partition_drops_replies_in_flight(server: tuple[str, Service],
                                           node_factory: NodeFactory) -> None:
    address, service = server
    injector = Injector()
    client = node_factory(wrap_connection=injector)
    proxy = client.proxy(address, "svc", timeout=0.5)
    pending = proxy.hold.future("in flight")
    assert service.entered.wait(5)
    injector.last.partition()
    service.gate.set()  # the reply is sent into the partition
    with pytest.raises(CallTimeout):
        pending.result(5)
    injector.last.heal()
    assert proxy.echo("healed") == "healed"


# -- where the wrapper applies ----------------------------------------------------------------


def test_client_side_faults_apply_to_blocking_calls(server: tuple[str, Service],
                                                    node_factory: NodeFactory) -> None:
    address, _ = server
    client = node_factory(wrap_connection=Injector(into=Faults(delay=0.2)))
    proxy = client.proxy(address, "svc", timeout=5)
    start = time.monotonic()
    assert proxy.echo("x") == "x"
    assert time.monotonic() - start >= 0.2, "the blocking call bypassed the client's faults"


@pytest.mark.parametrize("direct_calls", [True, False])
def test_server_side_faults_apply_to_blocking_calls(
        node_factory: NodeFactory, listen_address: str, direct_calls: bool) -> None:
    injector = Injector(out=Faults(delay=0.2))
    server = node_factory(listen_address, wrap_connection=injector)
    server.serve(Service(), "svc")
    assert server.address is not None
    client = node_factory(direct_calls=direct_calls)
    proxy = client.proxy(server.address, "svc", timeout=5)
    assert proxy.echo.future("warm up").result(5) == "warm up"
    start = time.monotonic()
    assert proxy.echo("x") == "x"
    elapsed = time.monotonic() - start
    assert elapsed >= 0.2, (
        f"a blocking call took {elapsed:.3f} s: it bypassed the server's wrap_connection "
        "(served over a direct connection that was never wrapped)")
