"""Many senders and receivers in three processes on one channel: every value arrives once.

The channel lives in the owner process. Senders and receivers run in all three
processes: the owner (on the local ``Channel``), a second ``channel_owner.py``
process and this one (both through ``RemoteChannel``). When every sender is done
the channel is closed; receivers stop when it is closed and drained. Then the
values received everywhere must be exactly the values sent, each once, and each
receiver must have seen any one sender's values in the order they were sent.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netlet
from netlet import ChannelClosed
from tests.channel.conftest import STEP, OwnerProcess


class _LocalJob:
    """The same job as the worker's, in this process."""

    def __init__(self, ch: Any, senders: list[list[Any]], receivers: int) -> None:
        self.ch = ch
        self.errors: list[str] = []
        self.received: list[list[Any]] = [[] for _ in range(receivers)]
        self.senders = [threading.Thread(target=self._send, args=(v,)) for v in senders]
        self.receivers = [threading.Thread(target=self._receive, args=(g,))
                          for g in self.received]
        for t in self.receivers + self.senders:
            t.start()

    def _send(self, values: list[Any]) -> None:
        try:
            for v in values:
                self.ch.send(v, STEP)
        except Exception as e:
            self.errors.append(f"send: {e!r}")

    def _receive(self, got: list[Any]) -> None:
        try:
            while True:
                got.append(self.ch.receive(STEP))
        except ChannelClosed:
            pass
        except Exception as e:
            self.errors.append(f"receive: {e!r}")

    def senders_done(self) -> list[str]:
        for t in self.senders:
            t.join(STEP)
        return list(self.errors)

    def results(self) -> list[Any]:
        for t in self.receivers:
            t.join(STEP)
        return [self.received, self.errors]


@pytest.fixture(scope="module")
def three(owner: OwnerProcess) -> Iterator[tuple[OwnerProcess, OwnerProcess, netlet.Node]]:
    """The owner, a second process, and a node for this (third) process."""
    other = OwnerProcess.start()
    node = netlet.Node()
    try:
        yield owner, other, node
    finally:
        node.close()
        other.stop()


Plan = list[tuple[list[int], int]]
"""Per process (owner, other, this one): values per sender, and how many receivers."""


def deliver(three: tuple[OwnerProcess, OwnerProcess, netlet.Node], buffer: int,
            plan: Plan) -> None:
    owner, other, node = three
    control = owner.control(node)
    name = control.new_channel(buffer)
    sent = [[(p, k, i) for i in range(n)] for p, (counts, _) in enumerate(plan)
            for k, n in enumerate(counts)]

    def senders_of(p: int) -> list[list[Any]]:
        return [[(p, k, i) for i in range(n)] for k, n in enumerate(plan[p][0])]

    owner_worker, other_worker = owner.worker(node), other.worker(node)
    owner_job = owner_worker.start("", name, senders_of(0), plan[0][1], STEP)
    other_job = other_worker.start(owner.address, name, senders_of(1), plan[1][1], STEP)
    rc = netlet.connect_channel(owner.address, name, node=node)
    here = _LocalJob(rc, senders_of(2), plan[2][1])

    errors = (owner_worker.senders_done(owner_job, STEP)
              + other_worker.senders_done(other_job, STEP) + here.senders_done())
    assert errors == []
    rc.close()  # every value sent is taken or buffered: receivers drain, then stop
    received: list[list[Any]] = []
    for got, errs in (owner_worker.results(owner_job, STEP),
                      other_worker.results(other_job, STEP), here.results()):
        assert errs == []
        received.extend([tuple(v) for v in r] for r in got)

    everything = Counter(v for r in received for v in r)
    assert everything == Counter(v for s in sent for v in s)  # each value exactly once
    for r in received:  # per receiver, one sender's values come in sending order
        last: dict[tuple[int, int], int] = {}
        for p, k, i in r:
            assert last.get((p, k), -1) < i
            last[(p, k)] = i
    stats = rc.statistics()
    assert stats.sent == stats.received == len(everything)


process_plan = st.tuples(st.lists(st.integers(0, 20), max_size=3), st.integers(0, 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buffer=st.sampled_from([0, 1, 5]),
       plan=st.lists(process_plan, min_size=3, max_size=3),
       fallback=st.integers(0, 2))
def test_every_value_arrives_exactly_once(
        three: tuple[OwnerProcess, OwnerProcess, netlet.Node], buffer: int,
        plan: Plan, fallback: int) -> None:
    if not any(receivers for _, receivers in plan):  # someone must receive
        plan[fallback] = (plan[fallback][0], 1)
    deliver(three, buffer, plan)


def test_many_senders_and_receivers_in_three_processes(
        three: tuple[OwnerProcess, OwnerProcess, netlet.Node]) -> None:
    deliver(three, 0, [([100] * 4, 3), ([100] * 4, 3), ([100] * 4, 3)])
