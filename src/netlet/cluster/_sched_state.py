"""The scheduler's state and its bookkeeping: what every event of ``Scheduler`` shares.

Counters are kept as tasks move (queued, handed out, started), so no query
and no event scans the tasks or the workers.
"""

from __future__ import annotations

import collections
import math
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from netlet.cluster._sched_records import (
    ASSIGNED,
    DONE,
    QUEUED,
    RUNNING,
    Action,
    Deliver,
    Handout,
    StaleEpoch,
    Task,
    TaskQueue,
    WorkerSlot,
)

__all__ = ["TOMBSTONES", "SchedulerState", "Tombstones"]

TOMBSTONES = 100_000
"""Task ids remembered after their task is gone, per kind (a few MB at most)."""


class Tombstones:
    """The newest ``TOMBSTONES`` ids of tasks that are gone; O(1) to add and to ask.

    (Not a dict trimmed from its front: deleted slots at a dict's start make every
    ``next(iter(d))`` walk over them, which W7 caught as 5 µs more per task.)
    """

    __slots__ = ("_ids", "_order")

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._order: collections.deque[str] = collections.deque()

    def __contains__(self, tid: object) -> bool:
        return tid in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, tid: str) -> None:
        if tid in self._ids:
            return
        self._ids.add(tid)
        self._order.append(tid)
        if len(self._order) > TOMBSTONES:
            self._ids.discard(self._order.popleft())


