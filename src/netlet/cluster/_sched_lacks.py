"""The scheduler's rule for functions a worker cannot import (``unrunnable``).

A worker that cannot import a task's function hands the task back: it goes
to the front of the queue, and that worker is never offered that function
again. Once every live worker lacks a function, its queued tasks, and later
submits of it, fail with a ``ConfigError`` naming the worker and the fix.

Cost: a worker that lacks nothing takes tasks exactly as before (no check
per task); one that lacks some function skips those tasks as it takes, and
a parked worker that can run none of the queued tasks lets the wake-up pass
to the next parked worker (``Scheduler._feed``) and waits aside until a
task it can run is queued: it is not looked at per event, and whether such
a task came is read from a log of the functions queued since, not from the
queue.
"""

from __future__ import annotations

import secrets

from netlet.cluster._sched_records import ASSIGNED, QUEUED, RUNNING, Action, Task, WorkerSlot
from netlet.cluster._sched_state import SchedulerState
from netlet.errors import ConfigError

__all__ = ["MAX_LACKS", "SchedulerLacks"]

MAX_LACKS = 4096
"""Functions one worker may lack; a task of a further one it cannot import fails at once."""


class SchedulerLacks(SchedulerState):
    """``unrunnable`` and what follows from it (see the module docstring)."""

    def _feed(self, out: list[Action]) -> None:
        raise NotImplementedError

    def lacks(self, node: str, fn: str) -> bool:
        """Did ``node`` say it cannot import ``fn``?"""
        w = self._workers.get(node)
        return w is not None and fn in w.lacks

    def unrunnable(self, node: str, tid: str, lease: str, message: str,
                   now: float) -> list[Action]:
        """``node`` cannot import the function of task ``tid`` it holds under ``lease``.

        Refused (counted in ``refused_results``) unless ``node`` holds the
        task's current lease. Costs the task no attempt.
        """
        w = self._workers.get(node)
        task = self.tasks.get(tid) if isinstance(tid, str) else None
        if (w is None or task is None or task.state not in (ASSIGNED, RUNNING)
                or task.worker != node or not task.lease or not isinstance(lease, str)
                or not secrets.compare_digest(task.lease, lease)):
            self.refused_results += 1
            return []
        out: list[Action] = []
        self._detach(task, w)
        message = str(message)[:2000]
        if task.fn not in w.lacks and len(w.lacks) >= MAX_LACKS:
            # It would be offered again and again: this one task fails instead.
            w.failed += 1
            self._finish(task, (tid, False, None, ConfigError(message)), out)
            self._feed(out)
            return out
        if task.fn not in w.lacks:
            w.lacks[task.fn] = message
            self._lacked[task.fn] = self._lacked.get(task.fn, 0) + 1
        self._enqueue(task, front=True)
        self._fail_everywhere(task.fn, out)
        self._feed(out)
        return out

    def _why_nowhere(self, fn: str) -> str | None:
        """Why no live worker can run ``fn`` (None: one can, or there is no worker)."""
        n = self._lacked.get(fn, 0)
        if not n or n < len(self._workers):
            return None
        why = next(w.lacks[fn] for w in self._workers.values())
        return why + (f" (nor can the {n - 1} other worker(s))" if n > 1 else "")

    def _fail_everywhere(self, fn: str, out: list[Action]) -> None:
        """If every live worker lacks ``fn``, its queued tasks fail (one scan, once)."""
        why = self._why_nowhere(fn)
        if why is None:
            return
        failed = [t for t in self.tasks.values() if t.state == QUEUED and t.fn == fn]
        for task in failed:
            self._queue.left(task)
            self._finish(task, (task.id, False, None, ConfigError(why)), out)
        self._queue.compact()

    def _fail_new(self, task: Task, out: list[Action]) -> bool:
        """A submit of a function no live worker can import fails at once."""
        if not self._lacked or task.fn not in self._lacked:
            return False
        why = self._why_nowhere(task.fn)
        if why is None:
            return False
        self._finish(task, (task.id, False, None, ConfigError(why)), out)
        return True

    def _forget_lacks(self, w: WorkerSlot, out: list[Action]) -> None:
        """``w`` is gone: the functions it lacked may now be lacked by every worker left."""
        for fn in w.lacks:
            n = self._lacked.get(fn, 0) - 1
            if n > 0:
                self._lacked[fn] = n
            else:
                self._lacked.pop(fn, None)
        for fn in list(self._lacked):
            self._fail_everywhere(fn, out)

    def _may_run_new(self, w: WorkerSlot) -> bool:
        """Was a task of a function ``w`` does not lack queued since its take found
        none? O(functions queued since), never a walk over the queue; "maybe" once
        the log of those was reset."""
        if w.blocked_at < self._fn_log_start:
            return True
        return any(at > w.blocked_at and fn not in w.lacks for fn, at in self._fn_pushed.items())

    def _unstick(self) -> None:
        """Stuck workers go back to waiting for work if they may find some now: none is
        queued any more (so they may take others' unstarted tasks), or a task they can
        run was queued since they looked; the others stay aside."""
        if not len(self._queue):
            self._parked.update(self._stuck)
            self._stuck = {}
            return
        for node in list(self._stuck):
            w = self._workers[node]
            if self._may_run_new(w):
                del self._stuck[node]
                self._parked[node] = None
            else:
                w.blocked_at = self._pushes  # nothing new it can run

    def _take_tasks(self, w: WorkerSlot, room: int, token: str) -> list[Task]:
        """Pop up to ``room`` tasks for ``w``, leaving (in order) those it cannot import."""
        batch: list[Task] = []
        skipped: list[Task] = []
        while len(batch) < room:
            task = self._pop()
            if task is None:
                break
            if w.lacks and task.fn in w.lacks:
                skipped.append(task)
                continue
            task.state, task.worker, task.lease = ASSIGNED, w.node, f"{token}.{len(batch)}"
            w.assigned[task.id] = None
            self._unstarted += 1
            batch.append(task)
        for task in reversed(skipped):  # back in place: not new work for blocked workers
            self._queue.push(task, front=True)
        w.blocked = not batch and room > 0 and bool(skipped)
        w.blocked_at = self._pushes
        return batch
