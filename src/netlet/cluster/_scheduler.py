"""The head's task scheduler, sans I/O: queues, leases, retries, prefetch, cancel.

Plain objects, no sockets, threads, asyncio or clock reads: the head (a thin
shell, ``_head.py``) feeds it events - a submit, a worker asking for ``n``
tasks, tasks started, results, a worker lost, a cancel, a heartbeat naming
what a worker holds - with the current time, and carries out the actions it
returns: hand these tasks to that worker, take unstarted tasks back from that
one, tell a client its tasks started, deliver a result. Unit tests drive it
directly (``tests/cluster/test_scheduler.py``).

The rules it keeps:

* **Leases.** Each hand-out carries a fresh fencing token. Only the worker
  holding a task's current lease completes it; a result from an expired lease,
  a duplicate or anyone else is refused and changes nothing.
* **Epochs.** Each join gives the worker a new epoch, and every request it makes
  carries it. A request from an older epoch (a late packet on a connection the
  worker has since replaced) is refused whole: its results are not taken, and
  nothing is handed out on it.
* **Holding.** A heartbeat names every task the worker holds and the last
  hand-out it received; a task the head handed out before that and the worker
  no longer has goes back to the queue: no task stays "running" on a worker
  that does not have it.
* **Parallelism before prefetch.** A worker gets at most its fair share of
  what is queued, and when a worker waits for work while another holds tasks
  it has not started, those are taken back (the worker gives back only what
  it has not started, so nothing runs twice; what it keeps is not asked for
  again) and handed to the idle one.
* **RUNNING means started.** A task counts as running once its worker says it
  started it; until then a cancel takes it back.
* **Retries.** A task whose worker died while running it runs again, up to its
  ``retries``; then it fails with ``WorkerLost``. A task lost before it
  started costs no attempt (but with none known running, the worker's oldest
  hand-out counts as running: started notices may lag).
* **Holds.** A held client's queued tasks are not handed out; others' are
  (``hold``, backpressure from its results the head has not delivered yet).
* **Cost.** Every event costs O(1) per task it touches (amortised): a submit
  hands work to waiting workers one at a time, never waking them all, and a
  cancel marks the task instead of scanning the queue.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from netlet.cluster._sched_holds import SchedulerHolds
from netlet.cluster._sched_records import (
    ASSIGNED,
    DONE,
    QUEUED,
    RUNNING,
    Action,
    Deliver,
    Handout,
    Reclaim,
    StaleEpoch,
    Started,
    Task,
    WorkerSlot,
)
from netlet.errors import WorkerLost

__all__ = [
    "ASSIGNED", "DONE", "QUEUED", "RUNNING",
    "Action", "Deliver", "Handout", "Reclaim", "Scheduler", "StaleEpoch", "Started", "Task",
]

class Scheduler(SchedulerHolds):
    """Tasks and the workers that pull them; every method is one event.

    ``token()`` makes lease tokens (random by default; a test may pass a
    counter to replay a run exactly).
    """

    # -- queries --------------------------------------------------------------------

    # -- membership -----------------------------------------------------------------

    def join(self, node: str, now: float) -> tuple[int, list[Action]]:
        """A worker joins or rejoins; returns its new epoch.

        A rejoining worker keeps the tasks it was handed (its heartbeats say
        which it still has); a pull parked on its old epoch is answered empty.
        """
        self._epochs += 1
        out: list[Action] = []
        w = self._workers.get(node)
        if w is None:
            w = self._workers[node] = WorkerSlot(node, self._epochs)
        else:
            w.epoch = self._epochs
            self._unpark(w, out)
        self._rebalance(out)
        return w.epoch, out

    def worker_lost(self, node: str) -> list[Action]:
        """A worker died or left: what it held goes back to the queue (or fails)."""
        out: list[Action] = []
        w = self._workers.pop(node, None)
        if w is None:
            return out
        waiting = [d.pop(node, 0) for d in (self._parked, self._full, self._stuck)]
        if None in waiting:  # its pull still waits: answer it, or it would wait for ever
            out.append(Handout(node, (), w.seq))
        self._drained -= w.draining
        self._surplus.pop(node, None)
        self._unstarted -= len(w.assigned)
        self._running -= len(w.running)
        # Started notices come late (a short task's result says it instead): with
        # none known running, the oldest hand-out may have been running, and may
        # have killed its worker. It is charged an attempt, so such a task cannot
        # come back for ever.
        suspect = next(iter(w.assigned), "") if not w.running else ""
        for tid in w.assigned:
            self._requeue_detached(self.tasks[tid], tid == suspect, out)
        for tid in w.running:
            self._requeue_detached(self.tasks[tid], True, out)
        if self._lacked:  # those left may all lack a function now
            self._forget_lacks(w, out)
        self._feed(out)
        return out

    # -- tasks in -------------------------------------------------------------------

    def submit(self, client: str, specs: Iterable[tuple[str, str, bytes, int]],
               now: float) -> tuple[list[Task], list[Action]]:
        """Queue tasks ``(id, fn, body, retries)``; returns the new ones (not resubmissions)."""
        new: list[Task] = []
        out: list[Action] = []
        for tid, fn, body, retries in specs:
            if tid in self.tasks or tid in self._ended:
                continue  # a resubmission, or a late copy: queued, running or done already
            if tid in self._cancelled_early:
                continue  # its cancel overtook its submit (every copy of it)
            task = Task(tid, client, fn, body, int(retries))
            self._add(task)
            new.append(task)
            if not self._fail_new(task, out):  # no live worker can import its function
                self._enqueue(task, front=False)
        self._feed(out)
        return new, out

    def reject(self, client: str, tid: str, fn: str, body: bytes, error: BaseException,
               ) -> list[Action]:
        """A task the head refuses to queue: it ends at once with ``error``."""
        if tid in self.tasks:
            return []
        task = Task(tid, client, fn, body, 0)
        self._add(task)
        out: list[Action] = []
        self._finish(task, (tid, False, None, error), out)
        return out

    def restore(self, task: Task, result: tuple[str, bool, bytes | None, BaseException | None]
                | None) -> list[Action]:
        """A task read back from durable state: queued again, or done with ``result``."""
        self._add(task)
        out: list[Action] = []
        if result is not None:
            self._finish(task, result, out)
        else:
            task.state = QUEUED
            self._enqueue(task, front=False)
        return out

    # -- hand-outs ------------------------------------------------------------------

    def pull(self, node: str, epoch: int, want: int, now: float) -> list[Action]:
        """``node`` asks for up to ``want`` more tasks.

        Returns a Handout for it at once when there is work; otherwise its pull
        is parked (answered by a later event, or by ``expire``) and what
        comes back is only Reclaims that fetch work for it from other workers.
        """
        w = self._check(node, epoch)
        out: list[Action] = []
        self._unpark(w, out)  # one pull per worker at a time
        want = max(1, min(int(want), self.max_batch))
        batch = self._take(w, want)
        if batch:
            out.append(self._handout(w, batch))
            return out
        w.parked, w.parked_at = want, now
        self._surplus.pop(node, None)  # it waits: nothing is taken back from it
        if w.draining or (len(self._queue) and not w.blocked):
            self._full[node] = None  # it holds its share: more once it starts one
        elif len(self._queue):  # only what it lacks is queued
            self._stuck[node] = None
            self._rebalance(out, [node])
        else:
            self._parked[node] = None
            self._rebalance(out)
        return out

    def expire(self, now: float, pull_wait: float) -> list[Action]:
        """Answer empty every pull parked longer than ``pull_wait`` (lets workers heartbeat)."""
        out: list[Action] = []
        # Every waiting pull is looked at (once per sweep, not per event): the
        # dicts are not in the order the pulls came (a pull may move between them).
        for parked in (self._parked, self._full, self._stuck):
            for node in [n for n in parked if now - self._workers[n].parked_at >= pull_wait]:
                self._unpark(self._workers[node], out)
        return out

    def drain(self, node: str, on: bool = True) -> list[Action] | None:
        """Hand ``node`` nothing new (``on``), or again; None if no such worker.

        A drained worker finishes the tasks it holds (started or not; those it
        has not started may still be taken back for an idle worker); its
        pulls wait, answered empty by ``expire``, so it keeps heartbeating and
        may then be stopped without losing a task.
        """
        w = self._workers.get(node)
        if w is None:
            return None
        out: list[Action] = []
        if on and not w.draining:
            w.draining = True
            self._drained += 1
            self._unpark(w, out)
        elif not on and w.draining:
            w.draining = False
            self._drained -= 1
            self._unfull(w)
            self._feed(out)
        return out

    def _take(self, w: WorkerSlot, want: int) -> list[Task]:
        if self._paused or w.draining:
            return []
        if w.blocked and not self._may_run_new(w):
            w.blocked_at = self._pushes  # only what it lacks is queued: no walk over it
            return []
        room = min(want, self._share() - len(w.assigned))
        if not w.assigned and not w.running:
            room = max(room, 1)
        batch: list[Task] = []
        # One random draw per hand-out; each task's lease unique.
        batch = self._take_tasks(w, room, self._token())
        if batch:
            self._mark(w)
        return batch

    def _feed(self, out: list[Action]) -> None:
        """Hand queued work to parked workers, oldest first, one at a time.

        A worker that lacks the function of every queued task lets the wake-up
        pass to the next one: it waits aside (``_stuck``), looked at again only
        once more tasks were queued or none is, so no event walks over such
        workers one by one.
        """
        if self._stuck and (self._stuck_at != self._pushes or not len(self._queue)):
            self._unstick()
        stuck: list[str] = []
        while len(self._queue) and self._parked:
            node = next(iter(self._parked))
            del self._parked[node]
            w = self._workers[node]
            batch = self._take(w, w.parked)
            if not batch:
                if w.blocked:
                    self._stuck[node] = None
                    stuck.append(node)
                else:
                    self._full[node] = None
                continue
            w.parked = 0
            out.append(self._handout(w, batch))
        self._stuck_at = self._pushes
        if self._stuck and not len(self._queue):
            self._unstick()  # the others took the last tasks
        if self._parked and not len(self._queue):
            self._rebalance(out)
        elif stuck:
            self._rebalance(out, stuck)

    def _rebalance(self, out: list[Action], stuck: list[str] | None = None) -> None:
        """A worker waits and none is queued (or only what the ``stuck`` ones lack):
        take back others' unstarted tasks.

        A worker keeps one unstarted task when the scheduler knows of none it
        runs (it is about to start it); the rest come back to be shared.
        """
        if not self._surplus:
            return
        if stuck is None and (not self._parked or len(self._queue)):
            return
        waiting = self._parked if stuck is None else stuck
        # Only tasks a waiting worker can run (while some lack functions); looking at
        # the waiting workers stops at the first that lacks nothing (O(1) as a rule:
        # this runs on every event while workers wait, heartbeats included).
        able = not self._lacked or any(not self._workers[n].lacks for n in waiting)
        lacking = [] if able else [self._workers[n].lacks for n in waiting]
        for node in list(self._surplus):  # waiting workers are never in it (``_mark``)
            w = self._workers[node]
            keep = 0 if w.running else 1
            extra = [t for t in list(w.assigned)[keep:]
                     if t not in w.reclaiming and t not in w.kept
                     and (able or any(self.tasks[t].fn not in lk for lk in lacking))]
            if extra or able:  # else kept for a waiting worker that can run them
                del self._surplus[node]
            if extra:
                w.reclaiming.update(extra)
                out.append(Reclaim(w.node, w.epoch, tuple(extra)))

    def gave_back(self, reclaim: Reclaim, returned: Iterable[str],
                  ) -> tuple[list[str], list[Action]]:
        """A worker answered ``reclaim``: ``returned`` it had not started (and dropped).

        They go back to the queue, or end cancelled (returned first) if the
        reclaim was a cancel's.
        """
        out: list[Action] = []
        dropped: list[str] = []
        w = self._workers.get(reclaim.worker)
        if w is None:
            return dropped, out  # it died meanwhile: worker_lost requeued everything
        back = set(returned)
        for tid in reclaim.tasks:
            w.reclaiming.discard(tid)
            if tid not in w.assigned:
                continue
            if tid not in back:
                w.kept.add(tid)
                continue
            w.kept.discard(tid)
            del w.assigned[tid]
            self._unstarted -= 1
            task = self.tasks[tid]
            if reclaim.cancel:
                task.state = DONE
                self._drop(task)
                self._cancelled_early.add(tid)
                dropped.append(tid)
            else:
                self._enqueue(task, front=True)
        self._mark(w)
        self._unfull(w)
        self._feed(out)
        return dropped, out

    # -- progress -------------------------------------------------------------------

    def started(self, node: str, epoch: int, tids: Iterable[str]) -> list[Action]:
        """``node`` started these tasks: they count as running, and their clients hear so."""
        w = self._check(node, epoch)
        return self._started(w, tids)

    def _started(self, w: WorkerSlot, tids: Iterable[str]) -> list[Action]:
        by_client: dict[str, list[str]] = {}
        for tid in tids:
            if tid not in w.assigned:
                continue  # finished already, taken back, or not this worker's
            del w.assigned[tid]
            w.reclaiming.discard(tid)
            w.kept.discard(tid)
            w.running.add(tid)
            self._unstarted -= 1
            self._running += 1
            task = self.tasks[tid]
            task.state = RUNNING
            by_client.setdefault(task.client, []).append(tid)
        out: list[Action] = [Started(c, tuple(t)) for c, t in by_client.items()]
        if by_client:
            self._mark(w)
            self._unfull(w)
            self._feed(out)
        return out

    def results(self, node: str, epoch: int,
                results: Iterable[tuple[str, bool, bytes, str]]) -> list[Action]:
        """Results ``(id, ok, body, lease)`` from ``node``; only current leases count.

        A request from an older epoch is refused whole (StaleEpoch), each of its
        results counted as refused.
        """
        results = list(results)
        w = self._workers.get(node)
        if w is None or w.epoch != epoch:
            self.refused_results += len(results)
            self.stale_requests += 1
            raise StaleEpoch(f"worker {node[:8]}: epoch {epoch} is not current: join again")
        out: list[Action] = []
        for tid, ok, body, lease in results:
            task = self.tasks.get(tid)
            if (task is None or task.state not in (ASSIGNED, RUNNING) or task.worker != node
                    or not task.lease or not secrets.compare_digest(task.lease, lease)):
                self.refused_results += 1
                continue
            if task.state == ASSIGNED:  # it ran and ended before its start was told
                del w.assigned[tid]
                w.reclaiming.discard(tid)
                w.kept.discard(tid)
                self._unstarted -= 1
                self._unfull(w)
            else:
                w.running.discard(tid)
                self._running -= 1
            self._mark(w)
            if ok:
                w.done += 1
            else:
                w.failed += 1
            self._finish(task, (tid, bool(ok), body, None), out)
        self._feed(out)
        return out

    def heartbeat(self, node: str, epoch: int, holding: Iterable[str], seen: int,
                  now: float) -> list[Action]:
        """``node`` holds ``holding`` and received hand-outs up to ``seen``.

        Any task handed to it by then that it no longer holds was lost on the
        way (a reply that met a reset, a result that did not arrive): it goes
        back to the queue.
        """
        w = self._check(node, epoch)
        held = set(holding)
        out: list[Action] = []
        for tid in [*w.assigned, *w.running]:
            task = self.tasks[tid]
            if tid in held or task.seq > seen:
                continue
            started = tid in w.running
            self._detach(task, w)
            self._requeue_detached(task, started, out)
        self._feed(out)
        return out

    # -- endings --------------------------------------------------------------------

    def _requeue_detached(self, task: Task, started: bool, out: list[Action]) -> None:
        if started:
            task.attempts += 1
        if task.attempts <= task.retries:
            self.retried += started
            self._enqueue(task, front=True)
            return
        error = WorkerLost(f"the worker running task {task.id} died "
                           f"({task.attempts} time(s); max_retries={task.retries})")
        self._finish(task, (task.id, False, None, error), out)

    def cancel(self, caller: str | None, tids: Iterable[str]) -> tuple[list[str], list[Action]]:
        """Cancel tasks not started yet; returns those cancelled now (O(1) each).

        A queued task is dropped where it stands. For one handed out but not
        started, a Reclaim asks its worker to give it back: only if it does
        (``gave_back``) is it cancelled, so no live worker runs a cancelled task.
        With a ``caller`` (a network peer), only its own tasks.
        """
        cancelled: list[str] = []
        out: list[Action] = []
        reclaim: dict[str, list[str]] = {}
        for tid in tids:
            task = self.tasks.get(tid)
            if task is None:
                if tid in self._ended:
                    continue  # it ended and its client has the result: too late
                self._cancelled_early.add(tid)  # its submit is on its way
                cancelled.append(tid)
                continue
            if caller is not None and task.client != caller:
                continue
            if task.state == QUEUED:
                self._queue.left(task)  # its entry is skipped when reached
            elif task.state == ASSIGNED:
                w = self._workers[task.worker]
                if tid not in w.reclaiming:
                    w.kept.discard(tid)  # reclaiming and kept never share a task
                    w.reclaiming.add(tid)
                    self._mark(w)
                    reclaim.setdefault(w.node, []).append(tid)
                continue
            else:
                continue
            task.state = DONE
            self._drop(task)
            self._cancelled_early.add(tid)  # a late copy of its submit stays dropped
            cancelled.append(tid)
        for node, mine in reclaim.items():
            out.append(Reclaim(node, self._workers[node].epoch, tuple(mine), cancel=True))
        self._queue.compact()
        return cancelled, out
