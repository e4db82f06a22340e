"""The head's scheduler driven directly: no sockets, no threads, no clock.

Unit tests for each rule, then a hypothesis state machine that plays clients,
workers and the network against it (hand-outs lost, results late, workers
rejoining) and checks the invariants after every step.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from netlet.cluster._batches import batches
from netlet.cluster._sched_records import WorkerSlot
from netlet.cluster._scheduler import (
    ASSIGNED,
    QUEUED,
    RUNNING,
    Action,
    Deliver,
    Handout,
    Reclaim,
    Scheduler,
    StaleEpoch,
    Started,
)
from netlet.errors import ConfigError, WorkerLost


def make() -> Scheduler:
    counter = itertools.count()
    return Scheduler(token=lambda: f"lease-{next(counter)}")


def specs(n: int, start: int = 0, retries: int = 3) -> list[tuple[str, str, bytes, int]]:
    return [(f"t{i}", "m:f", b"", retries) for i in range(start, start + n)]


def handouts(actions: list[Action], worker: str | None = None) -> list[Handout]:
    return [a for a in actions if isinstance(a, Handout)
            and (worker is None or a.worker == worker)]


def ids(h: Handout) -> list[str]:
    return [t.id for t in h.tasks]


def test_a_pull_takes_in_submission_order_and_results_need_the_lease() -> None:
    s = make()
    e, _ = s.join("w", 0)
    s.submit("c", specs(3), 0)
    [h] = handouts(s.pull("w", e, 2, 0))
    assert ids(h) == ["t0", "t1"]
    t0 = h.tasks[0]
    out = s.results("w", e, [("t0", True, b"x", "forged")])
    assert out == []
    assert s.refused_results == 1
    out = s.results("w", e, [("t0", True, b"x", t0.lease)])
    assert [a.result[:3] for a in out if isinstance(a, Deliver)] == [("t0", True, b"x")]
    assert s.results("w", e, [("t0", True, b"x", t0.lease)]) == []  # a duplicate
    assert s.refused_results == 2


def test_a_request_from_an_older_epoch_is_refused_whole() -> None:
    s = make()
    e1, _ = s.join("w", 0)
    s.submit("c", specs(2), 0)
    [h] = handouts(s.pull("w", e1, 1, 0))
    e2, _ = s.join("w", 1)  # the worker rejoined on a new connection
    assert e2 != e1
    with pytest.raises(StaleEpoch):
        s.pull("w", e1, 1, 2)  # a late request on the old connection
    assert s.queued == 1, "nothing may be handed out on a stale request"
    with pytest.raises(StaleEpoch):
        s.results("w", e1, [(h.tasks[0].id, True, b"", h.tasks[0].lease)])
    # The lease itself still counts on the current epoch.
    out = s.results("w", e2, [(h.tasks[0].id, True, b"", h.tasks[0].lease)])
    assert any(isinstance(a, Deliver) for a in out)


def test_a_heartbeat_requeues_what_the_worker_does_not_hold() -> None:
    s = make()
    e, _ = s.join("w", 0)
    s.submit("c", specs(3), 0)
    [h] = handouts(s.pull("w", e, 3, 0))
    s.started("w", e, ["t0"])
    # The worker saw that hand-out but holds only t1 (the reply carrying t0 and t2
    # met a reset on its way, say).
    s.heartbeat("w", e, ["t1"], h.seq, 1)
    assert s.holds("w") == {"t1"}
    assert s.queued == 2
    assert s.tasks["t0"].attempts == 1
    assert s.tasks["t2"].attempts == 0
    # A hand-out the worker has not seen yet is not judged.
    e2, _ = s.join("v", 0)
    [h2] = handouts(s.pull("v", e2, 5, 0))
    s.heartbeat("v", e2, [], h2.seq - 1, 1)
    assert s.holds("v") == set(ids(h2))


def test_submit_wakes_one_parked_worker_per_task() -> None:
    s = make()
    epochs = {f"w{i}": s.join(f"w{i}", 0)[0] for i in range(32)}
    for w, e in epochs.items():
        assert s.pull(w, e, 4, 0) == []  # parked
    _, out = s.submit("c", specs(1), 1)
    assert [(h.worker, ids(h)) for h in handouts(out)] == [("w0", ["t0"])]
    _, out = s.submit("c", specs(1, 1), 1)
    assert [h.worker for h in handouts(out)] == ["w1"]


def test_a_worker_takes_no_more_than_its_share() -> None:
    s = make()
    epochs = {f"w{i}": s.join(f"w{i}", 0)[0] for i in range(5)}
    for w, e in epochs.items():
        s.pull(w, e, 65, 0)
    _, out = s.submit("c", specs(50), 0)
    sizes = {h.worker: len(h.tasks) for h in handouts(out)}
    assert sizes == dict.fromkeys(epochs, 10)


def test_an_idle_worker_gets_tasks_another_has_not_started() -> None:
    s = make()
    ea, _ = s.join("a", 0)
    s.submit("c", specs(6), 0)
    [h] = handouts(s.pull("a", ea, 6, 0))  # alone: it takes everything
    assert len(h.tasks) == 6
    s.started("a", ea, ["t0"])
    eb, _ = s.join("b", 0)
    out = s.pull("b", eb, 6, 0)
    [r] = [a for a in out if isinstance(a, Reclaim)]
    assert r.worker == "a"
    assert list(r.tasks) == ["t1", "t2", "t3", "t4", "t5"]
    # a had started t1 meanwhile; the rest come back and go to b at once.
    s.started("a", ea, ["t1"])
    dropped, out = s.gave_back(r, ["t2", "t3", "t4", "t5"])
    assert dropped == []
    [h] = handouts(out, "b")
    assert set(ids(h)) <= {"t2", "t3", "t4", "t5"}
    assert h.tasks


def test_tasks_a_worker_declines_to_give_back_are_not_asked_for_again() -> None:
    """Found by the simulation: a worker that does not announce ``started`` (a SHOULD)
    declined every give-back, and the head asked again at once, for ever: a busy
    loop at the speed of the round trip, in the head and on the network."""
    s = make()
    ea, _ = s.join("a", 0)
    s.submit("c", specs(4), 0)
    [h] = handouts(s.pull("a", ea, 4, 0))
    assert len(h.tasks) == 4
    eb, _ = s.join("b", 0)
    [r] = [a for a in s.pull("b", eb, 4, 0) if isinstance(a, Reclaim)]
    assert list(r.tasks) == ["t1", "t2", "t3"]
    dropped, out = s.gave_back(r, [])  # it runs t0 and has t1..t3 done or started
    assert dropped == []
    assert not [a for a in out if isinstance(a, Reclaim)]
    # Nothing else that happens asks for them again either.
    assert not [a for a in s.heartbeat("b", eb, [], 0, 1.0) if isinstance(a, Reclaim)]
    s.submit("c", specs(1, start=10), 0)
    out = s.results("a", ea, [(t.id, True, b"", t.lease) for t in h.tasks])
    assert not [a for a in out if isinstance(a, Reclaim)]
    assert s.tasks["t10"].state == ASSIGNED  # b took the new task meanwhile


def test_cancel_drops_queued_tasks_and_reclaims_unstarted_ones() -> None:
    s = make()
    e, _ = s.join("w", 0)
    s.submit("c", specs(4), 0)
    s.pull("w", e, 2, 0)
    s.started("w", e, ["t0"])
    cancelled, out = s.cancel("c", ["t0", "t1", "t2", "t3", "nope"])
    assert cancelled == ["t2", "t3", "nope"]  # "nope": its submit may still come
    [r] = out
    assert isinstance(r, Reclaim)
    assert r.cancel
    assert r.tasks == ("t1",)
    dropped, _ = s.gave_back(r, ["t1"])
    assert dropped == ["t1"]
    assert s.queued == 0
    assert "t1" not in s.tasks
    assert s.cancel("other", ["t0"])[0] == []  # not its task
    new, _ = s.submit("c", [*specs(1, 4), ("nope", "m:f", b"", 0)], 0)
    assert [t.id for t in new] == ["t4"]  # the cancel overtook that submit


def test_retries_are_charged_only_for_started_runs() -> None:
    s = make()
    s.submit("c", specs(2, retries=1), 0)
    for run in range(3):
        e, _ = s.join("w", run)
        [h] = handouts(s.pull("w", e, 2, run))
        assert "t0" in ids(h)
        s.started("w", e, ["t0"])
        out = s.worker_lost("w")
        if run == 1:
            [d] = [a for a in out if isinstance(a, Deliver)]
            assert d.result[0] == "t0"
            assert isinstance(d.result[3], WorkerLost)
            break
    assert s.tasks["t1"].attempts == 0
    assert s.tasks["t1"].state == QUEUED


def test_a_pull_with_no_work_waits_then_answers_empty() -> None:
    s = make()
    e, _ = s.join("w", 0)
    assert s.pull("w", e, 1, 10.0) == []
    assert s.expire(10.5, 1.0) == []
    [h] = s.expire(11.0, 1.0)
    assert h.worker == "w"
    assert h.tasks == ()


def test_a_worker_declared_dead_gets_its_parked_pull_answered() -> None:
    """Found by the simulation: a worker silent past ``dead_after`` (a clock jump, a
    partition shorter than the keepalive's three intervals) was forgotten with its
    pull still parked; nothing ever answered that pull, so the worker, alive and
    rejoined, waited on it for ever and took no task again."""
    s = make()
    e, _ = s.join("w", 0)
    assert s.pull("w", e, 1, 10.0) == []  # parked: no work yet
    out = s.worker_lost("w")
    assert [(h.worker, h.tasks) for h in handouts(out)] == [("w", ())]
    assert s.expire(100.0, 1.0) == []  # nothing of it is left to expire
    with pytest.raises(StaleEpoch):
        s.pull("w", e, 1, 100.0)  # its next pull: join again


def test_a_cancelled_task_stays_cancelled_whatever_copies_of_its_submit_come() -> None:
    """Found by the simulation (seeds 2107, 3109, 3467, 3754 of 10,000): a cancel that
    overtook its submit dropped only the first copy of that submit; a second copy (a
    resubmit after a reconnect, a duplicated frame) queued the task, and it ran."""
    s = make()
    e, _ = s.join("w", 0)
    cancelled, _ = s.cancel("c", ["t0"])
    assert cancelled == ["t0"]
    for _ in range(2):  # the submit, then a copy of it
        new, _ = s.submit("c", specs(1), 0)
        assert new == []
    s.submit("c", specs(1, start=1), 0)
    [h] = handouts(s.pull("w", e, 4, 0))
    assert ids(h) == ["t1"]
    cancelled, _ = s.cancel("c", ["t1"])  # handed out: given back first
    assert cancelled == []
    dropped, _ = s.gave_back(Reclaim("w", e, ("t1",), cancel=True), ["t1"])
    assert dropped == ["t1"]
    new, _ = s.submit("c", specs(1, start=1), 0)  # a late copy of its submit
    assert new == []
    assert s.queued == 0


def test_a_finished_task_is_neither_run_again_nor_cancelled_by_a_late_message() -> None:
    """Found by the simulation (seeds 1361, 3627): once a result was delivered and the
    task forgotten, a cancel of it answered "cancelled" (it took the id for one whose
    submit had not come yet), and a late copy of its submit would have run it again."""
    s = make()
    e, _ = s.join("w", 0)
    s.submit("c", specs(1), 0)
    [h] = handouts(s.pull("w", e, 1, 0))
    [d] = [a for a in s.results("w", e, [("t0", True, b"x", h.tasks[0].lease)])
           if isinstance(a, Deliver)]
    assert d.result[:3] == ("t0", True, b"x")
    s.delivered(["t0"])
    assert "t0" not in s.tasks
    cancelled, _ = s.cancel("c", ["t0"])
    assert cancelled == []
    new, _ = s.submit("c", specs(1), 0)
    assert new == []
    assert s.queued == 0


def test_a_pause_stops_every_hand_out() -> None:
    s = make()
    e, _ = s.join("w", 0)
    s.pause(True)
    s.submit("c", specs(2), 0)
    assert handouts(s.pull("w", e, 2, 0)) == []
    [h] = handouts(s.pause(False))
    assert ids(h) == ["t0", "t1"]


def test_a_held_clients_tasks_wait_while_others_flow() -> None:
    s = make()
    e, _ = s.join("w", 0)
    s.submit("slow", specs(3), 0)
    s.hold("slow")
    assert s.queued == 3
    s.submit("fast", specs(2, start=3), 0)
    [h] = handouts(s.pull("w", e, 8, 0))
    assert ids(h) == ["t3", "t4"]
    s.submit("slow", specs(1, start=5), 0)  # held too
    for t in h.tasks:
        s.results("w", e, [(t.id, True, b"", t.lease)])
    assert handouts(s.pull("w", e, 8, 0)) == []  # parked: nothing it may have
    [h] = handouts(s.hold("slow", False))
    assert ids(h) == ["t0", "t1", "t2", "t5"]  # in order, at the front


def test_a_hold_moves_each_task_at_most_once() -> None:
    """Counted in entries, not seconds: hand-outs past a held client's tasks do not
    walk over them again."""
    s = make()
    e, _ = s.join("w", 0)
    s.submit("slow", specs(40_000), 0)
    s.hold("slow")
    for i in range(5):
        s.submit("fast", specs(1, start=40_000 + i), 0)
        [h] = handouts(s.pull("w", e, 1, 0))
        assert ids(h) == [f"t{40_000 + i}"]
        assert len(s._queue._ids) == 0  # the held ones were set aside on the first pass
        t = h.tasks[0]
        s.results("w", e, [(t.id, True, b"", t.lease)])
    assert s.queued == 40_000
    s.hold("slow", False)
    assert len(s._queue._ids) == 40_000


class _CountedSlot(WorkerSlot):
    """A worker's slot that counts how often the scheduler reads its ``lacks``."""

    __slots__ = ()
    looks = 0

    @property  # type: ignore[override]
    def lacks(self) -> dict[str, str]:
        _CountedSlot.looks += 1
        return WorkerSlot.lacks.__get__(self)  # type: ignore[attr-defined,no-any-return]

    @lacks.setter
    def lacks(self, value: dict[str, str]) -> None:
        WorkerSlot.lacks.__set__(self, value)  # type: ignore[attr-defined]


def test_an_idle_heartbeat_does_not_look_at_every_waiting_worker() -> None:
    """Counted in looks, not seconds: with a function some worker lacks, each event
    while workers wait looked at every parked worker's lacks (32 us per heartbeat
    at 1,000 workers, so O(workers^2) per heartbeat period)."""
    s = make()
    epochs = {f"w{i}": s.join(f"w{i}", 0)[0] for i in range(200)}
    lacking(s, "w0", epochs["w0"], "m:gone")
    s.cancel(None, ["probe-w0-0"])  # nothing queued: every worker waits
    for w, e in epochs.items():
        s._workers[w].__class__ = _CountedSlot
        s.pull(w, e, 1, 0)
    assert all(s.is_parked(w) for w in epochs)
    _CountedSlot.looks = 0
    for w, e in epochs.items():
        s.heartbeat(w, e, (), 0, 1.0)
    assert _CountedSlot.looks <= 2 * len(epochs), _CountedSlot.looks


class _CountedBlocked(WorkerSlot):
    """A worker's slot that counts how often the scheduler reads ``blocked``."""

    __slots__ = ()
    looks = 0

    @property  # type: ignore[override]
    def blocked(self) -> bool:
        _CountedBlocked.looks += 1
        return WorkerSlot.blocked.__get__(self)  # type: ignore[attr-defined,no-any-return]

    @blocked.setter
    def blocked(self, value: bool) -> None:
        WorkerSlot.blocked.__set__(self, value)  # type: ignore[attr-defined]


def test_workers_that_lack_every_queued_function_are_not_walked_over_per_event() -> None:
    """Counted in looks, not seconds: each event looked at every such waiting worker
    (at 1,000 of them beside 1,000 busy ones, ~1 ms of head CPU per task)."""
    s = make()
    epochs = {f"w{i}": s.join(f"w{i}", 0)[0] for i in range(110)}
    lack = [f"w{i}" for i in range(100)]
    for n, w in enumerate(lack):
        lacking(s, w, epochs[w], "m:f", n)
    s.cancel(None, [f"probe-{w}-{n}" for n, w in enumerate(lack)])
    for w, e in epochs.items():
        s.pull(w, e, 1, 0)
    out = s.submit("c", specs(600), 0)[1]  # m:f only: the 10 others run them
    for w in lack:
        s._workers[w].__class__ = _CountedBlocked
    assert all(s.is_parked(w) for w in lack)
    _CountedBlocked.looks = 0
    done = 0
    while done < 500:
        h = next(a for a in out if isinstance(a, Handout) and a.tasks)
        out.remove(h)
        [t] = h.tasks
        e = epochs[h.worker]
        out += s.results(h.worker, e, [(t.id, True, b"", t.lease)]) + s.pull(h.worker, e, 1, 0)
        done += 1
    assert _CountedBlocked.looks <= 2 * len(lack), _CountedBlocked.looks


def test_a_worker_that_lacks_every_queued_function_takes_back_what_it_can_run() -> None:
    """``a`` cannot import ``m:g``, the only function queued; ``b`` holds two tasks
    of ``m:f`` it has not started: one comes back for ``a`` (it waited for ever)."""
    s = make()
    s.submit("c", [("t0", "m:f", b"", 0), ("t1", "m:f", b"", 0), ("t2", "m:g", b"", 0)], 0)
    ea, _ = s.join("a", 0)
    eb, _ = s.join("b", 0)
    assert ids(handouts(s.pull("b", eb, 4, 0))[0]) == ["t0", "t1"]
    [h] = handouts(s.pull("a", ea, 4, 0))
    s.unrunnable("a", "t2", h.tasks[0].lease, "no module named m", 0)
    [r] = [a for a in s.pull("a", ea, 4, 0) if isinstance(a, Reclaim)]
    assert (r.worker, r.tasks) == ("b", ("t1",))
    _, out = s.gave_back(r, ["t1"])
    assert [ids(h) for h in handouts(out, "a")] == [["t1"]]


def test_cancel_cost_does_not_grow_with_the_queue() -> None:
    """Counted in steps, not seconds: cancelling touches only the task itself."""
    s = make()
    s.submit("c", specs(40_000), 0)
    before = len(s._queue._ids)
    cancelled, _ = s.cancel("c", [f"t{i}" for i in range(0, 40_000, 2)])
    assert len(cancelled) == 20_000
    assert s.queued == 20_000
    assert len(s._queue._ids) <= before  # marked, compacted at most once in a while


def test_batches_respect_bytes_and_buffers() -> None:
    items = [b"x" * 100_000] * 100
    parts = batches(items, len, 10**9, 32, 65_536)
    assert [len(p) for p in parts] == [32, 32, 32, 4]
    parts = batches(items, len, 1_000_000, 64, 10**9)
    assert all(sum(map(len, p)) <= 1_000_000 for p in parts)
    assert batches([b"y" * 10], len, 1, 1, 1) == [[b"y" * 10]]  # alone, it still goes


# -- the state machine ----------------------------------------------------------------


def lacking(s: Scheduler, w: str, e: int, fn: str, n: int = 0) -> None:
    """Make ``w`` lack ``fn``: it is handed a task of it and hands it back."""
    s.submit("c", [(f"probe-{w}-{n}", fn, b"", 3)], 0)
    [h] = handouts(s.pull(w, e, 1, 0), w)
    [task] = h.tasks
    assert task.fn == fn
    s.unrunnable(w, task.id, task.lease, f"{w} cannot import {fn}", 0)
    assert s.lacks(w, fn)


def test_a_worker_is_never_offered_a_function_it_cannot_import() -> None:
    s = make()
    ea, _ = s.join("a", 0)
    eb, _ = s.join("b", 0)  # it can run m:x (else m:x would fail: no worker can)
    s.submit("c", [("x0", "m:x", b"", 3), ("y0", "m:y", b"", 3)], 0)
    [h] = handouts(s.pull("a", ea, 1, 0))
    assert ids(h) == ["x0"]
    refused = s.refused_results
    assert s.unrunnable("a", "x0", "forged", "no", 0) == []  # only the lease holder
    assert s.refused_results == refused + 1
    assert s.unrunnable("a", "x0", h.tasks[0].lease, "a cannot import m:x", 0) == []
    assert s.tasks["x0"].state == QUEUED
    assert s.tasks["x0"].attempts == 0
    [h] = handouts(s.pull("a", ea, 4, 0))
    assert ids(h) == ["y0"]  # x0 is skipped, and stays first in the queue
    [h] = handouts(s.pull("b", eb, 4, 0))
    assert ids(h) == ["x0"]


def test_the_wake_up_goes_to_a_worker_that_can_run_the_task() -> None:
    s = make()
    ea, _ = s.join("a", 0)
    eb, _ = s.join("b", 0)
    lacking(s, "a", ea, "m:x")
    [h] = handouts(s.pull("b", eb, 1, 0))  # b runs the probe
    s.results("b", eb, [(h.tasks[0].id, True, b"", h.tasks[0].lease)])
    assert not handouts(s.pull("a", ea, 1, 0))
    assert s.is_parked("a")
    assert not handouts(s.pull("b", eb, 1, 0))
    assert s.is_parked("b")
    out = s.submit("c", [("x1", "m:x", b"", 3)], 0)[1]
    assert [(h.worker, ids(h)) for h in handouts(out)] == [("b", ["x1"])]
    assert s.is_parked("a")  # still waiting, for work it can run
    out = s.submit("c", [("y1", "m:y", b"", 3)], 0)[1]
    assert [(h.worker, ids(h)) for h in handouts(out)] == [("a", ["y1"])]


def test_a_blocked_worker_gets_a_runnable_task_submitted_later() -> None:
    s = make()
    ea, _ = s.join("a", 0)
    s.join("b", 0)  # busy elsewhere: it never pulls
    lacking(s, "a", ea, "m:x")  # the probe stays queued: a lacks m:x
    assert s.queued == 1
    assert not handouts(s.pull("a", ea, 1, 0))
    assert s.is_parked("a")
    out = s.submit("c", [("y1", "m:y", b"", 3)], 0)[1]
    assert [(h.worker, ids(h)) for h in handouts(out)] == [("a", ["y1"])]


def test_a_function_no_worker_can_import_fails_with_their_message() -> None:
    s = make()
    ea, _ = s.join("a", 0)
    eb, _ = s.join("b", 0)
    lacking(s, "a", ea, "m:x")
    s.submit("c", [("x1", "m:x", b"", 3)], 0)
    [h] = handouts(s.pull("b", eb, 1, 0))
    out = s.unrunnable("b", h.tasks[0].id, h.tasks[0].lease, "b cannot import m:x", 0)
    failed = {a.result[0]: a.result[3] for a in out if isinstance(a, Deliver)}
    assert set(failed) == {"probe-a-0", "x1"}
    assert all(isinstance(e, ConfigError) and "cannot import m:x" in str(e)
               and "other worker" in str(e) for e in failed.values())
    assert s.queued == 0
    _, out = s.submit("c", [("x2", "m:x", b"", 3)], 0)  # later submits fail at once
    assert [a.result[0] for a in out if isinstance(a, Deliver)] == ["x2"]


def test_when_the_worker_that_could_run_it_leaves_the_function_fails() -> None:
    s = make()
    ea, _ = s.join("a", 0)
    s.join("b", 0)
    lacking(s, "a", ea, "m:x")
    assert s.queued == 1  # b could run it
    out = s.worker_lost("b")
    assert [a.result[0] for a in out if isinstance(a, Deliver)] == ["probe-a-0"]


class SchedulerMachine(RuleBasedStateMachine):
    """Clients submit and cancel; workers join, pull, start, finish, die and rejoin;
    messages are lost or come late. The scheduler's promises hold after every step."""

    workers = Bundle("workers")

    def __init__(self) -> None:
        super().__init__()
        self.s = make()
        self.now = 0.0
        self.ids = itertools.count()
        self.submitted: set[str] = set()
        self.retries: dict[str, int] = {}
        self.ended: Counter[str] = Counter()
        self.cancelled: set[str] = set()
        self.epoch: dict[str, int] = {}
        self.old_epochs: dict[str, list[int]] = {}
        self.local: dict[str, list[Any]] = {}  # tasks a worker really holds, not started
        self.running: dict[str, list[Any]] = {}  # tasks a worker started
        self.seen: dict[str, int] = {}
        self.reclaims: list[Reclaim] = []
        self.parked: set[str] = set()
        self.stale_leases: list[tuple[str, str]] = []
        self.starts: Counter[str] = Counter()
        self.owner: dict[str, str] = {}
        self.held: set[str] = set()

    # -- carrying out actions ---------------------------------------------------------

    def apply(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Handout):
                self.parked.discard(a.worker)
                assert not (a.tasks and self.s.draining(a.worker)), "a drained worker got tasks"
                assert not any(self.s.lacks(a.worker, t.fn) for t in a.tasks), \
                    "a worker was handed a function it said it cannot import"
                assert not any(t.client in self.held for t in a.tasks), \
                    "a held client's task was handed out"
                if a.worker in self.epoch:
                    self.local[a.worker] += list(a.tasks)
                    self.seen[a.worker] = max(self.seen[a.worker], a.seq)
            elif isinstance(a, Deliver):
                self.ended[a.result[0]] += 1
            elif isinstance(a, Reclaim):
                self.reclaims.append(a)
            elif isinstance(a, Started):
                pass

    def pull(self, w: str, want: int) -> None:
        out = self.s.pull(w, self.epoch[w], want, self.now)
        if not handouts(out, w):
            self.parked.add(w)
        self.apply(out)

    # -- rules ------------------------------------------------------------------------

    @rule(target=workers, name=st.sampled_from(["a", "b", "c", "d"]))
    def join(self, name: str) -> str:
        if name in self.epoch:
            self.old_epochs.setdefault(name, []).append(self.epoch[name])
        e, out = self.s.join(name, self.now)
        self.epoch[name] = e
        self.local.setdefault(name, [])
        self.running.setdefault(name, [])
        self.seen.setdefault(name, 0)
        self.parked.discard(name)
        self.apply(out)
        return name

    @rule(n=st.integers(1, 6), retries=st.integers(0, 2), fn=st.sampled_from(["m:f", "m:g"]),
          client=st.sampled_from(["client", "other"]))
    def submit(self, n: int, retries: int, fn: str, client: str) -> None:
        batch = [(f"t{next(self.ids)}", fn, b"", retries) for _ in range(n)]
        for tid, *_ in batch:
            self.submitted.add(tid)
            self.retries[tid] = retries
            self.owner[tid] = client
        _, out = self.s.submit(client, batch, self.now)
        self.apply(out)

    @rule(client=st.sampled_from(["client", "other"]), on=st.booleans())
    def hold(self, client: str, on: bool) -> None:
        """The head holds back a client's tasks (its results wait), or releases them."""
        (self.held.add if on else self.held.discard)(client)
        self.apply(self.s.hold(client, on))
        assert self.s.held(client) == on

    @rule(w=workers, want=st.integers(1, 8))
    def pull_work(self, w: str, want: int) -> None:
        if w in self.epoch and w not in self.parked:
            self.pull(w, want)

    @rule(w=workers)
    def start_one(self, w: str) -> None:
        if w in self.epoch and self.local[w]:
            task = self.local[w].pop(0)
            self.running[w].append(task)
            self.starts[task.id] += 1
            self.apply(self.s.started(w, self.epoch[w], [task.id]))

    @rule(w=workers, ok=st.booleans())
    def finish_one(self, w: str, ok: bool) -> None:
        if w in self.epoch and self.running[w]:
            task = self.running[w].pop(0)
            self.apply(self.s.results(w, self.epoch[w], [(task.id, ok, b"r", task.lease)]))
            self.stale_leases.append((task.id, task.lease))

    @rule(w=workers)
    def idle_worker_asks_again(self, w: str) -> None:
        """A worker with nothing to do pulls (its old pull answered empty)."""
        if w in self.epoch and not self.local[w] and not self.running[w] and w not in self.parked:
            self.pull(w, 4)

    @rule(w=workers)
    def cannot_import(self, w: str) -> None:
        """The worker cannot import its next task's function: it hands the task back."""
        if w in self.epoch and self.local[w]:
            task = self.local[w].pop(0)
            self.apply(self.s.unrunnable(w, task.id, task.lease, f"{w} lacks it", self.now))
            self.stale_leases.append((task.id, task.lease))
            assert self.s.lacks(w, task.fn)

    @rule(w=workers)
    def drop_a_handout(self, w: str) -> None:
        """The reply carrying its newest tasks met a reset: the worker never got them."""
        if w in self.epoch and self.local[w]:
            task = self.local[w].pop()
            self.stale_leases.append((task.id, task.lease))

    @rule(w=workers)
    def heartbeat(self, w: str) -> None:
        if w in self.epoch:
            holding = [t.id for t in self.local[w] + self.running[w]]
            self.apply(self.s.heartbeat(w, self.epoch[w], holding, self.seen[w], self.now))

    @rule(w=consumes(workers))
    def die(self, w: str) -> None:
        if w in self.epoch:
            del self.epoch[w]
            self.stale_leases += [(t.id, t.lease) for t in self.local[w] + self.running[w]]
            self.local[w], self.running[w] = [], []
            self.parked.discard(w)
            self.apply(self.s.worker_lost(w))

    @precondition(lambda self: self.reclaims)
    @rule(data=st.data())
    def answer_reclaim(self, data: st.DataObject) -> None:
        r = self.reclaims.pop(data.draw(st.integers(0, len(self.reclaims) - 1)))
        given: list[str] = []
        if r.worker in self.epoch:
            keep = []
            for task in self.local[r.worker]:
                (given if task.id in r.tasks else keep).append(task)
            self.local[r.worker] = keep
        given_ids = [t.id for t in given]
        dropped, out = self.s.gave_back(r, given_ids)
        for tid in dropped:
            self.cancelled.add(tid)
        self.apply(out)

    @precondition(lambda self: self.submitted - set(self.ended))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """The client cancels a future it has no result for."""
        tid = data.draw(st.sampled_from(sorted(self.submitted - set(self.ended))))
        cancelled, out = self.s.cancel(self.owner[tid], [tid])
        self.cancelled.update(cancelled)
        self.apply(out)

    @precondition(lambda self: self.stale_leases)
    @rule(data=st.data())
    def late_result(self, data: st.DataObject) -> None:
        """A result comes again (a duplicate, or from a lease since expired)."""
        tid, lease = data.draw(st.sampled_from(self.stale_leases))
        if not self.epoch:
            return
        w = data.draw(st.sampled_from(sorted(self.epoch)))
        task = self.s.tasks.get(tid)
        if task is not None and task.lease == lease:
            return  # not stale: that hand-out is still current
        if task is not None and task.worker in self.epoch:
            w = task.worker  # the worst case: from the worker holding it now
        before = Counter(self.ended)
        refused = self.s.refused_results
        self.apply(self.s.results(w, self.epoch[w], [(tid, True, b"late", lease)]))
        assert self.ended == before, "a stale lease completed a task"
        assert self.s.refused_results == refused + 1

    @precondition(lambda self: self.old_epochs)
    @rule(data=st.data())
    def stale_request(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from(sorted(self.old_epochs)))
        old = data.draw(st.sampled_from(self.old_epochs[w]))
        queued = self.s.queued
        with pytest.raises(StaleEpoch):
            self.s.pull(w, old, 4, self.now)
        assert self.s.queued == queued

    @rule(w=workers, on=st.booleans())
    def drain(self, w: str, on: bool) -> None:
        """An operator drains a worker, or resumes it."""
        if w in self.epoch:
            out = self.s.drain(w, on)
            assert out is not None
            self.apply(out)
            assert self.s.draining(w) == on

    @rule()
    def time_passes(self) -> None:
        self.now += 0.6
        self.apply(self.s.expire(self.now, 1.0))

    @rule()
    def deliver(self) -> None:
        self.s.delivered([t for t in self.ended if t in self.s.tasks])

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def every_task_ends_at_most_once(self) -> None:
        assert all(n == 1 for n in self.ended.values()), self.ended
        assert not (set(self.ended) & self.cancelled), "a cancelled task also ended"

    @invariant()
    def no_idle_worker_waits_while_another_holds_unstarted_tasks(self) -> None:
        idle = [w for w in self.parked if w in self.epoch and not self.s.draining(w)
                and not self.s.holds(w) and not self.local[w]]
        if not idle:
            return
        being_reclaimed = {t for r in self.reclaims for t in r.tasks}
        for w in self.epoch:
            if w in self.parked:
                continue
            # Tasks it declined to give back are not asked for again (see
            # test_tasks_a_worker_declines_to_give_back_are_not_asked_for_again): one it
            # never got (a lost hand-out) goes back to the queue with its next heartbeat.
            kept = self.s._workers[w].kept
            unstarted = [t for t in self.s.unstarted(w) if t not in being_reclaimed
                         and t not in kept
                         and any(not self.s.lacks(i, self.s.tasks[t].fn) for i in idle)]
            allowed = 0 if any(self.s.tasks[t].state == RUNNING for t in self.s.holds(w)) else 1
            assert len(unstarted) <= allowed, (w, unstarted, idle)

    @invariant()
    def an_idle_worker_that_can_run_a_queued_task_is_not_left_waiting(self) -> None:
        for w in self.parked:
            if w not in self.epoch or self.s.holds(w) or self.local[w] or self.s.draining(w):
                continue
            runnable = [t for t in self.s.tasks.values() if t.state == QUEUED
                        and not self.s.lacks(w, t.fn) and t.client not in self.held]
            assert not runnable, (w, runnable[:3])

    @invariant()
    def no_waiting_worker_is_walked_over(self) -> None:
        """Workers whose pull waits are not in ``_surplus``: ``_rebalance`` walks only
        over workers it may take tasks back from (not O(workers) per event)."""
        waiting = set(self.s._parked) | set(self.s._full) | set(self.s._stuck)
        assert not waiting & set(self.s._surplus), waiting & set(self.s._surplus)

    @invariant()
    def retries_respect_their_policy(self) -> None:
        for _tid, task in self.s.tasks.items():
            assert task.attempts <= task.retries + 1
            if task.state in (QUEUED, ASSIGNED, RUNNING):
                assert task.attempts <= task.retries

    @invariant()
    def counters_agree(self) -> None:
        states = Counter(t.state for t in self.s.tasks.values())
        assert self.s.queued == states[QUEUED]
        assert self.s.running == states[ASSIGNED] + states[RUNNING]
        held = sum(t.state == QUEUED and t.client in self.held for t in self.s.tasks.values())
        assert self.s.stats()["held"] == held

    def teardown(self) -> None:
        """Drain: every submitted task that was not cancelled ends exactly once."""
        for client in list(self.held):
            self.held.discard(client)
            self.apply(self.s.hold(client, False))
        for w in list(self.epoch):
            self.local[w], self.running[w] = [], []
            self.apply(self.s.worker_lost(w))
        for r in self.reclaims:
            self.s.gave_back(r, [])
        self.reclaims = []
        e, out = self.s.join("drain", self.now)
        self.epoch["drain"] = e
        self.local["drain"], self.running["drain"], self.seen["drain"] = [], [], 0
        self.apply(out)
        for _ in range(10_000):
            self.pull("drain", 8)
            if not self.local["drain"]:
                break
            for task in self.local["drain"]:
                self.apply(self.s.results("drain", e, [(task.id, True, b"", task.lease)]))
            self.local["drain"] = []
        unresolved = self.submitted - set(self.ended) - self.cancelled
        assert not unresolved, f"tasks that never ended: {sorted(unresolved)[:5]}"
        assert all(n == 1 for n in self.ended.values())


SchedulerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_scheduler_state_machine = SchedulerMachine.TestCase


def test_a_drained_worker_gets_no_new_tasks_but_finishes_its_own() -> None:
    s = make()
    a, _ = s.join("a", 0)
    b, _ = s.join("b", 0)
    s.submit("c", specs(1), 0)
    [h] = handouts(s.pull("a", a, 1, 0))
    s.started("a", a, ["t0"])
    assert s.drain("a") == []
    assert s.draining("a")
    assert not s.draining("b")
    assert s.drain("nobody") is None
    s.submit("c", specs(4, start=1), 1)
    assert handouts(s.pull("a", a, 4, 1)) == [], "a drained worker's pull waits"
    assert not s.is_parked("a"), "nor may its pull take others' unstarted tasks"
    out = s.pull("b", b, 4, 1)
    assert sum(len(x.tasks) for x in handouts(out, "b")) == 4
    # It still finishes what it held, and its result is taken.
    done = s.results("a", a, [("t0", True, b"", h.tasks[0].lease)])
    assert [x.result[0] for x in done if isinstance(x, Deliver)] == ["t0"]
    assert not [x for x in done if isinstance(x, Handout) and x.tasks]
    # A parked pull of a drained worker is answered empty in time (it may heartbeat).
    assert [(x.worker, x.tasks) for x in s.expire(100, 30) if isinstance(x, Handout)] == [
        ("a", ())]
    # Undrained, it takes work again.
    s.submit("c", specs(1, start=5), 2)
    assert s.drain("a", False) == []
    [h2] = handouts(s.pull("a", a, 1, 3))
    assert ids(h2) == ["t5"]


def test_draining_a_worker_answers_its_parked_pull() -> None:
    s = make()
    a, _ = s.join("a", 0)
    assert s.pull("a", a, 1, 0) == []  # parked: nothing queued
    out = s.drain("a")
    assert [(x.worker, x.tasks) for x in out or [] if isinstance(x, Handout)] == [("a", ())]
    s.submit("c", specs(2), 1)  # no wake-up goes to it
    assert s.queued == 2


def test_tombstones_keep_the_newest_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from netlet.cluster import _sched_state

    monkeypatch.setattr(_sched_state, "TOMBSTONES", 3)
    stones = _sched_state.Tombstones()
    for tid in ["a", "b", "c", "b", "d"]:
        stones.add(tid)
    assert len(stones) == 3
    assert "a" not in stones
    assert all(t in stones for t in "bcd")
