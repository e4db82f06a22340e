"""A client of a head reports a result for another client's task.

Attack: task ids were the submitting client's node id (shown by ``status()``)
plus a counter, and the head took a result for a task from anyone. So another
client of the same head read the victim's id from ``status()``, reported
``[victim_id[:12] + ":1", True, <1337>]`` and the victim's future returned
1337. Now a task is handed out with a lease (a random fencing token) that must
come back with its result: the head accepts a result only from the worker
holding the task's current lease, refuses anything else (a forgery, a late
result from an expired lease, a duplicate) and counts each refusal once. Task
ids no longer derive from the node id.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

import netlet
from netlet.cluster import Cluster, Head, HeadConfig
from netlet.cluster._member_messages import JoinInfo
from netlet.cluster._messages import Report, Tasks
from netlet.cluster._worker import Worker, WorkerOptions
from netlet.codec import Codec
from netlet.errors import ConfigError, NoSuchObject
from tests.conftest import RawClient

KEY = bytes(range(32))

NodeFactory = Callable[..., netlet.Node]


WORKER = JoinInfo("test", "", 1, "", 1)
CLIENT = JoinInfo("", "", 1, "", 0)


def forty_two() -> int:
    return 42


@pytest.fixture
def head(node_factory: NodeFactory) -> Iterator[tuple[str, Head]]:
    node = node_factory("tcp://127.0.0.1:0", key=KEY, call_timeout=None)
    head = Head(node, HeadConfig(heartbeat=0.2, dead_after=30.0, pull_wait=0.2))
    node.serve(head, "netlet.head")
    head.start()
    assert node.address is not None
    yield node.address, head
    head.stop()


@pytest.fixture
def clusters() -> Iterator[list[Cluster]]:
    made: list[Cluster] = []
    yield made
    for c in made:
        c.close()


def _wait(cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _codec() -> Codec:
    return Codec()


def test_another_client_cannot_complete_my_task(head: tuple[str, Head],
                                                node_factory: NodeFactory,
                                                clusters: list[Cluster]) -> None:
    address, head_obj = head
    victim = Cluster(address, key=KEY)
    clusters.append(victim)
    fut = victim.submit(forty_two)  # no worker yet: it waits in the queue
    _wait(lambda: head_obj._tasks)
    attacker = node_factory(key=KEY)
    evil = attacker.proxy(address, "netlet.head", timeout=5)
    evil.join(attacker.id, "client", CLIENT, None)
    # What the attacker could learn: every member's node id.
    status = evil.status()
    guessed = [n["node"][:12] + ":1" for n in status["nodes"]]
    real = next(iter(head_obj._tasks))  # the worst case: it knows the real id too
    forged = _codec().encode_value(1337)
    for tid in [*guessed, real]:
        for worker in (attacker.id, ""):
            for report in ([tid, True, forged], Report([tid], [True], [forged], [""], [None],
                                                       [None], []),
                           Report.of([(tid, True, forged, "0" * 24, None, None)], [])):
                with contextlib.suppress(Exception):  # refused, or not even understood
                    evil.report(worker, 0, report if isinstance(report, Report) else [report])
    assert not fut.done(), f"a forged result completed another client's task: {fut.result()}"
    assert head_obj.refused_results >= 2 * (len(guessed) + 1)
    with pytest.raises(ConfigError):
        evil.report(attacker.id, 0, [[real, True, forged]])  # a result with no lease
    with pytest.raises(ConfigError, match="Tasks record"):  # the form before records
        evil.submit(attacker.id, evil, [[real, "tests.security:forty_two", b"", 0]], {})
    # A real worker then runs it: the victim gets its own result.
    worker = Worker(WorkerOptions(address, key=KEY))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert fut.result(10) == 42
    finally:
        worker.close()
        thread.join(10)


def test_task_ids_do_not_come_from_the_node_id(head: tuple[str, Head],
                                               clusters: list[Cluster]) -> None:
    address, head_obj = head
    client = Cluster(address, key=KEY)
    clusters.append(client)
    client.submit(forty_two)
    tids = _wait(lambda: list(head_obj._tasks))
    assert not any(client.node.id[:8] in tid for tid in tids)
    assert all(t not in str(client.status()) for t in tids)


def test_a_late_result_from_an_expired_lease_is_refused_and_counted_once(
        head: tuple[str, Head], node_factory: NodeFactory, clusters: list[Cluster]) -> None:
    address, head_obj = head
    client = Cluster(address, key=KEY)
    clusters.append(client)
    fut = client.submit(forty_two)
    _wait(lambda: head_obj._tasks)
    w1, w2 = node_factory(key=KEY), node_factory(key=KEY)
    h1 = w1.proxy(address, "netlet.head", timeout=5)
    h2 = w2.proxy(address, "netlet.head", timeout=5)
    e1 = h1.join(w1.id, "worker", WORKER, None).epoch
    ((tid, lease1),) = [(t[0], t[3]) for t in h1.pull(w1.id, e1, 1).rows()]
    h1.leave(w1.id)  # w1 is gone: its task goes back to the queue
    e2 = h2.join(w2.id, "worker", WORKER, None).epoch
    ((tid2, lease2),) = [(t[0], t[3]) for t in h2.pull(w2.id, e2, 1).rows()]
    assert tid2 == tid
    assert lease2 != lease1
    codec = _codec()

    def result_of(tid: str, value: int, lease: str) -> Report:
        return Report.of([(tid, True, codec.encode_value(value), lease, None, None)], [])

    with pytest.raises(NoSuchObject):  # w1 left: it must join again first
        h1.report(w1.id, e1, result_of(tid, 1337, lease1))  # late
    h2.report(w2.id, e2, result_of(tid, 1337, lease1))  # the old lease
    assert not fut.done()
    assert head_obj.refused_results == 2
    h2.report(w2.id, e2, result_of(tid, 42, lease2))  # the holder
    assert fut.result(5) == 42
    h2.report(w2.id, e2, result_of(tid, 7, lease2))  # a duplicate
    assert head_obj.refused_results == 3
    done = {n["node"]: n["done"] for n in client.status()["nodes"] if n["role"] == "worker"}
    # w1 left (a dead worker is not listed): the task is counted once, for its lease holder.
    assert done == {w2.id: 1}, "a task must be counted once, for its lease holder"


def test_another_client_cannot_act_as_me(head: tuple[str, Head], node_factory: NodeFactory,
                                         clusters: list[Cluster]) -> None:
    """Members name themselves in calls; the head holds each call to its connection's id."""
    address, head_obj = head
    victim = Cluster(address, key=KEY)
    clusters.append(victim)
    fut = victim.submit(forty_two)
    tid = _wait(lambda: list(head_obj._tasks))[0]
    attacker = node_factory(key=KEY)
    sink = attacker.serve(_Sink(), "sink")  # where it would like the victim's results
    evil = attacker.proxy(address, "netlet.head", timeout=5)
    for call in (lambda: evil.resume(victim.node.id, sink, [tid]),  # steal its results
                 lambda: evil.leave(victim.node.id),                # drop its tasks
                 lambda: evil.submit(victim.node.id, sink, Tasks.of([]), {}),  # redirect them
                 lambda: evil.join(victim.node.id, "client", CLIENT, None),
                 lambda: evil.heartbeat(victim.node.id, None),
                 lambda: evil.pull(victim.node.id, 1, 1)):
        with pytest.raises(PermissionError):
            call()
    assert evil.cancel([tid]) == []
    # The same from a connection that claims the victim's id: it owns nothing.
    with RawClient.connect(address) as raw:
        raw.node = victim.node.id
        raw.handshake(KEY)
        raw.send_msg([1, 1, "netlet.head", "leave", [victim.node.id], None])
        kind, cid, error = raw.recv_msg()
    assert (kind, cid) == (3, 1)
    assert msgpack.unpackb(error.data, raw=False)[0] == "builtins.PermissionError"
    worker = Worker(WorkerOptions(address, key=KEY))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert fut.result(10) == 42
    finally:
        worker.close()
        thread.join(10)


@netlet.expose
class _Sink:
    def results(self, batch: list[Any]) -> None:
        raise AssertionError("results reached the attacker")
