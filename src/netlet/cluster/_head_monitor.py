"""What the head remembers for its statistics: counters, events, dead workers, task history.

``HeadMonitor`` is fed by the head as things happen (each hook O(1) per task
it touches). Counters, events, recent deaths and failed tasks (with their
remote traceback) are always kept, in bounded memory. Per-task timings and
attempts cost a little on every task, so they are kept only once something
asks for them (``track()``: a dashboard attaching). Everything is kept as
plain tuples; the frozen records of ``_stats.py`` are built when read.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from netlet.cluster._histogram import HistogramCounter
from netlet.cluster._sched_records import ASSIGNED, QUEUED, RUNNING, Deliver, Task

if TYPE_CHECKING:
    from netlet.cluster._stats import ClusterEvent, TaskAttempt, TaskInfo, WorkerStats

__all__ = ["MAX_TRACEBACK", "TASK_STATES", "HeadMonitor", "done_info", "done_worker"]

TASK_STATES = (QUEUED, ASSIGNED, RUNNING, "done", "failed")
SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)
MAX_TRACEBACK = 8192
TRACEBACKS_BUDGET = 8 * 1024 * 1024
"""What the tracebacks of finished tasks may hold in all (then only their last lines)."""
MAX_PENDING_ERRORS = 1024
"""Error details waiting for their task's result to be delivered."""


# A tracked task's current attempt: (worker, handed). One tuple per hand-out, shared
# by the tasks it carried.
_Hand = tuple[str, float]
# An attempt: (worker, handed, started or None).
_Attempt = tuple[str, float, "float | None"]
# A finished task: (id, fn, client, ok, attempts, retries, finished, error type,
# traceback, submitted, its last _Hand, started, earlier attempts). Kept raw, and
# of atomic values only (the collector stops tracking such tuples); a TaskInfo is
# built only when shown.
_Done = tuple[str, str, str, bool, int, int, float, str, str, "float | None",
              "_Hand | None", "float | None", "tuple[_Attempt, ...] | None"]


