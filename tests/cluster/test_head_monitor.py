"""The head's per-task history (``HeadMonitor``), driven directly: no head, no sockets.

What a dashboard shows of a task (submit time, each attempt's worker, hand-out
and start times, finish time, error and traceback) and the two histograms must
come out whole however cheaply the hooks record them. About 0.1 s in all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from netlet.cluster._head_monitor import MAX_TRACEBACK, HeadMonitor, done_info
from netlet.cluster._head_stats import HeadStatsMixin
from netlet.cluster._sched_records import RUNNING, Deliver, Task
from netlet.cluster._scheduler import Scheduler
from netlet.cluster._stats import TaskInfo
from netlet.errors import WorkerLost

pytestmark = pytest.mark.timeout(10)


def _task(i: int, fn: str = "mod:f", client: str = "c1") -> Task:
    return Task(f"{client}:{i}", client, fn, b"", 3)


def _done(mon: HeadMonitor) -> dict[str, TaskInfo]:
    return {rec[0]: done_info(rec) for rec in mon.finished_raw()}


def test_a_tracked_task_keeps_submit_attempt_and_finish_times() -> None:
    mon = HeadMonitor()
    mon.track()
    t0 = time.time()
    tasks = [_task(i) for i in range(3)]
    mon.submitted_tasks(tasks)
    mon.handed("w1", tasks[:2])
    mon.started([tasks[0].id])
    live = mon.live_info(tasks[0])
    assert live.submitted is not None
    assert t0 <= live.submitted
    assert live.history[0].started is not None
    assert [(a.worker, a.started is not None) for a in live.history] == [("w1", True)]
    assert live.submitted <= live.history[0].handed <= live.history[0].started
    assert mon.live_info(tasks[2]).history == ()  # queued: no attempt yet
    for t in tasks[:2]:
        mon.finished(t, t.id, True, None)
    done = _done(mon)
    info = done[tasks[0].id]
    assert info.state == "done"
    assert info.worker == "w1"
    assert info.submitted == live.submitted
    assert info.history == live.history
    assert info.finished is not None
    assert info.finished >= live.history[0].started
    assert done[tasks[1].id].history[0].started is None
    assert mon.done == 2
    assert mon.submitted == 3
    assert mon.dispatch_seconds.counts[-1] + sum(mon.dispatch_seconds.counts[:-1]) == 2
    assert sum(mon.task_seconds.counts) == 1  # only the started one has a duration


def test_a_task_handed_out_again_keeps_each_attempt_in_order() -> None:
    mon = HeadMonitor()
    mon.track()
    t = _task(0)
    mon.submitted_tasks([t])
    mon.handed("w1", [t])
    mon.started([t.id])
    t.attempts, t.state = 1, RUNNING  # its worker died while running it
    mon.handed("w2", [t])
    attempts = mon.live_info(t).history
    assert [a.worker for a in attempts] == ["w1", "w2"]
    assert attempts[0].started is not None
    assert attempts[1].started is None
    mon.finished(t, t.id, False, WorkerLost("w2 died too"))
    info = _done(mon)[t.id]
    assert [a.worker for a in info.history] == ["w1", "w2"]
    assert info.state == "failed"
    assert info.worker == "w2"
    assert info.error_type == "WorkerLost"
    assert "w2 died too" in info.traceback
    assert info.attempts == 1
    assert sum(mon.dispatch_seconds.counts) == 1  # the first hand-out only


def test_a_failed_task_keeps_its_workers_traceback() -> None:
    mon = HeadMonitor()
    mon.track()
    t = _task(0)
    mon.submitted_tasks([t])
    mon.handed("w1", [t])
    mon.error_detail(t.id, "ValueError", "x" * (MAX_TRACEBACK + 100) + "the end")
    mon.finished(t, t.id, False, None)
    info = _done(mon)[t.id]
    assert info.error_type == "ValueError"
    assert info.traceback.endswith("the end")
    assert len(info.traceback) == MAX_TRACEBACK
    assert mon.failed == 1


def test_untracked_tasks_keep_counts_and_failures_only() -> None:
    mon = HeadMonitor()
    ok, bad = _task(0), _task(1)
    mon.submitted_tasks([ok, bad])
    mon.handed("w1", [ok, bad])
    mon.started([ok.id, bad.id])
    mon.finished(ok, ok.id, True, None)
    mon.finished(bad, bad.id, False, WorkerLost("gone"))
    assert (mon.submitted, mon.done, mon.failed) == (2, 1, 1)
    assert list(_done(mon)) == [bad.id]  # failures are kept always, without timings
    assert _done(mon)[bad.id].history == ()
    assert sum(mon.task_seconds.counts) == sum(mon.dispatch_seconds.counts) == 0


def test_tracking_from_a_hand_out_on_still_records_later_attempts() -> None:
    mon = HeadMonitor()
    t = _task(0)
    mon.submitted_tasks([t])  # before any dashboard
    mon.track()
    mon.handed("w1", [t])
    mon.finished(t, t.id, True, None)
    info = _done(mon).get(t.id)
    if info is not None:  # kept or not, it never claims a submit time it did not see
        assert info.submitted is None


def test_forgotten_and_finished_tasks_leave_nothing_behind() -> None:
    mon = HeadMonitor(finished_max=5)
    mon.track()
    tasks = [_task(i) for i in range(20)]
    mon.submitted_tasks(tasks)
    mon.handed("w1", tasks[:10])
    mon.started([t.id for t in tasks[:10]])
    mon.forget([t.id for t in tasks[10:]])
    for t in tasks[:10]:
        mon.finished(t, t.id, True, None)
    mon.started([tasks[0].id])  # a late notice for a finished task
    assert mon.live_count() == 0
    assert [rec[0] for rec in mon.finished_raw()] == [t.id for t in reversed(tasks[5:10])]


def test_finished_history_is_newest_first_and_bounded() -> None:
    mon = HeadMonitor(finished_max=100)
    mon.track()
    tasks = [_task(i) for i in range(250)]
    mon.submitted_tasks(tasks)
    for i in range(0, 250, 32):
        mon.handed(f"w{i % 3}", tasks[i:i + 32])
    for t in tasks:
        mon.finished(t, t.id, True, None)
    ids = [rec[0] for rec in mon.finished_raw()]
    assert ids == [t.id for t in reversed(tasks[150:])]
    assert all(done_info(rec).history for rec in mon.finished_raw())
    assert sum(mon.dispatch_seconds.counts) == 250


def _strip_times(info: TaskInfo) -> tuple[object, ...]:
    return (info.id, info.fn, info.client, info.state, info.worker, info.attempts,
            info.retries, info.submitted is not None, info.error_type, info.traceback,
            tuple((a.worker, a.started is not None) for a in info.history))


@pytest.mark.parametrize("tracking", [True, False])
def test_a_batch_of_results_is_recorded_as_one_by_one(tracking: bool) -> None:
    batches: list[tuple[int, int, int, list[tuple[object, ...]], int]] = []
    for mon in (HeadMonitor(), HeadMonitor()):
        if tracking:
            mon.track()
        tasks = [_task(i, fn=f"mod:f{i % 3}", client=f"c{i % 2}") for i in range(12)]
        mon.submitted_tasks(tasks[:10])  # two were never seen submitted
        mon.handed("w1", tasks[:6])
        mon.handed("w2", tasks[6:])
        mon.started([t.id for t in tasks[::2]])
        mon.handed("w3", tasks[:1])  # handed out again
        mon.error_detail(tasks[4].id, "KeyError", "Traceback...\nKeyError: 4")
        results = [(t, i not in (4, 7)) for i, t in enumerate(tasks)]
        delivers = [Deliver(t.client, (t.id, ok, b"", None if ok or i == 4 else WorkerLost("x")))
                    for i, (t, ok) in enumerate(results)]
        if not batches:
            for d in delivers:
                mon.finished(tasks[int(d.result[0].split(":")[1])], d.result[0], d.result[1],
                             d.result[3])
        else:
            mon.results(delivers, {t.id: t for t in tasks})
        batches.append((mon.done, mon.failed, sum(mon.task_seconds.counts),
                        [_strip_times(done_info(rec)) for rec in mon.finished_raw()],
                        mon.live_count()))
    one_by_one, batched = batches
    assert batched == one_by_one
    assert batched[:2] == (10, 2)
    assert batched[4] == 0
    assert len(batched[3]) == (12 if tracking else 2)


class _Queries(HeadStatsMixin):
    """The head's statistics queries over a real scheduler and monitor (no node)."""

    def __init__(self, mon: HeadMonitor) -> None:
        self._sched, self._monitor = Scheduler(), mon


