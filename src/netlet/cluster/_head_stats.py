"""The head's statistics queries; what it remembers is ``HeadMonitor``'s (``_head_monitor.py``).

``HeadStatsMixin`` gives ``Head`` its local, non-exposed queries
(``statistics()``, ``task_page()``, ``task_info()``, ``events()``): they run on
the head's loop, read no private state of anything else, and return frozen
records (``_stats.py``), imported when first asked for: a head that nobody
watches never loads them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from netlet.clock import Clock
from netlet.cluster._head_monitor import TASK_STATES, HeadMonitor, done_info, done_worker
from netlet.cluster._head_tasks import Member
from netlet.cluster._sched_records import ASSIGNED, DONE, QUEUED, RUNNING, Action, Deliver
from netlet.cluster._scheduler import Scheduler
from netlet.errors import CallCancelled
from netlet.node import Node

if TYPE_CHECKING:
    from netlet.cluster._stats import (
        ClusterEvent,
        HeadStatistics,
        NameInfo,
        TaskInfo,
        TaskPage,
        WorkerStats,
    )

__all__ = ["TASK_STATES", "HeadMonitor", "HeadStatsMixin"]


def worker_fields(member: Member, sched: Scheduler, now: float, state: str = "alive",
                  why: str = "") -> tuple[Any, ...]:
    """A ``WorkerStats``'s fields, as they are now (kept raw for a worker that died)."""
    info, load = member.info, member.load
    running, done, failed = sched.worker_load(member.node)
    return (
        member.node, info.name[:200], info.host[:200], info.pid, info.address[:200], state,
        member.since, max(0.0, now - member.last_seen) if state == "alive" else 0.0, running,
        max(done, member.done), max(failed, member.failed),
        load.cpu_percent if load is not None else None,
        load.rss_bytes if load is not None else None,
        time.time() if state == "dead" else None, why[:200],
        state == "alive" and sched.draining(member.node))


def worker_record(member: Member, sched: Scheduler, now: float, state: str = "alive",
                  why: str = "") -> WorkerStats:
    from netlet.cluster._stats import WorkerStats

    return WorkerStats(*worker_fields(member, sched, now, state, why))


