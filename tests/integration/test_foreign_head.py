"""A foreign worker and client, written from docs/PROTOCOL.md 16-17 alone, try to break the head.

The client side is the one of ``test_foreign_client.py`` (socket, struct, hmac,
msgpack: no netlet import); the head is a real one, served by
``protocol_server.py`` in a subprocess. Each test checks what a documented bad
input gets back: the error type, a word of its message, whether the connection
stays open, and that nothing changed at the head (``status()``).
Each takes well under a second, but for the two whose pull must wait
``pull_wait`` (1 s) by design.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from netlet.transport import write_key
from tests.integration.test_foreign_client import (
    CALL,
    ERROR,
    PING,
    PONG,
    REPLY,
    Client,
    Closed,
    Record,
    Ref,
    _start_server,
    encode,
)

pytestmark = pytest.mark.timeout(15)

HEAD = "netlet.head"
JOIN_INFO, JOINED, LOAD, TASK_OUTPUT, OUTPUT_LINES, MEMBER_EVENT = 20, 21, 22, 24, 25, 26
NAMES, TASKS, PULLED, REPORT, DELIVERY = 28, 30, 31, 32, 33
BODY = msgpack.packb([[2, 3], None])


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def keyed_server(tmp_path: Path, key: bytes) -> Iterator[tuple[str, int]]:
    """A head of its own per test: no task or member of another test reaches it."""
    path = tmp_path / "cluster.key"
    write_key(path, key)
    yield from _start_server("--key-file", str(path))


def _info(name: str = "foreign") -> Record:
    return Record(JOIN_INFO, name, "box", 4242, "", 1)


def _connect(server: tuple[str, int], key: bytes) -> Client:
    c = Client(server)
    c.handshake(key)
    return c


def _join_worker(w: Client) -> int:
    kind, joined = w.call(HEAD, "join", w.node, "worker", _info(), None)
    assert (kind, joined.wire_id) == (REPLY, JOINED), joined
    epoch = joined.fields[3]
    assert type(epoch) is int
    return epoch


def _submit(c: Client, *tids: str, fn: str = "m:add") -> Ref:
    kind, joined = c.call(HEAD, "join", c.node, "client", Record(JOIN_INFO, "", "box", 1, "", 0),
                          None)
    assert (kind, joined.fields[3]) == (REPLY, None)
    sink = Ref(c.node, "", "sink")
    n = len(tids)
    assert c.call(HEAD, "submit", c.node, sink,
                  Record(TASKS, list(tids), [fn] * n, [BODY] * n, [0] * n), {}) == (REPLY, n)
    return sink


def _refused(c: Client) -> int:
    kind, status = c.call(HEAD, "status")
    assert kind == REPLY
    value: int = status["refused_results"]
    return value


def _error(answer: tuple[int, Any], type_name: str, *words: str) -> None:
    kind, exc = answer
    assert kind == ERROR, answer
    assert exc.type_name == type_name, (exc.type_name, exc.message)
    for word in words:
        assert word in exc.message, (word, exc.message)


def _result(ids: list[str], leases: list[str]) -> Record:
    n = len(ids)
    return Record(REPORT, ids, [True] * n, [msgpack.packb(5)] * n, leases, [None] * n,
                  [None] * n, [])


def _next_sink_call(c: Client) -> tuple[int, str, list[Any]]:
    """The next CALL the head makes on our sink: (call id, method, args)."""
    kind, cid, target, method, args, _ = c.recv_message()
    assert (kind, target) == (CALL, "sink")
    return cid, method, args


def _delivery(c: Client) -> Record:
    """Skip ``started`` (oneway) and answer the head's ``results`` call."""
    while True:
        cid, method, args = _next_sink_call(c)
        if method == "results":
            c.send_frame(encode([REPLY, cid, None]))
            record: Record = args[0]
            assert record.wire_id == DELIVERY
            return record
        assert (method, cid) == ("started", 0)