class HeadMonitor:
    """Counters, events and deaths always; per-task history once ``track()``ed.

    The history is kept in flat maps from task id to atomic values (a float,
    or a tuple shared by a whole hand-out), filled a batch at a time by C-level
    dict updates: no container per task while it lives, so the head's hot path
    gains a few dict operations per task and the garbage collector nothing to
    walk: about 0.5 µs of the head's CPU per task, where a list per task cost
    1.6 with the collector's share (D1).
    """

    def __init__(self, finished_max: int = 10_000, events_max: int = 1000,
                 dead_max: int = 200) -> None:
        self.tracking = False
        self.submitted = self.done = self.failed = self.cancelled = 0
        self._submitted: dict[str, float] = {}
        self._hand: dict[str, _Hand] = {}
        """The current attempt of each tracked task handed out."""
        self._started: dict[str, float] = {}
        self._earlier: dict[str, list[_Attempt]] = {}
        """Attempts before the current one (a task handed out again: rare)."""
        self._finished: deque[_Done] = deque(maxlen=finished_max)
        self._tb_bytes = 0
        """Bytes of tracebacks kept with finished tasks (at most TRACEBACKS_BUDGET)."""
        self._failed_kept = 0
        """Failed tasks among the finished ones kept (only they have tracebacks)."""
        self._errors: dict[str, tuple[str, str]] = {}
        """Error type and traceback a worker reported, until the result is delivered."""
        self._events: deque[tuple[int, float, str, str, str, str, str]] = deque(
            maxlen=events_max)
        self._seq = 0
        self._dead: deque[tuple[Any, ...]] = deque(maxlen=dead_max)  # WorkerStats fields
        self.restarts: dict[str, int] = {}
        """Actor restarts by name (kept while the actor is known)."""
        self.task_seconds = HistogramCounter(SECONDS)
        self.dispatch_seconds = HistogramCounter(SECONDS)

    def track(self) -> None:
        self.tracking = True

    # -- hooks (each O(1) per task; the tracked ones only while tracking) -----------

    def submitted_tasks(self, tasks: list[Task]) -> None:
        self.submitted += len(tasks)
        if self.tracking:
            self._submitted.update(dict.fromkeys([t.id for t in tasks], time.time()))

    def handed(self, worker: str, tasks: Iterable[Task]) -> None:
        if not self.tracking:
            return
        now = time.time()
        ids = first = [t.id for t in tasks]
        hand = self._hand
        if not hand.keys().isdisjoint(ids):  # handed out before: keep that attempt
            again = hand.keys() & ids
            started, earlier = self._started, self._earlier
            for tid in again:
                was = hand[tid]
                earlier.setdefault(tid, []).append((was[0], was[1], started.pop(tid, None)))
            first = [tid for tid in ids if tid not in again]
        hand.update(dict.fromkeys(ids, (worker, now)))
        # The dispatch histogram (first hand-outs): a hand-out's tasks were mostly
        # submitted together, so they share one submit time (or a few).
        times = list(map(self._submitted.get, first))
        if not times:
            return
        if times.count(times[0]) == len(times):
            groups: Iterable[tuple[float | None, int]] = ((times[0], len(times)),)
        else:
            groups = Counter(times).items()
        hist = self.dispatch_seconds
        bounds, counts = hist.bounds, hist.counts
        for t0, n in groups:
            if t0 is not None:
                wait = now - t0
                counts[bisect.bisect_left(bounds, wait)] += n
                hist.total += wait * n

    def started(self, tids: Iterable[str]) -> None:
        if not self.tracking:
            return
        now = time.time()
        hand, started = self._hand, self._started
        for tid in tids:
            if tid in hand:  # a late notice for a finished task is dropped
                started[tid] = now

    def error_detail(self, tid: str, error_type: str, traceback: str) -> None:
        if len(self._errors) < MAX_PENDING_ERRORS:
            self._errors[tid] = (error_type[:200], traceback[-MAX_TRACEBACK:])

    def finished(self, task: Task | None, tid: str, ok: bool, error: BaseException | None,
                 ) -> None:
        if self.tracking:
            submitted, hand = self._submitted.pop(tid, None), self._hand.pop(tid, None)
        else:
            submitted = hand = None
        if ok:
            self.done += 1
            if hand is None and submitted is None:
                return  # not tracked: nothing to keep
        else:
            self.failed += 1
        now = time.time()
        started = self._started.pop(tid, None) if self._started else None
        earlier = self._earlier.pop(tid, None) if self._earlier else None
        if started is not None:
            self.task_seconds.observe(now - started)
        etype, tb = "", ""
        if not ok:
            etype, tb = self._errors.pop(tid, ("", ""))
            if error is not None:
                etype, tb = type(error).__name__, str(error)
        fin = self._finished
        if self._failed_kept and len(fin) == fin.maxlen:
            self._evicting()
        if not ok:
            self._failed_kept += 1
        if tb:
            if self._tb_bytes + len(tb) > TRACEBACKS_BUDGET:
                tb = "...\n" + tb[-512:]  # the budget is spent: the tail says what was raised
            self._tb_bytes += len(tb)
        if task is None:
            fin.append((tid, "?", "", ok, 0, 0, now, etype, tb, submitted, hand, started,
                        tuple(earlier) if earlier else None))
        else:
            fin.append((tid, task.fn, task.client, ok, task.attempts, task.retries, now,
                        etype, tb, submitted, hand, started,
                        tuple(earlier) if earlier else None))

    def results(self, delivers: Iterable[Deliver], tasks: Mapping[str, Task]) -> None:
        """``finished`` for each result the head delivers, in order (``tasks``: the
        scheduler's, by id): a successful one is recorded inline, one clock read
        for all."""
        done = 0
        if not self.tracking:
            for d in delivers:
                if d.result[1]:
                    done += 1
                else:
                    tid = d.result[0]
                    self.finished(tasks.get(tid), tid, False, d.result[3])
            self.done += done
            return
        now = time.time()
        get, fin = tasks.get, self._finished
        sub_pop, hand_pop = self._submitted.pop, self._hand.pop
        for d in delivers:
            tid, ok, _, error = d.result
            if not ok:
                self.finished(get(tid), tid, False, error)
                continue
            done += 1
            submitted, hand = sub_pop(tid, None), hand_pop(tid, None)
            if hand is None and submitted is None:
                continue  # not tracked: nothing to keep
            started = self._started.pop(tid, None) if self._started else None
            earlier = self._earlier.pop(tid, None) if self._earlier else None
            if started is not None:
                self.task_seconds.observe(now - started)
            if self._failed_kept and len(fin) == fin.maxlen:
                self._evicting()
            task = get(tid)
            if task is None:
                fin.append((tid, "?", "", True, 0, 0, now, "", "", submitted, hand, started,
                            tuple(earlier) if earlier else None))
            else:
                fin.append((tid, task.fn, task.client, True, task.attempts, task.retries, now,
                            "", "", submitted, hand, started,
                            tuple(earlier) if earlier else None))
        self.done += done

    def _evicting(self) -> None:
        """The oldest finished task is about to leave the full history."""
        oldest = self._finished[0]
        if not oldest[3]:
            self._failed_kept -= 1
            self._tb_bytes -= len(oldest[8])

    def forget(self, tids: Iterable[str]) -> None:
        """Tasks dropped unfinished (cancelled, their client gone)."""
        for tid in tids:
            self._submitted.pop(tid, None)
            self._hand.pop(tid, None)
            self._started.pop(tid, None)
            self._earlier.pop(tid, None)

    def event(self, kind: str, node: str, role: str, name: str, detail: str = "") -> None:
        self._seq += 1
        self._events.append((self._seq, time.time(), kind, node, role, name, detail))

    def worker_died(self, fields: tuple[Any, ...]) -> None:
        """``fields``: the dead worker's ``worker_fields``."""
        self._dead.append(fields)

    # -- queries --------------------------------------------------------------------

    @property
    def last_event(self) -> int:
        return self._seq

    def events(self, after: int, limit: int) -> list[ClusterEvent]:
        from netlet.cluster._stats import ClusterEvent

        out = [ClusterEvent(*e) for e in reversed(self._events) if e[0] > after][:limit]
        out.reverse()
        return out

    def dead(self) -> list[WorkerStats]:
        from netlet.cluster._stats import WorkerStats

        return [WorkerStats(*fields) for fields in self._dead]

    def live_count(self) -> int:
        """Records held for tasks still alive (none once all finished or forgotten)."""
        return (len(self._submitted) + len(self._hand) + len(self._started)
                + len(self._earlier))

    def finished_count(self, state: str = "") -> int:
        """Finished tasks kept: all (``""``), ``"done"`` or ``"failed"`` ones (O(1))."""
        if state == "failed":
            return self._failed_kept
        return len(self._finished) - (self._failed_kept if state == "done" else 0)

    def finished_raw(self) -> Iterator[_Done]:
        """Newest first."""
        return reversed(self._finished)

    def live_info(self, task: Task) -> TaskInfo:
        from netlet.cluster._stats import TaskInfo

        tid = task.id
        return TaskInfo(tid, task.fn, task.client, task.state, task.worker, task.attempts,
                        task.retries, self._submitted.get(tid), None, "", "",
                        _attempts(self._earlier.get(tid), self._hand.get(tid),
                                  self._started.get(tid)))


def done_worker(rec: _Done) -> str:
    """The worker of a finished task's last attempt ("" if never handed out)."""
    hand = rec[10]
    return hand[0] if hand else ""


def done_info(rec: _Done) -> TaskInfo:
    from netlet.cluster._stats import TaskInfo

    (tid, fn, client, ok, attempts, retries, finished, etype, tb, submitted, hand, started,
     earlier) = rec
    return TaskInfo(tid, fn, client, "done" if ok else "failed", hand[0] if hand else "",
                    attempts, retries, submitted, finished, etype, tb,
                    _attempts(earlier, hand, started))


def _attempts(earlier: Iterable[_Attempt] | None, hand: _Hand | None,
              started: float | None) -> tuple[TaskAttempt, ...]:
    if hand is None:
        return ()
    from netlet.cluster._stats import TaskAttempt

    return tuple(TaskAttempt(*a) for a in [*(earlier or ()), (hand[0], hand[1], started)])
