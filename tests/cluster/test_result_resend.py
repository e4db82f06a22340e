"""A result delivery that times out is sent again; the client takes the copy harmlessly.

The head calls a client's ``results`` with a 30 s timeout and keeps the
results until the call returns. On a slow link the first call may have
reached the client although its reply did not come back in time: the head
sends the same results again, and the client gets them twice. The head here
runs on a ``VirtualClock`` (its call deadlines and retry timer follow it), so
the timeout is reached by advancing the clock, with no real wait; the first
delivery is held unanswered by a client sink until then.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest

import netlet
from netlet.cluster import Cluster, Head, HeadConfig
from netlet.cluster._member_messages import JoinInfo
from netlet.cluster._messages import Delivery, Finished, Report, Tasks
from netlet.codec import Codec
from netlet.node import expose
from netlet.testing import VirtualClock
from tests._support import wait_until

KEY = bytes(range(32))

NodeFactory = Callable[..., netlet.Node]


WORKER = JoinInfo("test", "", 1, "", 1)
CLIENT = JoinInfo("", "", 1, "", 0)



@expose(concurrent=True)
class _SlowSink:
    """A client's sink whose first ``results`` call answers only when released."""

    def __init__(self) -> None:
        self.calls: list[list[Finished]] = []
        self.release = threading.Event()

    async def results(self, delivery: Delivery) -> None:
        self.calls.append(list(delivery.rows()))
        if len(self.calls) == 1:
            await asyncio.to_thread(self.release.wait, 20)

    async def started(self, tids: list[str]) -> None:
        pass


@pytest.fixture
def head(node_factory: NodeFactory) -> Iterator[tuple[Head, str, VirtualClock]]:
    clock = VirtualClock()
    node = node_factory("tcp://127.0.0.1:0", key=KEY, call_timeout=None, clock=clock,
                        keepalive=None)
    head = Head(node, HeadConfig(heartbeat=0.5, dead_after=10_000.0, pull_wait=1.0))
    node.serve(head, "netlet.head")
    head.start()
    assert node.address is not None
    yield head, node.address, clock
    head.stop()


def _run_one(node_factory: NodeFactory, address: str, value: int) -> None:
    """A worker by hand: join, take the one queued task, report ``value`` for it."""
    worker = node_factory(key=KEY)
    h = worker.proxy(address, "netlet.head", timeout=10)
    epoch = h.join(worker.id, "worker", WORKER, None).epoch
    ((tid, _, _, lease),) = h.pull(worker.id, epoch, 1).rows()
    h.report(worker.id, epoch, Report.of(
        [(tid, True, Codec().encode_value(value), lease, None, None)], []))


@pytest.mark.timeout(30)
def test_a_delivery_that_timed_out_is_sent_again(
        head: tuple[Head, str, VirtualClock], node_factory: NodeFactory) -> None:
    h, address, clock = head
    client = node_factory(key=KEY)
    sink = _SlowSink()
    proxy = client.proxy(address, "netlet.head", timeout=10)
    proxy.join(client.id, "client", CLIENT, None)
    assert proxy.submit(client.id, sink, Tasks(["c:1"], ["tests.cluster.tasks:add"], [b""], [0]),
                        {}) == 1
    _run_one(node_factory, address, 42)
    wait_until(lambda: sink.calls, what="the first delivery")
    try:
        clock.advance(29.9)  # not yet: the head still waits for the first call
        assert client.id in h._delivering
        assert not h._outbox.get(client.id)
        assert len(sink.calls) == 1
        clock.advance(0.2)  # the call timed out: the head keeps the result...
        wait_until(lambda: h._outbox.get(client.id), what="the result back in the outbox")
        clock.advance(1.0)  # ...and sends it again a second later
        wait_until(lambda: len(sink.calls) == 2, what="the second delivery")
    finally:
        sink.release.set()
    assert [r[0] for r in sink.calls[0]] == [r[0] for r in sink.calls[1]] == ["c:1"]
    wait_until(lambda: "c:1" not in h.scheduler.tasks, what="the head forgetting the result")
    assert h._undelivered == 0


@pytest.mark.timeout(30)
def test_a_client_takes_a_second_copy_of_a_result_harmlessly(
        head: tuple[Head, str, VirtualClock], node_factory: NodeFactory) -> None:
    """The real client: its future is set once; the copy raises nothing, changes nothing."""
    h, address, _ = head
    cluster = Cluster(address, key=KEY)
    try:
        future = cluster.submit(abs, -5)
        _run_one(node_factory, address, 5)
        assert future.result(10) == 5
        copy = Delivery([future.task_id], [True], [Codec().encode_value(1337)], [None])
        sink = h._clients[cluster.node.id]  # the head's proxy to the client's sink
        assert sink.results(copy) is None  # the resend, over the real link
        assert future.result(0) == 5
        assert cluster.submit(abs, -6) is not None  # the client goes on as before
    finally:
        cluster.close()