def test_a_stale_epoch_is_refused_whole_and_its_results_counted(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.1: a pull, exchange or report under an older epoch is ERROR NoSuchObject
    naming the epoch; nothing is handed out; its results are counted as refused."""
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as worker:
        _submit(client, "se:1")
        old = _join_worker(worker)
        new = _join_worker(worker)
        assert new > old
        _error(worker.call(HEAD, "pull", worker.node, old, 1), "netlet.errors.NoSuchObject",
               "epoch")
        kind, pulled = worker.call(HEAD, "pull", worker.node, new, 1)
        assert (kind, pulled.fields[0]) == (REPLY, ["se:1"])  # the stale pull took nothing
        leases = pulled.fields[3]
        before = _refused(client)
        late = _result(["se:1"], leases)
        late.fields[6] = ["se:1"]  # started, and a result: both refused
        _error(worker.call(HEAD, "report", worker.node, old, late), "netlet.errors.NoSuchObject",
               "epoch")
        _error(worker.call(HEAD, "exchange", worker.node, old, _result(["se:1"], leases), 1),
               "netlet.errors.NoSuchObject", "epoch")
        assert _refused(client) == before + 2
        assert worker.call(HEAD, "report", worker.node, new, _result(["se:1"], leases)) == (
            REPLY, None)
        assert _delivery(client).fields[:3] == [["se:1"], [True], [msgpack.packb(5)]]


def test_a_result_without_the_current_lease_is_refused_and_counted_once(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.2: only the current lease from the worker it was handed to; a duplicate or a
    forgery is dropped, counted once each, and the connection goes on."""
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as worker, \
            _connect(keyed_server, key) as thief:
        _submit(client, "le:1")
        epoch = _join_worker(worker)
        thief_epoch = _join_worker(thief)
        _, pulled = worker.call(HEAD, "pull", worker.node, epoch, 1)
        (lease,) = pulled.fields[3]
        before = _refused(client)
        assert worker.call(HEAD, "report", worker.node, epoch, _result(["le:1"], ["forged"])) == (
            REPLY, None)
        # the right lease from the wrong worker
        assert thief.call(HEAD, "report", thief.node, thief_epoch, _result(["le:1"], [lease])) == (
            REPLY, None)
        assert _refused(client) == before + 2
        assert worker.call(HEAD, "report", worker.node, epoch, _result(["le:1"], [lease])) == (
            REPLY, None)
        assert _delivery(client).fields[0] == ["le:1"]
        assert worker.call(HEAD, "report", worker.node, epoch, _result(["le:1"], [lease])) == (
            REPLY, None)  # the same result again: a duplicate
        assert _refused(client) == before + 3


def test_a_handout_missing_from_holding_goes_back_under_a_new_lease(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.1: a task handed out at `seq` <= `seen` and not in `holding` was lost: it is
    queued again; the old lease's result is refused."""
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as worker:
        _submit(client, "ho:1")
        epoch = _join_worker(worker)
        _, first = worker.call(HEAD, "pull", worker.node, epoch, 1)
        seq = first.fields[5]
        assert worker.call(HEAD, "heartbeat", worker.node, None, epoch, [], seq) == (REPLY, True)
        _, again = worker.call(HEAD, "pull", worker.node, epoch, 1)
        assert again.fields[0] == ["ho:1"]
        assert again.fields[5] > seq
        assert again.fields[3] != first.fields[3]
        before = _refused(client)
        worker.call(HEAD, "report", worker.node, epoch, _result(["ho:1"], first.fields[3]))
        assert _refused(client) == before + 1


def test_a_heartbeat_under_an_old_epoch_or_from_a_stranger_says_join_again(
        keyed_server: tuple[str, int], key: bytes) -> None:
    with _connect(keyed_server, key) as worker:
        assert worker.call(HEAD, "heartbeat", worker.node) == (REPLY, False)
        old = _join_worker(worker)
        new = _join_worker(worker)
        assert worker.call(HEAD, "heartbeat", worker.node, None, old, [], 0) == (REPLY, False)
        assert worker.call(HEAD, "heartbeat", worker.node, Record(LOAD, 1, 0, 12.5, None),
                           new, [], 0) == (REPLY, True)
        assert worker.call(HEAD, "heartbeat", worker.node, None, new) == (REPLY, True)


def test_a_member_naming_another_node_is_refused(keyed_server: tuple[str, int],
                                                 key: bytes) -> None:
    """16: the first argument MUST be the caller's own node id: else PermissionError."""
    with _connect(keyed_server, key) as worker, _connect(keyed_server, key) as other:
        epoch = _join_worker(worker)
        for method, args in (("join", [worker.node, "worker", _info(), None]),
                             ("heartbeat", [worker.node]),
                             ("pull", [worker.node, epoch, 1]),
                             ("report", [worker.node, epoch, _result([], [])]),
                             ("leave", [worker.node]),
                             ("task_output", [worker.node, Record(TASK_OUTPUT, [], [], [], [])]),
                             ("unrunnable", [worker.node, "t", "L", "no"])):
            _error(other.call(HEAD, method, *args), "builtins.PermissionError", "own node")
        assert worker.call(HEAD, "heartbeat", worker.node, None, epoch, [], 0) == (REPLY, True)


def test_malformed_records_are_decode_errors_and_the_connection_stays_open(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """§6.4, §11, 16.5: a record the head cannot accept is ERROR DecodeError naming the
    record and the field, for that call; a oneway one gets nothing; the link goes on."""
    with _connect(keyed_server, key) as worker:
        epoch = _join_worker(worker)
        decode_error = "netlet.errors.DecodeError"
        good = _result(["x"], ["L"]).fields
        cases: list[tuple[Record, str]] = [
            (Record(REPORT, *good[:-1]), "Report"),  # a field short
            (Record(REPORT, *good, []), "Report"),  # a field too many
            (Record(REPORT, good[0], [1], *good[2:]), "oks"),  # an int is not a bool
            (Record(REPORT, good[0], good[1], ["text"], *good[3:]), "bodies"),  # str for bin
            (Record(REPORT, ["x", "y"], *good[1:]), "oks"),  # columns of two lengths
            (Record(REPORT, *good[:-1], "x"), "started"),  # a str for [str]
            (Record(6, [], []), "unknown record wire id 6"),  # retired (16.5)
            (Record(999, []), "unknown record wire id 999"),
        ]
        for record, word in cases:
            _error(worker.call(HEAD, "report", worker.node, epoch, record), decode_error, word)
        _error(worker.call(HEAD, "heartbeat", worker.node, Record(LOAD, 1, 0, 50, None), epoch,
                           [], 0), decode_error, "cpu_percent")  # an int is not a float
        _error(worker.call(HEAD, "join", worker.node, "worker",
                           Record(JOIN_INFO, "n", "h", 1.0, "", 1), None), decode_error, "pid")
        assert worker.call(HEAD, "heartbeat", worker.node, None, epoch, [], 0) == (REPLY, True)
    # Oneway (the usual `report`, 16.2), an undecodable CALL closes that connection (§11).
    with _connect(keyed_server, key) as worker:
        epoch = _join_worker(worker)
        worker.start_call(HEAD, "report", worker.node, epoch, cases[0][0], oneway=True)
        with pytest.raises(Closed):
            worker.call(HEAD, "heartbeat", worker.node, None, epoch, [], 0)


def test_a_payload_that_is_not_the_documented_record_is_a_config_error(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.1, 16.2, §17: a map or list where a record belongs is ERROR ConfigError."""
    with _connect(keyed_server, key) as worker:
        epoch = _join_worker(worker)
        as_map = {"ids": [], "oks": []}
        config = "netlet.errors.ConfigError"
        _error(worker.call(HEAD, "report", worker.node, epoch, as_map), config, "Report")
        _error(worker.call(HEAD, "exchange", worker.node, epoch, as_map, 1), config, "Report")
        _error(worker.call(HEAD, "report", worker.node, epoch,
                           Record(TASKS, [], [], [], [])), config, "Report")
        _error(worker.call(HEAD, "submit", worker.node, Ref(worker.node, "", "s"), as_map, {}),
               config, "Tasks")
        _error(worker.call(HEAD, "task_output", worker.node, [["t", "L", 1, "x"]]), config,
               "TaskOutput")
        _error(worker.call(HEAD, "join", worker.node, "boss", _info(), None), config, "role")
        _error(worker.call(HEAD, "join", worker.node, "worker", _info(), "ref"), config,
               "control")
        _error(worker.call(HEAD, "heartbeat", worker.node, None, epoch, [1], 0), config,
               "holding")
        _error(worker.call(HEAD, "heartbeat", worker.node, None, epoch, [], "0"), config, "seen")
        _error(worker.call(HEAD, "unrunnable", worker.node, 7, "L", "no"), config, "str")
        assert worker.call(HEAD, "heartbeat", worker.node, None, epoch, [], 0) == (REPLY, True)


@pytest.mark.parametrize("bad", ["7", 7.0, True, None, [7]])
def test_an_epoch_or_want_of_the_wrong_type_is_a_config_error(
        keyed_server: tuple[str, int], key: bytes, bad: Any) -> None:
    """16.2: `epoch` and `want` are ints (a bool is not an int, §6.4): anything else is
    refused naming the argument, before anything is handed out or taken."""
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as worker:
        _submit(client, f"ty:{os.urandom(4).hex()}")
        epoch = _join_worker(worker)
        config = "netlet.errors.ConfigError"
        _error(worker.call(HEAD, "pull", worker.node, bad, 1), config, "epoch")
        _error(worker.call(HEAD, "pull", worker.node, epoch, bad), config, "want")
        _error(worker.call(HEAD, "report", worker.node, bad, _result([], [])), config, "epoch")
        _error(worker.call(HEAD, "exchange", worker.node, bad, _result([], []), 1), config,
               "epoch")
        _error(worker.call(HEAD, "exchange", worker.node, epoch, _result([], []), bad), config,
               "want")
        kind, pulled = worker.call(HEAD, "pull", worker.node, epoch, 1)
        assert (kind, len(pulled.fields[0])) == (REPLY, 1)  # nothing went to the bad pulls


def test_a_column_over_max_array_is_undecodable_and_the_link_goes_on(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """§12: `max_array` (1 Mi elements): a longer column makes the CALL undecodable,
    ERROR DecodeError for its id; the connection stays open."""
    with _connect(keyed_server, key) as worker:
        epoch = _join_worker(worker)
        huge = [""] * ((1 << 20) + 1)
        _error(worker.call(HEAD, "report", worker.node, epoch,
                           Record(REPORT, huge, [], [], [], [], [], [])),
               "netlet.errors.DecodeError")
        assert worker.call(HEAD, "heartbeat", worker.node, None, epoch, [], 0) == (REPLY, True)


def test_submits_are_idempotent_and_a_cancel_before_the_submit_wins(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.2: copies of a submit change nothing; so does a submit of a cancelled id."""
    with _connect(keyed_server, key) as client:
        sink = _submit(client, "id:1", "id:2")
        tasks = Record(TASKS, ["id:1", "id:2", "id:3"], ["m:add"] * 3, [BODY] * 3, [0] * 3)
        assert client.call(HEAD, "submit", client.node, sink, tasks, {}) == (REPLY, 1)
        assert client.call(HEAD, "submit", client.node, sink, tasks, {}) == (REPLY, 0)
        assert client.call(HEAD, "cancel", ["id:9"])[0] == REPLY  # never submitted
        assert client.call(HEAD, "submit", client.node, sink,
                           Record(TASKS, ["id:9"], ["m:add"], [BODY], [0]), {}) == (REPLY, 0)
        assert client.call(HEAD, "resume", client.node, sink, ["id:1", "id:404"])[1] \
            == ["id:404"]
        kind, cancelled = client.call(HEAD, "cancel", ["id:1", "id:2", "id:3"])
        assert kind == REPLY
        assert sorted(cancelled) == ["id:1", "id:2", "id:3"]


def test_a_pull_gets_at_most_its_share(keyed_server: tuple[str, int], key: bytes) -> None:
    """16.2: `want` is capped at the worker's share: queued and handed-out-unstarted
    tasks over the live workers, rounded up, less the unstarted ones it holds."""
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as a, \
            _connect(keyed_server, key) as b:
        ea, eb = _join_worker(a), _join_worker(b)
        _submit(client, *(f"sh:{i}" for i in range(5)))  # share: ceil(5 / 2) = 3
        _, pulled = a.call(HEAD, "pull", a.node, ea, 100)
        assert len(pulled.fields[0]) == 3
        _, pulled = a.call(HEAD, "pull", a.node, ea, 100)  # holds its whole share
        assert pulled.fields[0] == []
        _, pulled = b.call(HEAD, "pull", b.node, eb, 100)
        assert len(pulled.fields[0]) == 2
        client.call(HEAD, "cancel", [f"sh:{i}" for i in range(5)])


def test_task_output_forwards_only_what_the_lease_holder_may_say(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """§17: entries with a stream other than 1 or 2, a text over 65,536 characters or
    a lease the worker does not hold are ignored; the rest reach the client's sink."""
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as worker:
        _submit(client, "out:1")
        epoch = _join_worker(worker)
        _, pulled = worker.call(HEAD, "pull", worker.node, epoch, 1)
        (lease,) = pulled.fields[3]
        entries = [("out:1", lease, 3, "bad stream\n"), ("out:1", "forged", 1, "bad lease\n"),
                   ("out:1", lease, 1, "x" * 65_537), ("out:1", lease, 2, "to stderr\n")]
        output = Record(TASK_OUTPUT, *map(list, zip(*entries, strict=True)))
        worker.start_call(HEAD, "task_output", worker.node, output, oneway=True)
        cid, method, (lines,) = _next_sink_call(client)
        assert (cid, method, lines.wire_id) == (0, "output", OUTPUT_LINES)
        desc, tids, streams, texts = lines.fields
        assert desc == [worker.node, "foreign", "box", 4242]  # a bare WorkerDesc
        assert (tids, streams, texts) == (["out:1"], [2], ["to stderr\n"])
        worker.call(HEAD, "report", worker.node, epoch, _result(["out:1"], [lease]))
        assert _delivery(client).fields[0] == ["out:1"]


def test_names_subscribe_and_status_speak_the_documented_shapes(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.6: register/lookup/names/unregister, a subscriber's MemberEvent with a bare
    JoinInfo, and the keys of status()."""
    with _connect(keyed_server, key) as member, _connect(keyed_server, key) as worker:
        config = "netlet.errors.ConfigError"
        _error(member.call(HEAD, "register", "svc", "not a ref", member.node), config)
        _error(member.call(HEAD, "register", "", Ref(member.node, "", "svc"), member.node),
               config)
        _error(member.call(HEAD, "register", "svc", Ref(member.node, "", "svc"), worker.node),
               "builtins.PermissionError")
        name = f"svc-{member.node[:6]}"
        assert member.call(HEAD, "register", name, Ref(member.node, "", "svc"),
                           member.node) == (REPLY, None)
        kind, ref = member.call(HEAD, "lookup", name)
        assert (kind, ref.node, ref.name) == (REPLY, member.node, "svc")
        kind, names = member.call(HEAD, "names")
        assert (kind, names.wire_id) == (REPLY, NAMES)
        assert [name, "object", "", member.node] in names.fields[0]  # bare NameEntry arrays
        assert member.call(HEAD, "lookup", "nobody") == (REPLY, None)

        _error(member.call(HEAD, "subscribe", "not a sink"), config, "sink")
        assert member.call(HEAD, "subscribe", Ref(member.node, "", "events")) == (REPLY, None)
        _join_worker(worker)
        while True:
            kind, cid, target, method, (event,), _ = member.recv_message()
            assert (kind, target, method) == (CALL, "events", "event")
            assert event.wire_id == MEMBER_EVENT
            if event.fields[1] == worker.node:
                break
        assert cid == 0
        ev_kind, _, role, info, _ = event.fields
        assert (ev_kind, role, info) == ("join", "worker", ["foreign", "box", 4242, "", 1])

        kind, status = member.call(HEAD, "status")
        assert kind == REPLY
        for k, t in (("head", str), ("started", float), ("nodes", list), ("names", dict),
                     ("queued", int), ("running", int), ("refused_results", int),
                     ("results_waiting", int), ("paused", bool)):
            assert type(status[k]) is t, k
        assert status["names"][name] == ["object", "", member.node]
        ours = next(n for n in status["nodes"] if n["node"] == worker.node)
        assert {"node", "role", "alive", "name", "address", "host", "pid", "since",
                "heartbeat_age", "running", "done", "failed", "held",
                "results_waiting"} <= set(ours)
        assert member.call(HEAD, "unregister", name) == (REPLY, True)
        assert member.call(HEAD, "unregister", name) == (REPLY, False)
        _error(member.call(HEAD, "dashboard", "no such view", None), config)
        kind, stats = member.call(HEAD, "dashboard", "statistics", None)  # 16.3
        assert kind == REPLY
        assert {"head", "address", "started", "time", "workers", "clients", "tasks", "names",
                "actors", "last_event", "tracking", "task_seconds",
                "dispatch_seconds"} <= set(stats)
        assert {"bounds", "counts", "total"} <= set(stats["task_seconds"])


def test_shipping_code_needs_the_right_role(keyed_server: tuple[str, int], key: bytes) -> None:
    """§17: code_missing and code_put answer a client only, code_size and code_get a
    worker only: anything else is ERROR ConfigError."""
    with _connect(keyed_server, key) as worker:
        _join_worker(worker)
        digest = "0" * 64
        config = "netlet.errors.ConfigError"
        _error(worker.call(HEAD, "code_missing", worker.node, [digest]), config)
        _error(worker.call(HEAD, "code_put", worker.node, digest, 1, 0, b"x"), config)
        assert worker.call(HEAD, "code_size", worker.node, digest) == (REPLY, -1)
        _error(worker.call(HEAD, "code_get", worker.node, digest, 0, 1), config)
    with _connect(keyed_server, key) as client:
        _submit(client, f"code:{os.urandom(4).hex()}")
        _error(client.call(HEAD, "code_size", client.node, digest), config)
        kind, missing = client.call(HEAD, "code_missing", client.node, [digest])
        assert (kind, missing) == (REPLY, [digest])
        _error(client.call(HEAD, "code_missing", client.node, [digest] * 65), config, "64")


def test_a_worker_that_dies_charges_the_task_it_ran_and_frees_the_rest(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.2: a started task (or the oldest unstarted hand-out of a worker running
    none) is charged an attempt; past `retries` it ends with WorkerLost (16.4: an
    error made by the head, body nil). Others lost before they started go back free."""
    with _connect(keyed_server, key) as client:
        _submit(client, "wl:1", "wl:2")
        with _connect(keyed_server, key) as worker:
            epoch = _join_worker(worker)
            _, pulled = worker.call(HEAD, "pull", worker.node, epoch, 2)
            assert pulled.fields[0] == ["wl:1", "wl:2"]
        ids, oks, bodies, errors = _delivery(client).fields  # retries 0: no second try
        assert (ids, oks, bodies) == (["wl:1"], [False], [None])
        assert errors[0].type_name == "netlet.errors.WorkerLost"
        kind, status = client.call(HEAD, "status")
        assert (kind, status["queued"], status["running"]) == (REPLY, 1, 0)


def test_unrunnable_from_the_lease_holder_fails_the_task_once_all_workers_said_so(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """§17: without the current lease, `unrunnable` is counted and changes nothing;
    from every live worker, the task fails with ConfigError carrying the message."""
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as worker:
        _submit(client, "un:1", fn="nowhere:f")
        epoch = _join_worker(worker)
        _, pulled = worker.call(HEAD, "pull", worker.node, epoch, 1)
        (lease,) = pulled.fields[3]
        before = _refused(client)
        assert worker.call(HEAD, "unrunnable", worker.node, "un:1", "forged", "no") == (
            REPLY, None)
        assert _refused(client) == before + 1
        assert worker.call(HEAD, "unrunnable", worker.node, "un:1", lease,
                           "No module named 'nowhere'") == (REPLY, None)
        ids, oks, bodies, errors = _delivery(client).fields
        assert (ids, oks, bodies) == (["un:1"], [False], [None])
        assert errors[0].type_name == "netlet.errors.ConfigError"
        assert "No module named 'nowhere'" in errors[0].message
        # later submits of that function fail the same way, without a worker
        sink = Ref(client.node, "", "sink")
        assert client.call(HEAD, "submit", client.node, sink,
                           Record(TASKS, ["un:2"], ["nowhere:f"], [BODY], [0]), {})[0] == REPLY
        ids, _, _, errors = _delivery(client).fields
        assert (ids, errors[0].type_name) == (["un:2"], "netlet.errors.ConfigError")


def test_give_back_is_called_on_the_control_object_and_answered_by_the_worker(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.4: while a worker waits for work and another holds unstarted tasks, the head
    calls `give_back(epoch, ids)` on the holder's control object; the ids it answers
    are queued again and reach the waiting worker."""
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as a, \
            _connect(keyed_server, key) as b:
        kind, joined = a.call(HEAD, "join", a.node, "worker", _info(),
                              Ref(a.node, "", "netlet.worker"))
        ea = joined.fields[3]
        _submit(client, "gb:1", "gb:2")
        _, pulled = a.call(HEAD, "pull", a.node, ea, 2)
        assert pulled.fields[0] == ["gb:1", "gb:2"]
        eb = _join_worker(b)
        waiting = b.start_call(HEAD, "pull", b.node, eb, 2)
        kind, cid, target, method, args, _ = a.recv_message()
        assert (kind, target, method) == (CALL, "netlet.worker", "give_back")
        assert cid != 0
        epoch, asked = args
        assert epoch == ea
        assert asked == ["gb:2"]  # all but one: a runs none yet
        a.send_frame(encode([REPLY, cid, asked]))
        kind, got, pulled = b.recv_message()
        assert (kind, got, pulled.fields[0]) == (REPLY, waiting, ["gb:2"])


def _hex(text: str) -> bytes:
    return bytes.fromhex(" ".join(w for w in text.split() if len(w) == 2))


def test_the_documented_join_bytes_get_the_documented_answer(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.1 Example: the join frame sent byte for byte, by a connection whose node id
    is "w1"; the answer is laid out as documented (floats as float64)."""
    join = _hex("""00 00 00 4e 00 00 00 00 96 01 01
        ab 6e 65 74 6c 65 74 2e 68 65 61 64 a4 6a 6f 69 6e 94 a2 77 31
        a6 77 6f 72 6b 65 72 c7 0e 11 96 14 a2 77 31 a3 62 6f 78 cd 10 92 a0 08
        c7 1a 0c 94 a2 77 31 a0 ad 6e 65 74 6c 65 74 2e 77 6f 72 6b 65 72
        a6 6f 62 6a 65 63 74 c0""")
    assert len(join) == 8 + 0x4E
    with Client(keyed_server, node="w1") as w:
        w.handshake(key)
        w.sock.sendall(join)
        w._next_id = 2  # the join used call id 1 (§5.4: a reused id is never answered)
        body, buffers = w.recv_frame()
        assert buffers == []
        epoch = msgpack.unpackb(body)[2].data[-1:]  # a fixint epoch: the last byte
        epoch_value = msgpack.unpackb(epoch)
        assert type(epoch_value) is int
        payload = (b"\x95\x15" + msgpack.packb(w.server["node"])
                   + _hex("cb 3f e0 00 00 00 00 00 00 cb 40 08 00 00 00 00 00 00") + epoch)
        assert body == bytes([0x93, 0x02, 0x01, 0xC7, len(payload), 0x11]) + payload
        assert w.call(HEAD, "heartbeat", "w1", None, epoch_value, [], 0) == (REPLY, True)


def test_a_connection_that_does_not_own_its_id_acts_for_no_member(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16 and §4.8: a second connection announcing a live owner's id is served, but the
    head refuses it anything that names a member (PermissionError)."""
    with _connect(keyed_server, key) as owner:
        epoch = _join_worker(owner)
        with Client(keyed_server, node=owner.node) as twin:
            twin.handshake(key)
            _error(twin.call(HEAD, "pull", owner.node, epoch, 1), "builtins.PermissionError")
            _error(twin.call(HEAD, "join", owner.node, "worker", _info(), None),
                   "builtins.PermissionError")
            kind, _ = twin.call(HEAD, "status")  # naming nobody: served
            assert kind == REPLY
        # Meanwhile the server PINGs the owner (§4.8), which answers and keeps its id.
        cid = owner.start_call(HEAD, "heartbeat", owner.node, None, epoch, [], 0)
        while (msg := owner.recv_message())[0] == PING:
            owner.send_frame(encode([PONG, msg[1]]))
        assert msg == [REPLY, cid, True]


def test_a_spawn_the_head_cannot_place_is_a_config_error(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.6: a taken name, another `restart`, or no worker that can host it: ConfigError."""
    with _connect(keyed_server, key) as member:
        body = msgpack.packb([[], None])
        config = "netlet.errors.ConfigError"
        _error(member.call(HEAD, "spawn", "m:C", body, "obj", None, {}, member.node), config,
               "no worker")
        _error(member.call(HEAD, "spawn", "m:C", body, "obj", "always", {}, member.node), config,
               "restart")
        assert member.call(HEAD, "register", "taken", Ref(member.node, "", "svc"),
                           member.node) == (REPLY, None)
        _join_worker(member)
        _error(member.call(HEAD, "spawn", "m:C", body, "taken", None, {}, member.node), config,
               "taken")


def test_a_package_uploaded_in_chunks_is_checked_then_served_to_workers(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """§17: code_put appends at `offset` and returns the bytes held (`size` once
    complete); a SHA-256 mismatch drops it (ConfigError); at most 4 uploads in progress
    per client; a worker reads the package with code_size and code_get."""
    config = "netlet.errors.ConfigError"
    data = os.urandom(3000)
    digest = hashlib.sha256(data).hexdigest()
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as worker:
        _submit(client, "pkg:1")
        assert client.call(HEAD, "code_put", client.node, digest, 3000, 0, data[:1000]) == (
            REPLY, 1000)
        _error(client.call(HEAD, "code_put", client.node, digest, 3000, 500, data[500:]),
               config, "follow")  # not at the bytes held
        assert client.call(HEAD, "code_put", client.node, digest, 3000, 1000, data[1000:]) == (
            REPLY, 3000)
        assert client.call(HEAD, "code_missing", client.node, [digest]) == (REPLY, [])
        wrong = hashlib.sha256(b"other").hexdigest()
        _error(client.call(HEAD, "code_put", client.node, wrong, 4, 0, b"data"), config,
               "SHA-256")
        assert client.call(HEAD, "code_missing", client.node, [wrong]) == (REPLY, [wrong])
        partial = [hashlib.sha256(bytes([i])).hexdigest() for i in range(5)]
        for d in partial[:4]:
            assert client.call(HEAD, "code_put", client.node, d, 2, 0, b"x") == (REPLY, 1)
        _error(client.call(HEAD, "code_put", client.node, partial[4], 2, 0, b"x"), config,
               "at most 4")
        _join_worker(worker)
        assert worker.call(HEAD, "code_size", worker.node, digest) == (REPLY, 3000)
        assert worker.call(HEAD, "code_get", worker.node, digest, 1000, 5000) == (
            REPLY, data[1000:])


def test_a_give_back_answered_with_an_error_leaves_the_tasks_with_the_worker(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.4: tasks stay with the worker when `give_back` answers an ERROR; a cancel of
    them then returns none of them."""
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as a:
        _, joined = a.call(HEAD, "join", a.node, "worker", _info(),
                           Ref(a.node, "", "netlet.worker"))
        ea = joined.fields[3]
        _submit(client, "ge:1")
        _, pulled = a.call(HEAD, "pull", a.node, ea, 1)
        assert pulled.fields[0] == ["ge:1"]
        cancelling = client.start_call(HEAD, "cancel", ["ge:1"])
        kind, cid, target, method, args, _ = a.recv_message()
        assert (kind, target, method, args) == (CALL, "netlet.worker", "give_back", [ea, ["ge:1"]])
        a.send_frame(encode([ERROR, cid, _an_exception()]))
        assert client.recv_message() == [REPLY, cancelling, []]
        assert a.call(HEAD, "report", a.node, ea, _result(["ge:1"], pulled.fields[3])) == (
            REPLY, None)
        assert _delivery(client).fields[:2] == [["ge:1"], [True]]


def _an_exception() -> msgpack.ExtType:
    """An exception (ext 11, §7): [type name, args as ext 0, message, traceback]."""
    args = msgpack.ExtType(0, msgpack.packb(["no"]))
    return msgpack.ExtType(11, msgpack.packb(["builtins.RuntimeError", args, "no", ""]))


def test_a_sink_that_is_not_a_reference_is_refused_and_queues_nothing(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.2: `sink` is a REF the head calls back (16.4); anything else would leave the
    tasks' results with nowhere to go: ConfigError naming the sink, nothing queued."""
    with _connect(keyed_server, key) as client:
        client.call(HEAD, "join", client.node, "client", Record(JOIN_INFO, "", "b", 1, "", 0),
                    None)
        tasks = Record(TASKS, ["sk:1"], ["m:f"], [BODY], [0])
        config = "netlet.errors.ConfigError"
        _error(client.call(HEAD, "submit", client.node, "not a ref", tasks, {}), config, "sink")
        _error(client.call(HEAD, "resume", client.node, 7, []), config, "sink")
        kind, status = client.call(HEAD, "status")
        assert (kind, status["queued"]) == (REPLY, 0)
        sink = Ref(client.node, "", "sink")
        assert client.call(HEAD, "submit", client.node, sink, tasks, {}) == (REPLY, 1)


@pytest.mark.parametrize(("what", "args"), [("tasks", {"limit": "x"}), ("tasks", [1]),
                                            ("events", "x"), ("events", {"after": None})])
def test_dashboard_arguments_of_the_wrong_type_are_a_config_error(
        keyed_server: tuple[str, int], key: bytes, what: str, args: Any) -> None:
    """16.3: `args` is a map (or nil) with the documented keys; ints where ints belong."""
    with _connect(keyed_server, key) as c:
        _error(c.call(HEAD, "dashboard", what, args), "netlet.errors.ConfigError")
        assert c.call(HEAD, "dashboard", what, None)[0] == REPLY


def test_exchange_takes_the_report_then_hands_out_the_next_task(
        keyed_server: tuple[str, int], key: bytes) -> None:
    """16.2: `exchange` is a `report` then a `pull` in one round trip."""
    with _connect(keyed_server, key) as client, _connect(keyed_server, key) as worker:
        _submit(client, "ex:1", "ex:2")
        epoch = _join_worker(worker)
        _, first = worker.call(HEAD, "pull", worker.node, epoch, 1)
        assert first.fields[0] == ["ex:1"]
        kind, second = worker.call(HEAD, "exchange", worker.node, epoch,
                                   _result(["ex:1"], first.fields[3]), 1)
        assert (kind, second.wire_id, second.fields[0]) == (REPLY, PULLED, ["ex:2"])
        assert second.fields[5] > first.fields[5]
        assert _delivery(client).fields[0] == ["ex:1"]
