"""The records of membership, names and task output (PROTOCOL.md 16.1, 16.5, 16.6, 17).

Each record round-trips and is refused, naming the field, when a field has
the wrong type; the documented ``join`` is what netlet sends, byte for byte
(no sockets). Then a hostile member, a real node over TCP, calls a real head
with maps where records belong and with records of the wrong field types: each
call is an error to it, changes nothing at the head, and the head goes on
serving it and others. Under a second in all (0.2 s here).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

import netlet
from netlet.cluster import Head, HeadConfig
from netlet.cluster._member_messages import (
    Joined,
    JoinInfo,
    Load,
    MemberEvent,
    NameEntry,
    Names,
    OutputLines,
    TaskOutput,
    WorkerDesc,
)
from netlet.cluster._messages import Report, Tasks
from netlet.codec import Codec, Ext, RemoteRef, record_types
from netlet.errors import ConfigError, DecodeError
from netlet.testing import VirtualClock
from tests._support import wait_until

PROTOCOL = Path(__file__).parents[2] / "docs" / "PROTOCOL.md"
MODULE = "netlet.cluster._member_messages"

INFO = JoinInfo("w1", "box", 4242, "", 8)
SAMPLES: list[Any] = [
    INFO,
    Joined("h1", 0.5, 3.0, 7),
    Joined("h1", 0.5, 3.0, None),
    Load(3, 1, 12.5, 1 << 33),
    Load(0, 0, None, None),
    WorkerDesc("n" * 32, "w1", "box", 4242),
    TaskOutput(["c:1", "c:2"], ["L1", "L2"], [1, 2], ["hi\n", "oops\n"]),
    OutputLines(WorkerDesc("n1", "w1", "box", 1), ["c:1"], [1], ["hi\n"]),
    MemberEvent("leave", "n1", "worker", INFO, "connection lost"),
    NameEntry("svc", "object", "tcp://10.0.0.5:7001", "n1"),
    Names([NameEntry("svc", "object", "", "n1"), NameEntry("ch", "channel", "", "n2")]),
    Names([]),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_each_record_round_trips(value: Any) -> None:
    c = Codec()
    back = c.decode_value(c.encode_value(value))
    assert type(back) is type(value)
    assert back == value


def record_body(*payload: object) -> bytes:
    return msgpack.packb([msgpack.ExtType(Ext.RECORD, msgpack.packb(list(payload)))])


@pytest.mark.parametrize(("payload", "error"), [
    ((20, "w", "h", "4242", "", 8), "JoinInfo: field pid must be int, got str"),
    ((20, "w", "h", True, "", 8), "JoinInfo: field pid must be int, got bool"),
    ((20, "w", "h", 1, ""), r"JoinInfo \(wire id 20\) has 5 fields, got 4"),
    ((21, "h", 1, 3.0, 7), "Joined: field heartbeat must be float, got int"),
    ((21, "h", 0.5, 3.0, "7"), "Joined: field epoch must be int | None, got str"),
    ((22, 1, 0, "12%", None), "Load: field cpu_percent must be float | None, got str"),
    ((22, 1, 0, None, 1.5), "Load: field rss_bytes must be int | None, got float"),
    ((23, "n", "w", "h", None), "WorkerDesc: field pid must be int, got NoneType"),
    ((24, ["t"], ["L"], ["1"], ["x"]), r"TaskOutput: field streams must be list\[int\]"),
    ((24, ["t", "u"], ["L"], [1], ["x"]), "TaskOutput: field leases has 1 items, but tids has 2"),
    ((24, {"t": "L"}, [], [], []), r"TaskOutput: field tids must be list\[str\], got dict"),
    ((25, ["n", "w", "h"], [], [], []), r"WorkerDesc \(in a field\) has 4 fields, got 3"),
    ((25, ["n", "w", "h", 1], ["t"], [1], []), "OutputLines: field texts has 0 items, but tids"),
    ((26, "join", "n", "worker", {"name": "w"}, ""),
     "MemberEvent: field info must be JoinInfo, got dict"),
    ((26, "join", "n", "worker", ["w", "h", 1, "", 1], None),
     "MemberEvent: field detail must be str, got NoneType"),
    ((28, [["svc", "object", "", 7]]), "NameEntry: field node must be str, got int"),
    ((28, {"svc": ["object", "", "n"]}), r"Names: field entries must be list\[NameEntry\]"),
])
def test_a_malformed_record_is_refused_naming_the_record_and_field(
        payload: tuple[object, ...], error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        Codec().decode(record_body(*payload))


def section(title: str, end: str) -> str:
    text = PROTOCOL.read_text()
    return text[text.index(title):text.index(end)]


def test_every_record_is_in_the_table_of_16_5_with_its_wire_id_and_fields() -> None:
    ours = {wid: (rt.cls.__name__, list(rt.names)) for wid, rt in record_types().items()
            if rt.cls.__module__ == MODULE}
    table = {int(wid): (name, re.findall(r"`(\w+):", fields))
             for wid, name, fields in re.findall(r"^\| (\d+) \| `(\w+)` \| (.+?) \|",
                                                 section("### 16.5", "### 16.6"), re.M)}
    assert ours == {wid: table[wid] for wid in ours}
    assert min(ours) == 20
    assert max(ours) < 100


def hex_blocks(title: str, end: str) -> list[bytes]:
    """The bytes of each code block in a section: the hex pairs that start its lines."""
    blocks = section(title, end).split("```")[1::2]
    out = []
    for block in blocks:
        data = []
        for line in block.splitlines():
            for word in line.split():
                if not re.fullmatch(r"[0-9a-f]{2}", word):
                    break
                data.append(word)
        out.append(bytes.fromhex("".join(data)))
    return out


def frame(body: bytes) -> bytes:
    return struct.pack(">II", len(body), 0) + body


def test_the_documented_join_is_what_netlet_sends() -> None:
    """PROTOCOL.md 16.1: a worker's join and the head's answer, as whole frames."""
    c = Codec()
    call, reply = hex_blocks("### 16.1", "### 16.2")
    control = RemoteRef("w1", "", "netlet.worker")
    body, buffers = c.encode([1, 1, "netlet.head", "join", ["w1", "worker", INFO, control],
                              None])
    assert (frame(body), buffers) == (call, [])
    kind, cid, target, method, args, kwargs = c.decode(call[8:])
    assert (kind, cid, target, method, args[:3], kwargs) == (
        1, 1, "netlet.head", "join", ["w1", "worker", INFO], None)
    body, _ = c.encode([2, 1, Joined("h1", 0.5, 3.0, 7)])
    assert frame(body) == reply


# -- a hostile member against a real head ----------------------------------------------

KEY = bytes(range(32))
NodeFactory = Callable[..., netlet.Node]


@pytest.fixture
def head(node_factory: NodeFactory) -> Iterator[tuple[Head, str, VirtualClock]]:
    clock = VirtualClock()
    node = node_factory("tcp://127.0.0.1:0", key=KEY, call_timeout=None, clock=clock)
    head = Head(node, HeadConfig(heartbeat=0.5, dead_after=3.0, pull_wait=1.0))
    node.serve(head, "netlet.head")
    head.start()
    assert node.address is not None
    wait_until(lambda: clock.pending >= 2, what="the head's sweep to wait on the clock")
    yield head, node.address, clock
    head.stop()


def call(proxy: netlet.Proxy, method: str, *args: Any) -> Any:
    """A call on the member's main connection (a blocking call would take a direct one,
    which a body it cannot decode closes, PROTOCOL.md 10)."""
    return getattr(proxy, method).future(*args).result(10)


def _alive(head: Head, node: str) -> bool:
    member = head._members.get(node)
    return member is not None and member.alive


@pytest.mark.timeout(30)
def test_a_hostile_member_gets_errors_and_changes_nothing_at_the_head(
        head: tuple[Head, str, VirtualClock], node_factory: NodeFactory) -> None:
    h, address, clock = head
    hostile = node_factory(key=KEY)
    proxy = hostile.proxy(address, "netlet.head", timeout=10)
    me = hostile.id

    # A join with the map of old, or with a record of the wrong field type: not joined.
    with pytest.raises(ConfigError, match="join: info is a JoinInfo record"):
        call(proxy, "join", me, "worker", {"name": "w", "pid": 1}, None)
    with pytest.raises(DecodeError, match="JoinInfo: field pid must be int, got str"):
        call(proxy, "join", me, "worker", JoinInfo("w", "h", "1", "", 1), None)
    with pytest.raises(ConfigError, match="control is a reference"):
        call(proxy, "join", me, "worker", INFO, "not a ref")
    assert me not in h._members
    assert h.scheduler.worker_load(me) == (0, 0, 0)

    # Joined for real, a wrong heartbeat does not count as one: it dies on time.
    epoch = call(proxy, "join", me, "worker", INFO, None).epoch
    assert type(epoch) is int
    clock.advance(2.0)
    with pytest.raises(ConfigError, match="heartbeat: load is a Load record"):
        call(proxy, "heartbeat", me, {"done": 1, "failed": 0}, epoch, [], 0)
    with pytest.raises(DecodeError, match="Load: field done must be int, got str"):
        call(proxy, "heartbeat", me, Load("1", 0, None, None), epoch, [], 0)
    with pytest.raises(ConfigError, match="heartbeat: holding is a list of task ids"):
        call(proxy, "heartbeat", me, None, epoch, [1, 2], 0)
    with pytest.raises(ConfigError, match="heartbeat: epoch is an int"):
        call(proxy, "heartbeat", me, None, str(epoch), [], 0)
    assert h._members[me].load is None

    # Task output in the old form of lists, or with uneven columns.
    with pytest.raises(ConfigError, match="task_output: output is a TaskOutput record"):
        call(proxy, "task_output", me, [["t", "L", 1, "x\n"]])
    with pytest.raises(DecodeError, match="TaskOutput: field leases has 1 items, but tids has 2"):
        call(proxy, "task_output", me, TaskOutput(["t", "u"], ["L"], [1], ["x"]))

    # The head serves others, and this very connection, as before.
    other = node_factory(key=KEY)
    good = other.proxy(address, "netlet.head", timeout=10)
    joined = call(good, "join", other.id, "worker", JoinInfo("good", "box", 7, "", 2), None)
    assert (joined.head, joined.heartbeat, joined.dead_after) == (h.node.id, 0.5, 3.0)
    assert joined.epoch is not None
    assert joined.epoch > epoch
    load = Load(5, 1, 50.0, 1 << 20)
    assert call(good, "heartbeat", other.id, load, joined.epoch, [], 0) is True
    assert h._members[other.id].load == load
    clock.advance(1.0)  # the hostile member's last true word was 3 s ago
    assert not _alive(h, me)
    assert _alive(h, other.id)
    assert call(proxy, "join", me, "client", JoinInfo("", "box", 1, "", 0), None).epoch is None
    status = call(good, "status")
    ours = {n["node"]: n for n in status["nodes"]}
    assert (ours[other.id]["name"], ours[other.id]["pid"]) == ("good", 7)
    assert ours[me]["role"] == "client"


@pytest.mark.timeout(30)
def test_names_answer_a_names_record(head: tuple[Head, str, VirtualClock],
                                     node_factory: NodeFactory) -> None:
    _, address, _ = head
    member = node_factory(key=KEY)
    proxy = member.proxy(address, "netlet.head", timeout=10)
    call(proxy, "join", member.id, "client", JoinInfo("", "box", 1, "", 0), None)
    call(proxy, "register", "svc", RemoteRef(member.id, "", "svc"), member.id)
    answer = call(proxy, "names")
    assert answer == Names([NameEntry("svc", "object", "", member.id)])
    assert call(proxy, "status")["names"] == {"svc": ["object", "", member.id]}


@pytest.mark.timeout(30)
def test_a_subscriber_that_is_not_a_reference_is_refused_and_joins_go_on(
        head: tuple[Head, str, VirtualClock], node_factory: NodeFactory) -> None:
    """A member that subscribes a str (not a REF) must not break every later join."""
    h, address, _ = head
    hostile = node_factory(key=KEY)
    proxy = hostile.proxy(address, "netlet.head", timeout=10)
    with pytest.raises(ConfigError, match="subscribe: sink is a reference"):
        call(proxy, "subscribe", "not a sink")
    assert not h._subscribers
    other = node_factory(key=KEY)
    good = other.proxy(address, "netlet.head", timeout=10)
    assert call(good, "join", other.id, "worker", INFO, None).epoch is not None


@netlet.expose
class _Sink:
    async def results(self, delivery: Any) -> None: ...
    async def started(self, tids: list[str]) -> None: ...


@netlet.expose
class _LyingControl:
    """A worker's control object whose ``give_back`` answers what no worker would."""

    def give_back(self, epoch: int, tids: list[str]) -> Any:
        return [tids]  # a list of lists, not of ids


