"""Calls between two real processes over TCP, in every style, with failures."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import netlet

SERVER = Path(__file__).with_name("server_app.py")


class Server:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), *args], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("tcp://"), f"server did not start: {line!r}"
        self.address = line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.kill()


@pytest.fixture
def client() -> Iterator[netlet.Node]:
    node = netlet.Node()
    try:
        yield node
    finally:
        node.close()


def test_blocking_calls_keep_types(server: Server, client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc")
    value = {"t": (1, 2), "s": {3}, "b": b"\x00\xff", "n": None, "big": 2**100}
    assert svc.echo(value) == value
    assert type(svc.echo((1,))) is tuple
    assert svc.add(2, b=3) == 5


def test_ints_of_any_size_go_both_ways(server: Server, client: netlet.Node) -> None:
    # README: "int of any size". Beyond 4300 digits str() refuses (CPython's limit):
    # such ints failed with EncodeError until they travelled as bytes (ext 16).
    svc = client.proxy(server.address, "svc")
    for n in (10**4299, 10**4300 + 1, -(2**100_000) - 5, 7 ** 2_000_000):
        assert svc.echo(n) == n
        assert svc.echo.future([n, {"k": -n}]).result(30) == [n, {"k": -n}]


def test_async_calls_on_the_callers_loop(server: Server) -> None:
    async def main() -> list[Any]:
        async with netlet.open_node() as node:
            svc = node.proxy(server.address, "svc")
            return [await svc.echo.aio("x"), await svc.echo_aio.aio((1, 2)),
                    await asyncio.gather(*(svc.add.aio(i, i) for i in range(50)))]

    assert asyncio.run(main()) == ["x", (1, 2), [2 * i for i in range(50)]]


def test_async_call_from_a_loop_that_is_not_the_nodes(server: Server,
                                                      client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc")

    async def main() -> Any:
        return await svc.echo.aio("bridged")

    assert asyncio.run(main()) == "bridged"


def test_futures_pipeline_on_one_connection(server: Server, client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc")
    futures = [svc.add.future(i, 1) for i in range(300)]
    assert [f.result(10) for f in futures] == [i + 1 for i in range(300)]


def test_oneway_returns_at_once_and_runs_in_order(server: Server,
                                                  client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc")
    for i in range(100):
        assert svc.record.oneway(i) is None
    # A call on the same connection after the oneways is served after them.
    assert svc.records.future().result(10) == list(range(100))


def test_remote_exceptions_arrive_as_their_own_type(server: Server,
                                                    client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc")
    with pytest.raises(ValueError, match="bad value") as err:
        svc.fail("value")
    assert err.value.args == ("bad value", 42)
    assert "server_app.py" in err.value.remote_traceback  # type: ignore[attr-defined]
    assert any("Remote traceback" in n for n in err.value.__notes__)
    with pytest.raises(KeyError):
        svc.fail("key")
    with pytest.raises(RuntimeError):
        svc.fail.future("other").result(10)


def test_only_exposed_public_names_are_callable(server: Server, client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc")
    with pytest.raises(AttributeError):
        svc._private  # noqa: B018 - the attribute access itself must fail
    with pytest.raises(netlet.NotExposed):
        svc.no_such_method()
    with pytest.raises(netlet.NoSuchObject):
        client.proxy(server.address, "nobody").echo(1)
    with pytest.raises(netlet.BadArguments):
        svc.add(1, 2, 3)
    assert svc.echo("still serving") == "still serving"


def test_timeouts_in_every_style(server: Server, client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc").with_options(timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(netlet.CallTimeout):
        svc.sleep(3)
    assert time.monotonic() - t0 < 1.5
    with pytest.raises(netlet.CallTimeout):
        svc.sleep.future(3).result(5)

    async def main() -> None:
        with pytest.raises(netlet.CallTimeout):
            await svc.sleep.aio(3)

    asyncio.run(main())
    assert isinstance(svc.with_options(timeout=10).echo(1), int)


def test_peer_killed_mid_call_fails_fast(server: Server, client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc").with_options(timeout=20)
    assert svc.echo(1) == 1
    with ThreadPoolExecutor(3) as pool:
        blocking = pool.submit(svc.sleep, 15)
        fut = svc.sleep.future(15)
        probe = client.proxy(server.address, "probe")
        started = time.monotonic()
        while probe.active() < 1:  # kill once the server is demonstrably mid-call
            assert time.monotonic() - started < 5, "the server never started the call"
        server.proc.send_signal(signal.SIGKILL)
        with pytest.raises(netlet.NetletConnectionError):
            blocking.result(10)
        with pytest.raises(netlet.NetletConnectionError):
            fut.result(10)
        assert time.monotonic() - started < 10


def test_many_threads_share_one_proxy(server: Server, client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc")

    def work(t: int) -> list[int]:
        return [svc.add(t * 1000, i) for i in range(100)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    assert results == [[t * 1000 + i for i in range(100)] for t in range(8)]


@netlet.expose
class Receiver:
    def __init__(self) -> None:
        self.threads: list[int] = []

    def receive(self, value: Any) -> Any:
        self.threads.append(threading.get_ident())
        return ("got", value)


def test_server_calls_back_a_client_that_does_not_listen(server: Server,
                                                         client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc")
    receiver = Receiver()
    assert client.address is None
    assert svc.call_back(receiver, 7) == ("got", 7)
    assert receiver.threads
    assert receiver.threads[0] != threading.get_ident()

    async def main() -> Any:
        async with netlet.open_node() as node:
            return await node.proxy(server.address, "svc").call_back.aio(receiver, 8)

    assert asyncio.run(main()) == ("got", 8)


def test_an_object_handles_one_call_at_a_time(server: Server, client: netlet.Node) -> None:
    svc = client.proxy(server.address, "svc")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: svc.sleep(0.05), range(4)))
    futures = [svc.sleep.future(0.02) for _ in range(4)]
    for f in futures:
        f.result(10)
    assert svc.max_concurrency() == 1


def test_calls_reconnect_after_the_peer_restarts(client: netlet.Node) -> None:
    first = Server()
    svc = client.proxy(first.address, "svc")
    assert svc.echo(1) == 1
    port = first.address.rsplit(":", 1)[1]
    first.kill()
    with pytest.raises(netlet.NetletConnectionError):
        svc.echo(2)
    second = Server("", port)
    try:
        assert second.address == first.address
        assert svc.echo(3) == 3
        assert svc.echo.future(4).result(10) == 4
    finally:
        second.kill()


def test_large_binaries_and_arrays(server: Server, client: netlet.Node) -> None:
    import numpy as np
    svc = client.proxy(server.address, "svc")
    data = os.urandom(8 * 1024 * 1024)
    assert svc.length(data) == len(data)
    assert svc.echo(data) == data
    arr = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)
    back = svc.echo(arr)
    assert back.dtype == arr.dtype
    assert (back == arr).all()


def test_blocking_call_on_the_loop_is_refused(server: Server) -> None:
    async def main() -> None:
        async with netlet.open_node() as node:
            svc = node.proxy(server.address, "svc")
            with pytest.raises(RuntimeError, match="aio"):
                svc.echo(1)

    asyncio.run(main())


def test_close_leaves_no_threads_or_connections(server: Server) -> None:
    before = {t.ident for t in threading.enumerate()}
    node = netlet.Node()
    svc = node.proxy(server.address, "svc")
    svc.echo(1)
    svc.echo.future(2).result(10)
    svc.call_back(Receiver(), 1)
    node.close()
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == [], left
    with pytest.raises(netlet.NodeClosed):
        svc.echo(1)


def test_many_large_buffers_in_one_call_keep_the_stream_in_step(
        server: Server, client: netlet.Node) -> None:
    # Several out-of-band buffers, bytes and arrays mixed, read lazily by the direct path;
    # the calls after it prove every byte of the big frame was consumed.
    import numpy as np

    svc = client.proxy(server.address, "svc")
    big = [os.urandom(300_000 + i) for i in range(3)]
    arr = np.arange(200_000, dtype=np.int32)
    value = [big[0], {"a": big[1]}, arr, big[2]]
    back = svc.echo(value)
    assert back[0] == big[0]
    assert back[1] == {"a": big[1]}
    assert back[3] == big[2]
    assert type(back[0]) is bytes
    assert (back[2] == arr).all()
    assert back[2].flags.writeable
    assert svc.length(big[2]) == len(big[2])
    assert svc.echo("after") == "after"


def test_a_frozen_peer_fails_a_blocking_call_with_no_timeout(server: Server) -> None:
    # SIGSTOP: the peer neither answers nor closes. Keepalive must still end the wait.
    node = netlet.Node(keepalive=0.3)
    try:
        svc = node.proxy(server.address, "svc", timeout=None)
        assert svc.echo("warm") == "warm"
        probe = node.proxy(server.address, "probe", timeout=5)
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(svc.sleep, 30)
            started = time.monotonic()
            while probe.active() < 1:
                assert time.monotonic() - started < 5, "the call never started"
            server.proc.send_signal(signal.SIGSTOP)
            t0 = time.monotonic()
            with pytest.raises(netlet.ConnectionLost, match="stopped answering"):
                call.result(15)
            assert time.monotonic() - t0 < 5
    finally:
        server.proc.send_signal(signal.SIGCONT)
        node.close()


def test_closing_a_server_lets_running_calls_reply_and_refuses_new_ones() -> None:
    started = threading.Event()

    @netlet.expose
    class Slow:
        def work(self, seconds: float) -> str:
            started.set()
            time.sleep(seconds)  # the call's own work, running while the server closes
            return "finished"

        async def work_aio(self, seconds: float) -> str:
            started.set()
            await asyncio.sleep(seconds)
            return "finished async"

    server = netlet.Node(listen="tcp://127.0.0.1:0")
    server.serve(Slow(), "slow")
    client = netlet.Node()
    try:
        slow = client.proxy(server.address, "slow")
        with ThreadPoolExecutor(1) as pool:
            blocking = pool.submit(slow.work, 0.3)  # the direct path
            assert started.wait(10)
            started.clear()
            via_link = slow.work_aio.future(0.3)  # the main connection
            assert started.wait(10)
            server.close()
            assert blocking.result(10) == "finished"
            assert via_link.result(10) == "finished async"
        with pytest.raises((netlet.NodeClosed, netlet.NetletConnectionError)):
            slow.work(0)
    finally:
        client.close()
        server.close()


@pytest.mark.timeout(30)
def test_cancelling_an_async_call_stops_it_on_the_peer(node_factory: Any) -> None:
    """Cancelling the awaitable of ``.aio`` (directly or by a timeout around it) tells
    the peer, which cancels the running method."""
    started, stopped = threading.Event(), threading.Event()

    @netlet.expose
    class Slow:
        async def wait(self) -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                stopped.set()
                raise

    server = node_factory("tcp://127.0.0.1:0")
    server.serve(Slow(), "slow")

    async def main() -> None:
        async with netlet.open_node() as node:
            proxy = node.proxy(server.address, "slow")
            for how in ("cancel", "timeout"):
                started.clear()
                stopped.clear()
                call = proxy.wait.aio()
                assert await asyncio.to_thread(started.wait, 10)
                if how == "cancel":
                    call.cancel()  # type: ignore[attr-defined]
                else:
                    with pytest.raises(TimeoutError):
                        async with asyncio.timeout(0.1):
                            await call
                assert await asyncio.to_thread(stopped.wait, 10), how

    asyncio.run(main())
