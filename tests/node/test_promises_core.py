"""Promises of README.md and docs/tutorial.md about calls and values, attacked for real.

Each test names the sentence it tries to break. Real sockets and real processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netlet
from tests._support import STEP, Proc, wait_until
from tests.codec.test_roundtrip import same

__all__: list[str] = []


@netlet.expose(concurrent=True)
class Service:
    def __init__(self) -> None:
        self.started: set[str] = set()
        self.cancelled: set[str] = set()
        self.release = threading.Event()  # ends every wait (the test is over)

    def echo(self, value: Any) -> Any:
        return value

    async def echo_aio(self, value: Any) -> Any:
        return value

    def nested(self, depth: int) -> Any:
        return _nested(depth)

    async def wait(self, tag: str) -> None:
        self.started.add(tag)
        try:
            await asyncio.to_thread(self.release.wait, 60)
        except asyncio.CancelledError:
            self.cancelled.add(tag)
            raise


@pytest.fixture
def served() -> Iterator[tuple[netlet.Node, Service]]:
    service = Service()
    with netlet.Node(listen="tcp://127.0.0.1:0") as node:
        node.serve(service, "svc")
        yield node, service


def _address(node: netlet.Node) -> str:
    assert node.address is not None
    return node.address


def _nested(depth: int) -> Any:
    value: Any = "x" * 100_000
    for _ in range(depth):
        value = (value,)
    return value


# -- tutorial §6: "When the process that made a call disappears, the call running for it
#    is cancelled: an async method sees asyncio.CancelledError."

_CALLER = {
    "future": "p.wait.future(TAG).result()",
    "aio": "asyncio.run(by_aio())",
    "blocking": "p.wait(TAG)",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("style", [
    "future", "aio", "blocking"])
def test_a_killed_callers_running_async_call_is_cancelled(
        style: str, served: tuple[netlet.Node, Service], tmp_path: Path) -> None:
    node, service = served
    script = tmp_path / "caller.py"
    script.write_text(
        "import asyncio, netlet\n"
        f"TAG, ADDR = {style!r}, {node.address!r}\n"
        "p = netlet.connect(ADDR, 'svc', timeout=None)\n"
        "async def by_aio():\n"
        "    async with netlet.open_node() as n:\n"
        "        await n.proxy(ADDR, 'svc', timeout=None).wait.aio(TAG)\n"
        f"{_CALLER[style]}\n")
    caller = Proc.spawn([sys.executable, str(script)])
    try:
        wait_until(lambda: style in service.started, what="the call to start")
        caller.kill()
        wait_until(lambda: style in service.cancelled, timeout=3,
                   what="the call of the killed process to be cancelled")
    finally:
        service.release.set()
        caller.kill()


@pytest.mark.timeout(30)
def test_a_blocking_call_that_timed_out_is_cancelled_at_the_server(
        served: tuple[netlet.Node, Service]) -> None:
    # The caller gave up (CANCEL, then it closed its side connection): the method
    # running for it is cancelled, and the node serves the next blocking call.
    node, service = served
    with netlet.Node() as client:
        proxy = client.proxy(_address(node), "svc", timeout=1.0)
        assert proxy.echo("warm") == "warm"
        assert client.caller.direct_pools(), "the call did not take the direct path"
        with pytest.raises(netlet.CallTimeout):
            proxy.wait("timed-out")
        wait_until(lambda: "timed-out" in service.cancelled, timeout=3,
                   what="the timed-out call to be cancelled at the server")
        assert proxy.echo("after") == "after"
    service.release.set()


# -- tutorial §3: "All channel operations from one process to a given address share that
#    one connection, whatever the number of messages and channels."


def _established_to(port: int) -> int:
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


@pytest.mark.timeout(30)
def test_channel_operations_to_one_address_share_one_connection() -> None:
    with netlet.Node(listen="tcp://127.0.0.1:0") as owner, netlet.Node() as user:
        stream, rendezvous = netlet.channel(buffer=64), netlet.channel()
        owner.serve(stream, "stream")
        owner.serve(rendezvous, "rendezvous")
        address = _address(owner)
        port = int(address.rsplit(":", 1)[1])
        remote_stream = netlet.connect_channel(address, "stream", node=user)
        remote_rdv = netlet.connect_channel(address, "rendezvous", node=user)
        reply = netlet.channel()  # ours: the owner answers on it, over our connection

        def sender(i: int) -> None:  # blocking sends from several threads
            for j in range(5):
                remote_stream.send((i, j))

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(STEP)
        got = sorted(stream.receive(timeout=STEP) for _ in range(20))
        assert got == sorted((i, j) for i in range(4) for j in range(5))
        answer = netlet.spawn(lambda: rendezvous.receive(timeout=STEP).send("back"))
        remote_rdv.send(reply, timeout=STEP)
        assert reply.receive(timeout=STEP) == "back"
        answer.join(STEP)
        receivers = [netlet.spawn(remote_stream.receive, timeout=STEP) for _ in range(3)]
        for i in range(3):
            stream.send(i)
        assert sorted(r.join(STEP) for r in receivers) == [0, 1, 2]
        assert _established_to(port) == 1


# -- README "Values": what one side encodes, the other decodes, through every call style.

_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(), st.text(max_size=30), st.binary(max_size=30), st.dates(),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())), st.timedeltas(),
    st.decimals(), st.uuids(), st.complex_numbers(),
    # Past the out-of-band and buffer-reuse thresholds (64 KiB, 256 KiB).
    st.builds(lambda n, b: bytes([b]) * n, st.sampled_from([70_000, 256 * 1024, 300_000]),
              st.integers(0, 255)),
    st.builds(lambda n, t: np.arange(n, dtype=t), st.sampled_from([0, 3, 40_000]),
              st.sampled_from(["u1", "i8", "f8", "c16"])),
)
_keys = st.one_of(st.text(max_size=5), st.integers(), st.tuples(st.integers(), st.text(max_size=3)),
                  st.frozensets(st.integers(), max_size=3))
_values = st.recursive(_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
    st.dictionaries(_keys, inner, max_size=4), st.sets(_keys, max_size=4)), max_leaves=10)


@pytest.mark.timeout(120)
def test_values_round_trip_exactly_through_every_call_style(
        served: tuple[netlet.Node, Service]) -> None:
    node, _ = served
    with netlet.Node() as client:
        proxy = client.proxy(_address(node), "svc", timeout=STEP)

        async def by_aio(value: Any) -> Any:
            return await proxy.echo_aio.aio(value)

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(_values)
        def check(value: Any) -> None:
            assert same(proxy.echo(value), value)
            assert same(proxy.echo_aio.future(value).result(STEP), value)
            assert same(asyncio.run(by_aio(value)), value)

        check()
        # And the documented leaves, each by name (a strategy might skip one).
        for value in (2**4000, -0.0, Decimal("-0E+3"), uuid.UUID(int=1), 1 + 2j,
                      dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
                      frozenset({(1, "a")}), ValueError("v", 1)):
            assert same(proxy.echo(value), value)


# -- README "Values": a value one side can send, the other can take; README "Known
#    limits" on what is not so yet. Tuples nested six deep around 100 KB of text
#    encode, but the receiver's decoding budget (PROTOCOL.md 6.3: ext payloads taken
#    apart may total 4 x the body + 64 KiB, counted at every level) refuses them: the
#    sender gets a DecodeError, or a ConnectionLost on a blocking call.


@pytest.mark.timeout(30)
def test_a_value_the_sender_encodes_is_one_the_peer_decodes(
        served: tuple[netlet.Node, Service]) -> None:
    node, _ = served
    with netlet.Node() as client:
        proxy = client.proxy(_address(node), "svc", timeout=STEP)
        value = _nested(6)
        try:
            back = proxy.echo(value)
        except netlet.EncodeError:
            return  # refused before it left, saying so: also a kept promise
        assert back == value


@pytest.mark.timeout(30)
@pytest.mark.parametrize("style", ["blocking", "future", "reply"])
def test_a_value_over_the_decoding_budget_fails_its_call_not_the_node(
        style: str, served: tuple[netlet.Node, Service]) -> None:
    node, _ = served
    with netlet.Node() as client:
        proxy = client.proxy(_address(node), "svc", timeout=STEP)
        attempt: Callable[[], Any] = {"blocking": lambda: proxy.echo(_nested(6)),
                   "future": lambda: proxy.echo.future(_nested(6)).result(STEP),
                   "reply": lambda: proxy.nested(6)}[style]
        with pytest.raises(netlet.NetletError):
            attempt()
        assert proxy.echo("after") == "after"
        assert proxy.echo.future("after").result(STEP) == "after"
        assert proxy.nested(2) == _nested(2)
        # "Lists and dicts are not extension values and nest freely."
        deep: Any = "x" * 100_000
        for _ in range(20):
            deep = [{"k": deep}]
        assert proxy.echo(deep) == deep


# -- tutorial §6: "A process that cannot be reached at all gives netlet.PeerUnreachable."
#    A frozen process's kernel still accepts the TCP connection (into its backlog); the
#    handshake then never comes. That is unreachable, not "the peer sent something we
#    refuse" (HandshakeError, which a worker takes for a wrong key and exits on).


@pytest.mark.timeout(30)
@pytest.mark.parametrize("style", ["blocking", "future", "aio"])
def test_a_listener_that_never_answers_is_unreachable(style: str) -> None:
    with socket.socket() as frozen, netlet.Node(handshake_timeout=1.0) as client:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(8)  # never accepts: connections wait in the kernel's backlog
        address = f"tcp://127.0.0.1:{frozen.getsockname()[1]}"
        proxy = client.proxy(address, "svc", timeout=STEP)

        async def by_aio() -> Any:
            return await proxy.echo.aio(1)

        attempt: Callable[[], Any] = {"blocking": lambda: proxy.echo(1),
                                      "future": lambda: proxy.echo.future(1).result(STEP),
                                      "aio": lambda: asyncio.run(by_aio())}[style]
        with pytest.raises(netlet.PeerUnreachable, match="did not complete the handshake"):
            attempt()


# -- README "No hangs": a timeout the caller gives (any float, or something else) either
#    bounds the call or is refused at once. timeout=float("inf") on a node with no
#    connection yet raised OverflowError on a background thread and the call never ended.


@pytest.mark.timeout(30)
@pytest.mark.parametrize("style", ["blocking", "future", "aio"])
def test_an_infinite_timeout_waits_for_the_reply_and_bad_ones_are_refused(
        style: str, served: tuple[netlet.Node, Service]) -> None:
    node, _ = served

    def attempt(proxy: netlet.Proxy) -> Any:
        async def by_aio() -> Any:
            return await proxy.echo_aio.aio("v")

        return {"blocking": lambda: proxy.echo("v"),
                "future": lambda: proxy.echo.future("v").result(STEP),
                "aio": lambda: asyncio.run(by_aio())}[style]()

    with netlet.Node() as client:  # fresh: the first call also opens the connection
        assert attempt(client.proxy(_address(node), "svc", timeout=float("inf"))) == "v"
    with netlet.Node() as client:
        proxy = client.proxy(_address(node), "svc")
        assert attempt(proxy.with_options(timeout=float("inf"))) == "v"
        with pytest.raises(ValueError, match="timeout"):
            attempt(proxy.with_options(timeout=float("nan")))
        with pytest.raises(TypeError, match="timeout"):
            attempt(proxy.with_options(timeout="5"))  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_a_remote_receive_with_an_infinite_timeout_gets_its_value() -> None:
    with netlet.Node(listen="tcp://127.0.0.1:0") as owner, netlet.Node() as user:
        ch = netlet.channel()
        owner.serve(ch, "c")
        remote = netlet.connect_channel(_address(owner), "c", node=user)
        got = netlet.spawn(remote.receive, timeout=float("inf"))
        ch.send("v", timeout=STEP)
        assert got.join(STEP) == "v"
