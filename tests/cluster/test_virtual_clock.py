"""The head's heartbeat timeout on a virtual clock, exactly at ``dead_after``.

The head runs on a real node over TCP whose clock is a ``VirtualClock``; a
member joins as a worker from another node and then says nothing (or
heartbeats when the test says). It is declared dead the moment it has been
silent for ``dead_after`` seconds of the head's clock, and not an instant before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import netlet
from netlet.cluster import Head, HeadConfig
from netlet.cluster._member_messages import JoinInfo
from netlet.testing import VirtualClock
from tests._support import wait_until

KEY = bytes(range(32))
STEP = 0.0625  # exact in binary

NodeFactory = Callable[..., netlet.Node]
WORKER = JoinInfo("test", "", 1, "", 1)


@pytest.fixture
def head(node_factory: NodeFactory) -> Iterator[tuple[Head, netlet.Proxy, str, VirtualClock]]:
    clock = VirtualClock()
    node = node_factory("tcp://127.0.0.1:0", key=KEY, call_timeout=None, clock=clock)
    head = Head(node, HeadConfig(heartbeat=0.5, dead_after=3.0, pull_wait=1.0))
    node.serve(head, "netlet.head")
    head.start()
    assert node.address is not None
    member = node_factory(key=KEY)
    proxy = member.proxy(node.address, "netlet.head", timeout=10)
    proxy.join(member.id, "worker", WORKER, None)
    # The node's watchdog and the head's sweep are both waiting on the clock.
    wait_until(lambda: clock.pending >= 2, what="the head's sweep to wait on the clock")
    yield head, proxy, member.id, clock
    head.stop()


def _alive(head: Head, node: str) -> bool:
    member = head._members.get(node)
    return member is not None and member.alive


@pytest.mark.timeout(30)
def test_a_silent_worker_is_declared_dead_exactly_at_dead_after(
        head: tuple[Head, netlet.Proxy, str, VirtualClock]) -> None:
    h, _, node, clock = head
    clock.advance(3.0 - STEP)  # just before: alive
    assert _alive(h, node)
    clock.advance(STEP)  # silent for exactly dead_after: dead, with no real wait
    assert not _alive(h, node)


@pytest.mark.timeout(30)
def test_a_heartbeat_moves_the_boundary(
        head: tuple[Head, netlet.Proxy, str, VirtualClock]) -> None:
    h, proxy, node, clock = head
    clock.advance(2.5)
    assert proxy.heartbeat(node) is True  # heard at +2.5: now dead at +5.5
    clock.advance(3.0 - STEP)
    assert _alive(h, node)
    clock.advance(STEP)
    assert not _alive(h, node)
    assert proxy.heartbeat(node) is False  # declared dead: it must join again