class HeadStatsMixin:
    """The head's statistics queries (not exposed; see ``Head.dashboard`` for the RPC)."""

    _node: Node
    _sched: Scheduler
    _members: dict[str, Member]
    _names: dict[str, Any]
    _actors: dict[str, Any]
    _monitor: HeadMonitor
    _clock: Clock
    started: float
    _undelivered: int
    _paused: bool
    _act: Callable[[list[Action]], None]
    cancel: Callable[[list[str]], Awaitable[list[str]]]

    async def cancel_tasks(self, tids: list[str]) -> list[str]:
        """An operator cancels tasks no worker started (any client's: not exposed).

        Their clients are told (``CallCancelled``), so their futures end cancelled
        instead of waiting for ever.
        """
        clients = {t: task.client for t in tids if (task := self._sched.tasks.get(t))}
        cancelled = await self.cancel(tids)
        self._act([Deliver(clients[t], (t, False, None, CallCancelled(
            f"task {t} was cancelled from the dashboard before it started")))
            for t in cancelled if t in clients])
        return cancelled

    def drain_worker(self, node: str, on: bool = True) -> bool:
        """An operator drains a worker (``on``) or lets it take tasks again (not exposed).

        A drained worker is handed no new task; it finishes those it holds,
        then may be stopped without losing any. False if no such worker lives.
        """
        member = self._members.get(node) if isinstance(node, str) else None
        if member is None or member.role != "worker" or not member.alive:
            return False
        was = self._sched.draining(node)
        actions = self._sched.drain(node, bool(on))
        if actions is None:
            return False
        self._act(actions)
        if was != bool(on):
            self._monitor.event("drained" if on else "undrained", node, "worker",
                                member.info.name[:200])
        return True

    def track_tasks(self) -> None:
        """Keep per-task history (timings, attempts) from now on: a dashboard attached."""
        self._monitor.track()

    def statistics(self) -> HeadStatistics:
        """A snapshot: O(workers). Call it on the head's loop (the web layer does)."""
        from netlet.cluster._stats import HeadStatistics, TaskCounts

        now = self._clock.monotonic()  # heartbeat ages: the clock members are seen by
        sched, mon = self._sched, self._monitor
        workers = [worker_record(m, sched, now) for m in self._members.values()
                   if m.role == "worker" and m.alive]
        workers += mon.dead()
        clients = [m.node for m in self._members.values() if m.role == "client" and m.alive]
        held = tuple(c for c in clients if sched.held(c))
        st = sched.stats()
        counts = TaskCounts(st["queued"], st["unstarted"], st["running"], mon.submitted,
                            mon.done, mon.failed, st.get("retried", 0), mon.cancelled,
                            st["refused_results"], st["stale_requests"])
        return HeadStatistics(
            self._node.id, self._node.address or "", self.started, self._clock.time(),
            tuple(workers),
            len(clients), counts, len(self._names), len(self._actors), mon.last_event,
            mon.tracking, mon.task_seconds.snapshot(), mon.dispatch_seconds.snapshot(),
            held, self._undelivered, self._paused)

    def task_page(self, state: str = "", fn: str = "", worker: str = "", client: str = "",
                  offset: int = 0, limit: int = 50) -> TaskPage:
        """Tasks matching every filter given (substring for ``fn``, prefix for ids).

        Live tasks (oldest first) then finished ones (newest first). A page
        costs one pass over the live tasks and the finished ones kept, never
        more; with no filter but the state, only as far as the page reaches.
        """
        from netlet.cluster._stats import TaskPage

        offset, limit = max(0, int(offset)), max(1, min(int(limit), 500))
        mon = self._monitor

        def wanted(fn_: str, state_: str, worker_: str, client_: str) -> bool:
            return ((not state or state_ == state) and (not fn or fn in fn_)
                    and (not worker or worker_.startswith(worker))
                    and (not client or client_.startswith(client)))

        total = 0
        page: list[TaskInfo] = []
        if state in ("", QUEUED, ASSIGNED, RUNNING):
            known = None  # with no filter but the state, the count is kept: stop early
            if not (fn or worker or client):
                st = self._sched.stats()
                known = {"": st["queued"] + st["unstarted"] + st["running"],
                         QUEUED: st["queued"], ASSIGNED: st["unstarted"],
                         RUNNING: st["running"]}[state]
            for t in self._sched.tasks.values():
                if t.state != DONE and wanted(t.fn, t.state, t.worker, t.client):
                    if offset <= total < offset + limit:
                        page.append(mon.live_info(t))
                    total += 1
                    if known is not None and total >= offset + limit:
                        total = max(total, known)
                        break
        if state in ("", "done", "failed"):
            # With no filter but the state the count is kept: stop once the page is full.
            known = None if fn or worker or client else mon.finished_count(state)
            before = total
            for rec in mon.finished_raw():
                if known is not None and total >= offset + limit:
                    break
                if wanted(rec[1], "done" if rec[3] else "failed", done_worker(rec), rec[2]):
                    if offset <= total < offset + limit:
                        page.append(done_info(rec))
                    total += 1
            if known is not None:
                total = before + known
        return TaskPage(total, offset, limit, tuple(page))

    def task_info(self, tid: str) -> TaskInfo | None:
        task = self._sched.tasks.get(tid)
        if task is not None and task.state != DONE:
            return self._monitor.live_info(task)
        return next((done_info(r) for r in self._monitor.finished_raw() if r[0] == tid), None)

    def names_list(self) -> list[NameInfo]:
        """Every name, and every actor even while it waits to be restarted: O(names)."""
        from netlet.cluster._stats import NameInfo

        out: list[NameInfo] = []
        for name, (ref, owner) in sorted(self._names.items()):
            spec = self._actors.get(name)
            out.append(NameInfo(name, ref.kind, ref.address, owner, spec is not None,
                                spec.cls if spec else "", spec.restart or "" if spec else "",
                                self._monitor.restarts.get(name, 0)))
        for name, spec in sorted(self._actors.items()):
            if name not in self._names:
                out.append(NameInfo(name, "", "", "", True, spec.cls, spec.restart or "",
                                    self._monitor.restarts.get(name, 0)))
        return out

    def events(self, after: int = 0, limit: int = 200) -> list[ClusterEvent]:
        return self._monitor.events(int(after), max(1, min(int(limit), 1000)))