def test_unfiltered_task_pages_read_only_as_far_as_the_page() -> None:
    mon = HeadMonitor(finished_max=50)
    mon.track()
    tasks = [_task(i) for i in range(120)]
    mon.submitted_tasks(tasks)
    mon.handed("w1", tasks)
    for i, t in enumerate(tasks):
        bad = i % 7 == 3
        mon.error_detail(t.id, "KeyError", "Traceback\nKeyError" if bad else "")
        mon.finished(t, t.id, not bad, None)
    kept = list(mon.finished_raw())
    assert mon.finished_count() == len(kept) == 50
    assert mon.finished_count("failed") == sum(1 for r in kept if not r[3])
    assert mon.finished_count("done") == sum(1 for r in kept if r[3])
    queries = _Queries(mon)
    for state in ("", "done", "failed"):
        for offset in (0, 5, 40, 60):
            fast = queries.task_page(state, offset=offset, limit=10)
            full = queries.task_page(state, fn="mod:", offset=offset, limit=10)  # a full pass
            assert fast == full
    read = 0
    every = mon.finished_raw

    def counted() -> Iterator[Any]:
        nonlocal read
        for rec in every():
            read += 1
            yield rec

    mon.finished_raw = counted  # type: ignore[method-assign]
    assert queries.task_page("", offset=0, limit=10).total == 50
    assert read <= 11
