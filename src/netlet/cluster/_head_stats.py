"""What the head remembers for its statistics: counters, events, dead workers, task history.

``HeadMonitor`` is fed by the head as things happen (each hook O(1) per task
it touches). Counters, events, recent deaths and failed tasks (with their
remote traceback) are always kept, in bounded memory. Per-task timings and
attempts cost a little on every task, so they are kept only once something
asks for them (``track()``: a dashboard attaching).

``HeadStatsMixin`` gives ``Head`` its local, non-exposed queries
(``statistics()``, ``task_page()``, ``task_info()``, ``events()``): they run on
the head's loop, read no private state of anything else, and return frozen
records (``_stats.py``), imported when first asked for: a head that nobody
watches never loads them. Events and dead workers are kept as tuples until they are read.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from netlet.clock import Clock
from netlet.cluster._head_tasks import Member
from netlet.cluster._histogram import HistogramCounter
from netlet.cluster._sched_records import (
    ASSIGNED,
    DONE,
    QUEUED,
    RUNNING,
    Action,
    Deliver,
    Task,
)
from netlet.cluster._scheduler import Scheduler
from netlet.errors import CallCancelled
from netlet.node import Node

if TYPE_CHECKING:
    from netlet.cluster._stats import (
        ClusterEvent,
        HeadStatistics,
        NameInfo,
        TaskAttempt,
        TaskInfo,
        TaskPage,
        WorkerStats,
    )

__all__ = ["TASK_STATES", "HeadMonitor", "HeadStatsMixin"]

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
    walk (D1: about 0.3 µs per task, where a list per task cost 1.6).
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
        if self._tb_bytes and len(fin) == fin.maxlen:
            self._tb_bytes -= len(fin[0][8])
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
            if self._tb_bytes and len(fin) == fin.maxlen:
                self._tb_bytes -= len(fin[0][8])
            task = get(tid)
            if task is None:
                fin.append((tid, "?", "", True, 0, 0, now, "", "", submitted, hand, started,
                            tuple(earlier) if earlier else None))
            else:
                fin.append((tid, task.fn, task.client, True, task.attempts, task.retries, now,
                            "", "", submitted, hand, started,
                            tuple(earlier) if earlier else None))
        self.done += done

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


def _num(value: Any, kind: type) -> Any:
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def worker_fields(member: Member, sched: Scheduler, now: float, state: str = "alive",
                  why: str = "") -> tuple[Any, ...]:
    """A ``WorkerStats``'s fields, as they are now (kept raw for a worker that died)."""
    info = member.info
    running, done, failed = sched.worker_load(member.node)
    cpu = info.get("cpu_percent")
    if not isinstance(cpu, int | float) or isinstance(cpu, bool):
        cpu = None
    return (
        member.node, str(info.get("name", ""))[:200], str(info.get("host", ""))[:200],
        _num(info.get("pid"), int), str(info.get("address", ""))[:200], state, member.since,
        max(0.0, now - member.last_seen) if state == "alive" else 0.0, running,
        max(done, member.done), max(failed, member.failed),
        float(cpu) if cpu is not None else None, _num(info.get("rss_bytes"), int),
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
                                str(member.info.get("name", ""))[:200])
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
        clients = sum(1 for m in self._members.values() if m.role == "client" and m.alive)
        st = sched.stats()
        counts = TaskCounts(st["queued"], st["unstarted"], st["running"], mon.submitted,
                            mon.done, mon.failed, st.get("retried", 0), mon.cancelled,
                            st["refused_results"], st["stale_requests"])
        return HeadStatistics(
            self._node.id, self._node.address or "", self.started, self._clock.time(),
            tuple(workers),
            clients, counts, len(self._names), len(self._actors), mon.last_event, mon.tracking,
            mon.task_seconds.snapshot(), mon.dispatch_seconds.snapshot())

    def task_page(self, state: str = "", fn: str = "", worker: str = "", client: str = "",
                  offset: int = 0, limit: int = 50) -> TaskPage:
        """Tasks matching every filter given (substring for ``fn``, prefix for ids).

        Live tasks (oldest first) then finished ones (newest first). A page
        costs one pass over the live tasks, never more.
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
            for rec in mon.finished_raw():
                if wanted(rec[1], "done" if rec[3] else "failed", done_worker(rec), rec[2]):
                    if offset <= total < offset + limit:
                        page.append(done_info(rec))
                    total += 1
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