@pytest.mark.timeout(30)
def test_a_worker_that_gives_back_garbage_cannot_fail_a_clients_cancel(
        head: tuple[Head, str, VirtualClock], node_factory: NodeFactory) -> None:
    """``give_back`` answers ``[str]`` (PROTOCOL.md 16.4); anything else counts as none."""
    h, address, _ = head
    client, worker = node_factory(key=KEY), node_factory(key=KEY)
    cp = client.proxy(address, "netlet.head", timeout=10)
    wp = worker.proxy(address, "netlet.head", timeout=10)
    call(cp, "join", client.id, "client", JoinInfo("", "box", 1, "", 0), None)
    tasks = Tasks(["c:1"], ["m:f"], [b"\x92\x90\xc0"], [0])
    assert call(cp, "submit", client.id, _Sink(), tasks, {}) == 1
    epoch = call(wp, "join", worker.id, "worker", INFO, _LyingControl()).epoch
    assert call(wp, "pull", worker.id, epoch, 1).ids == ["c:1"]
    assert call(cp, "cancel", ["c:1"]) == []  # not given back: it stays with the worker
    assert call(cp, "cancel", ["c:1"]) == []  # and is asked for again, not stuck
    assert h.scheduler.tasks["c:1"].worker == worker.id


@pytest.mark.timeout(30)
def test_a_spawn_with_wrong_argument_types_is_refused(
        head: tuple[Head, str, VirtualClock], node_factory: NodeFactory) -> None:
    h, address, _ = head
    member = node_factory(key=KEY)
    proxy = member.proxy(address, "netlet.head", timeout=10)
    for args in (["m:C", "not bin", "x", None, {}], ["m:C", b"", "", None, {}],
                 ["m:C", b"", "x", None, {"m:C": "not bin"}], ["m:C", b"", "x", None, []]):
        with pytest.raises(ConfigError, match="spawn: cls"):
            call(proxy, "spawn", *args, member.id)
    assert not h._actors