class SchedulerState:
    """Tasks, workers' slots, parked pulls and counters (see ``Scheduler``)."""

    def __init__(self, token: Callable[[], str] | None = None, max_batch: int = 1024) -> None:
        self._token = token or (lambda: secrets.token_hex(12))
        self.max_batch = max_batch
        self.tasks: dict[str, Task] = {}
        self._queue = TaskQueue(self.tasks)
        self._unstarted = 0
        self._running = 0
        self._workers: dict[str, WorkerSlot] = {}
        self._parked: dict[str, None] = {}
        """Pulls waiting for work, oldest first."""
        self._stuck: dict[str, None] = {}
        """Pulls of workers that lack the function of every queued task, as of
        ``_stuck_at`` pushes (looked at again after more, see ``_feed``)."""
        self._stuck_at = 0
        self._fn_pushed: dict[str, int] = {}
        """The functions queued since ``_fn_log_start`` pushes: when each was last (a
        blocked worker looks here whether one it can run came, see ``_may_run_new``)."""
        self._fn_log_start = 0
        self._full: dict[str, None] = {}
        """Pulls of workers holding their share of unstarted tasks: fed once they start one."""
        self._surplus: dict[str, None] = {}
        """Workers holding unstarted tasks they could give back (see ``_rebalance``)."""
        self._by_client: dict[str, set[str]] = {}
        self._cancelled_early = Tombstones()
        """Ids cancelled before their submit came, or while queued or unstarted (the
        newest ``TOMBSTONES``): a copy of their submit arriving later is dropped."""
        self._ended = Tombstones()
        """Ids whose result their client has (the newest ``TOMBSTONES``): a late copy of
        their submit does not run them again, nor does a cancel claim them."""
        self._epochs = 0
        self._handouts = 0
        self._paused = False
        self._drained = 0
        """Workers drained by an operator (they count for no share)."""
        self._lacked: dict[str, int] = {}
        """Functions some worker cannot import: how many workers lack each."""
        self._pushes = 0
        """Tasks ever queued (a worker that lacked all of them looks again after more)."""
        self.refused_results = 0
        """Results refused: late (an expired lease), duplicates, or not from the lease holder."""
        self.stale_requests = 0
        """Requests refused because they came from a worker's older epoch."""
        self.retried = 0
        """Tasks started again after the worker running them was lost."""

    @property
    def queued(self) -> int:
        """Tasks waiting for a worker (those of held clients too)."""
        return self._queue.total

    @property
    def clients(self) -> int:
        """Clients with tasks here (queued, running, or done and not delivered yet)."""
        return len(self._by_client)

    @property
    def running(self) -> int:
        """Tasks handed out (started or not) and not finished."""
        return self._unstarted + self._running

    def worker_load(self, node: str) -> tuple[int, int, int]:
        """(tasks held, done, failed) of a worker, or zeros."""
        w = self._workers.get(node)
        if w is None:
            return 0, 0, 0
        return len(w.assigned) + len(w.running), w.done, w.failed

    def holds(self, node: str) -> set[str]:
        """The tasks the scheduler believes ``node`` holds (started or not)."""
        w = self._workers.get(node)
        return set() if w is None else {*w.assigned, *w.running}

    def unstarted(self, node: str) -> list[str]:
        w = self._workers.get(node)
        return [] if w is None else list(w.assigned)

    def draining(self, node: str) -> bool:
        w = self._workers.get(node)
        return w is not None and w.draining

    def is_parked(self, node: str) -> bool:
        return node in self._parked or node in self._stuck

    def epoch(self, node: str) -> int | None:
        w = self._workers.get(node)
        return None if w is None else w.epoch

    def _check(self, node: str, epoch: int) -> WorkerSlot:
        w = self._workers.get(node)
        if w is None or w.epoch != epoch:
            self.stale_requests += 1
            raise StaleEpoch(f"worker {node[:8]}: epoch {epoch} is not current: join again")
        return w

    def _add(self, task: Task) -> None:
        self.tasks[task.id] = task
        self._by_client.setdefault(task.client, set()).add(task.id)

    def _enqueue(self, task: Task, front: bool) -> None:
        self._pushes += 1
        if len(self._fn_pushed) >= 1024 and task.fn not in self._fn_pushed:
            self._forget_pushes()
        self._fn_pushed[task.fn] = self._pushes
        self._queue.push(task, front)

    def _forget_pushes(self) -> None:
        """Blocked workers look at the queue itself again (``_may_run_new`` says "maybe")."""
        self._fn_pushed.clear()
        self._fn_log_start = self._pushes

    def _pop(self) -> Task | None:
        return self._queue.pop()

    def _unpark(self, w: WorkerSlot, out: list[Action]) -> None:
        if (self._parked.pop(w.node, 0) is None or self._full.pop(w.node, 0) is None
                or self._stuck.pop(w.node, 0) is None):
            w.parked = 0
            out.append(Handout(w.node, (), w.seq))
            self._mark(w)  # not waiting any more: what it holds may go to those who wait
            if w.node in self._surplus and self._parked:
                self._rebalance(out)

    def _rebalance(self, out: list[Action], stuck: list[str] | None = None) -> None:
        raise NotImplementedError

    def _unfull(self, w: WorkerSlot) -> None:
        """``w`` started or lost an unstarted task: a pull held at its share may go on."""
        if w.draining:
            return  # held until ``expire`` answers it empty
        if self._full.pop(w.node, 0) is None:
            self._parked[w.node] = None

    def _mark(self, w: WorkerSlot) -> None:
        """Keep ``_surplus`` up to date after ``w``'s tasks changed.

        A worker whose pull waits (parked or full) is left out: nothing is
        taken back from it, and so ``_rebalance`` never walks over it (with
        many workers waiting, that walk was O(workers) per event). It is
        marked again when its pull is answered.
        """
        keep = 0 if w.running else 1
        if (len(w.assigned) - len(w.reclaiming) - len(w.kept) > keep
                and w.node not in self._parked and w.node not in self._full
                and w.node not in self._stuck):
            self._surplus[w.node] = None
        else:
            self._surplus.pop(w.node, None)

    def _share(self) -> int:
        """The most unstarted tasks one worker may hold: what is waiting, split evenly."""
        return max(1, math.ceil((len(self._queue) + self._unstarted)
                                 / max(1, len(self._workers) - self._drained)))

    def _handout(self, w: WorkerSlot, batch: list[Task]) -> Handout:
        # Numbered across all workers, so a late reply from a worker's former slot
        # never carries a number its new slot has yet to reach.
        self._handouts += 1
        w.seq = self._handouts
        for task in batch:
            task.seq = w.seq
        return Handout(w.node, tuple(batch), w.seq)

    def _detach(self, task: Task, w: WorkerSlot) -> None:
        if task.id in w.assigned:
            del w.assigned[task.id]
            self._unstarted -= 1
        elif task.id in w.running:
            w.running.discard(task.id)
            self._running -= 1
        w.reclaiming.discard(task.id)
        w.kept.discard(task.id)
        self._mark(w)
        self._unfull(w)

    def _finish(self, task: Task, result: tuple[str, bool, bytes | None, BaseException | None],
                out: list[Action]) -> None:
        task.state, task.worker, task.lease = DONE, "", ""
        out.append(Deliver(task.client, result))

    def _drop(self, task: Task) -> None:
        del self.tasks[task.id]
        mine = self._by_client.get(task.client)
        if mine is not None:
            mine.discard(task.id)
            if not mine:
                del self._by_client[task.client]

    def epochs_after(self, floor: int) -> None:
        """Hand out only epochs above ``floor`` from now on (a head restarted from its
        store: its workers' epochs keep growing)."""
        self._epochs = max(self._epochs, floor)

    def delivered(self, tids: Iterable[str]) -> None:
        """The client acknowledged these results: forget the tasks (but not their ids)."""
        for tid in tids:
            task = self.tasks.get(tid)
            if task is not None and task.state == DONE:
                self._drop(task)
                self._ended.add(tid)

    def forget_client(self, client: str) -> list[str]:
        """A client is gone for good: drop its tasks; returns their ids."""
        gone = list(self._by_client.pop(client, ()))
        for tid in gone:
            task = self.tasks.pop(tid)
            if task.state == QUEUED:
                self._queue.left(task)
            elif task.state in (ASSIGNED, RUNNING):
                w = self._workers.get(task.worker)
                if w is not None:
                    self._detach(task, w)
            task.state = DONE
        self._queue.release(client)
        self._queue.compact()
        return gone

    def stats(self) -> dict[str, Any]:
        return {"queued": self._queue.total, "held": self._queue.held,
                "unstarted": self._unstarted, "running": self._running,
                "workers": len(self._workers), "parked": len(self._parked) + len(self._stuck),
                "refused_results": self.refused_results, "stale_requests": self.stale_requests,
                "retried": self.retried}