@netlet.expose
class _RecordingSink:
    def __init__(self) -> None:
        self.delivered: list[str] = []

    async def results(self, delivery: Any) -> None:
        self.delivered.extend(delivery.ids)

    async def started(self, tids: list[str]) -> None: ...

    async def output(self, lines: Any) -> None: ...


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["submit", "resume"])
def test_a_client_whose_sink_is_not_a_reference_is_refused_and_others_get_results(
        head: tuple[Head, str, VirtualClock], node_factory: NodeFactory, method: str) -> None:
    """A submit's or resume's sink is where the head sends results (PROTOCOL.md 16.6):
    a str there must be an error to its sender, not break a worker's report for the
    tasks of every client in it."""
    h, address, _ = head
    hostile, honest, worker = (node_factory(key=KEY) for _ in range(3))
    hp, cp, wp = (n.proxy(address, "netlet.head", timeout=10) for n in (hostile, honest, worker))
    for node, proxy in ((hostile, hp), (honest, cp)):
        call(proxy, "join", node.id, "client", JoinInfo("", "box", 1, "", 0), None)
    body = b"\x92\x90\xc0"  # [[], nil]: no arguments
    tasks = Tasks(["h:1"], ["m:f"], [body], [0])
    if method == "resume":  # submitted as it should be, then resumed with a str
        assert call(hp, "submit", hostile.id, _RecordingSink(), tasks, {}) == 1
        with pytest.raises(ConfigError, match="sink is a reference"):
            call(hp, "resume", hostile.id, "not a sink", ["h:1"])
    else:
        with pytest.raises(ConfigError, match="sink is a reference"):
            call(hp, "submit", hostile.id, "not a sink", tasks, {})
    sink = _RecordingSink()
    assert call(cp, "submit", honest.id, sink, Tasks(["c:1"], ["m:f"], [body], [0]), {}) == 1

    epoch = call(wp, "join", worker.id, "worker", INFO, None).epoch
    pulled = call(wp, "pull", worker.id, epoch, 2)
    done = [(tid, True, b"\x2a", lease, None, None) for tid, lease in zip(
        pulled.ids, pulled.leases, strict=True)]
    assert call(wp, "report", worker.id, epoch, Report.of(done, list(pulled.ids))) is None

    wait_until(lambda: sink.delivered == ["c:1"], what="the honest client's result")
    assert h.scheduler.refused_results == 0
