"""The head's task desk: the network face of the scheduler (``Head`` inherits it).

It turns calls from clients and workers into scheduler events, and the
scheduler's actions into messages: it answers parked pulls, asks workers to
give back unstarted tasks, tells clients which tasks started, and delivers
results in messages the frame limits accept.

Backpressure, never a loss and never a stall: each client has a part of the
result budget (the budget split evenly among the clients with tasks here,
plus one part kept free for the next one). A client whose results wait
beyond its part has its queued tasks held back (``Scheduler.hold``) until
its deliveries drain under half its part; other clients' tasks go on. Only
when the whole budget is spent (several clients stuck at once) does no task
go out. So the results held never exceed the budget plus what the tasks
already handed out return.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netlet.clock import Clock
from netlet.cluster._batches import batches
from netlet.cluster._code import MAX_PACKAGE, MAX_TOTAL, CodeStore
from netlet.cluster._head_checks import _as_itself, _expect_int, _expect_sink
from netlet.cluster._member_messages import JoinInfo, Load
from netlet.cluster._messages import Delivery, Finished, Pulled, Report, Tasks
from netlet.cluster._scheduler import (
    Action,
    Deliver,
    Handout,
    Reclaim,
    Scheduler,
    StaleEpoch,
    Started,
)
from netlet.cluster._store import HeadStore
from netlet.codec import short
from netlet.errors import ConfigError, ConnectionLost, NoSuchObject
from netlet.node import Node, Proxy, current_peer, expose

if TYPE_CHECKING:
    from netlet.cluster._head_monitor import HeadMonitor

__all__ = ["HeadConfig", "Member", "TaskDesk"]

log = logging.getLogger("netlet.cluster")


def _result_size(result: Finished) -> int:
    """Bytes a result holds (its body; the rest is small)."""
    body = result[2]
    return 64 + (len(body) if body is not None else 0)


def _pickled(fn: str) -> bool:
    """True for a function id that travels by value (``pickle:``, or a chunk of one)."""
    return fn.removeprefix("chunk:").startswith("pickle:")


@dataclass(frozen=True, slots=True)
class HeadConfig:
    heartbeat: float = 0.5
    """Seconds between a member's heartbeats."""
    dead_after: float = 3.0
    """A member silent this long is declared dead (its link closing is noticed at once)."""
    pull_wait: float = 1.0
    """Longest a pull waits for work before answering empty (lets workers heartbeat)."""
    client_grace: float = 60.0
    """How long results wait for a client that lost its connection to come back; a
    head restarted from its store also waits this long for the clients of the tasks
    it restored, then drops their tasks."""
    result_budget: int = 256 * 1024 * 1024
    """Bytes of results the head may hold for clients: a client past its part of it has
    its tasks held back; past all of it, no task is handed out (see ``TaskDesk``)."""
    code_max_package: int = MAX_PACKAGE
    """Largest code package a client may upload (``working_dir=``, ``py_modules=``)."""
    code_max_total: int = MAX_TOTAL
    """What all code packages together may hold at the head."""


@dataclass(slots=True)
class Member:
    node: str
    role: str
    info: JoinInfo
    control: Proxy | None = None
    since: float = 0.0
    """Wall time it joined (the head's clock)."""
    last_seen: float = 0.0
    """The head's ``clock.monotonic()`` when it was last heard from."""
    done: int = 0
    failed: int = 0
    alive: bool = True
    load: Load | None = None
    """What its last heartbeat said (a worker's CPU and memory use)."""
    actors: int = 0
    """Objects the head placed on it (``spawn``)."""


def _log_failed(fn: str, tid: str, member: Member | None, error: str) -> None:
    """One line per failed task: id, function, worker, error type."""
    who = f"{member.info.name} ({member.node[:8]})" if member is not None else "-"
    log.warning("task %s failed: function %s, worker %s, %s", tid[:40], fn[:200], who,
                error[:100])


@expose(concurrent=True)
class TaskDesk:
    """Tasks in, results out; the state lives on ``Head`` (set in its ``__init__``)."""

    _node: Node
    _clock: Clock
    config: HeadConfig
    _store: HeadStore | None
    _sched: Scheduler
    _functions: dict[str, bytes]
    _members: dict[str, Member]
    _clients: dict[str, Any]
    _outbox: dict[str, list[Finished]]
    _started: dict[str, list[str]]
    _flush_scheduled: bool
    _delivering: set[str]
    _undelivered: int
    _owed: dict[str, int]
    _budget: int
    _paused: bool
    _jobs: set[asyncio.Task[None]]
    _pulls: dict[str, asyncio.Future[Handout]]
    _code: CodeStore
    _monitor: HeadMonitor

    async def submit(self, client: str, sink: Proxy, tasks: Tasks,
                     functions: dict[str, bytes]) -> int:
        """Queue ``tasks``; returns how many were new."""
        _as_itself(client)
        _expect_sink("submit", sink)
        if type(tasks) is not Tasks:
            raise ConfigError("a submit's tasks are a Tasks record (PROTOCOL.md 16.5)")
        self._clients[client] = sink
        refusal = self._pickle_refusal(client)
        if refusal is None:
            self._functions.update(functions)
        specs = list(tasks.rows())
        if refusal is not None:  # never queued, never sent to a worker
            for tid, fn, body, _ in [s for s in specs if _pickled(s[1])]:
                self._act(self._sched.reject(client, tid, fn, body, ConfigError(
                    f"the head refuses the pickled function of task {tid}: {refusal}")))
            specs = [s for s in specs if not _pickled(s[1])]
        new, actions = self._sched.submit(client, specs, self._clock.monotonic())
        self._monitor.submitted_tasks(new)
        if self._store is not None and new:
            self._store.add_tasks(new, {f: self._functions[f] for f in functions
                                        if f in self._functions})
        self._act(actions)
        return len(new)

    def _pickle_refusal(self, client: str) -> str | None:
        """Why pickled functions from ``client`` may not run (None: the head and the
        client agreed to pickle, over a keyed link; workers check their own side)."""
        t = self._node.config.transport
        if not (t.allow_pickle and t.key is not None):
            return "the head was not started with --allow-pickle (and a key)"
        if client == self._node.id:
            return None  # a client on the head's own node (the embedded cluster)
        peer = self._node.peer(client)
        if peer is None or not peer.pickle:
            return ("the client did not agree to pickle (it needs allow_pickle=True and "
                    "the cluster key)")
        return None

    async def resume(self, client: str, sink: Proxy, pending: list[str]) -> list[str]:
        """A client came back: deliver what finished meanwhile; return ids we never saw."""
        _as_itself(client)
        _expect_sink("resume", sink)
        self._clients[client] = sink
        member = self._members.get(client)
        if member is not None:
            member.alive, member.last_seen = True, self._clock.monotonic()
        self._schedule_flush()
        return [tid for tid in pending if tid not in self._sched.tasks]

    async def cancel(self, tasks: list[str]) -> list[str]:
        """Cancel tasks no worker started; returns those cancelled (running ones finish).

        Over the network, only the caller's own tasks: others are left alone.
        """
        cancelled, actions = self._sched.cancel(current_peer(), tasks)
        reclaims = [a for a in actions if isinstance(a, Reclaim)]
        self._act([a for a in actions if not isinstance(a, Reclaim)])
        for given in await asyncio.gather(*(self._reclaim(a) for a in reclaims)):
            cancelled += given  # handed out, and given back unstarted
        self._monitor.cancelled += len(cancelled)
        self._monitor.forget(cancelled)
        if cancelled and self._store is not None:
            self._store.forget(cancelled)
        return cancelled

    def _worker(self, worker: str) -> Member:
        _as_itself(worker)
        member = self._members.get(worker)
        if member is None or not member.alive or member.role != "worker":
            raise NoSuchObject("unknown worker: join first")
        return member

    async def pull(self, worker: str, epoch: int, want: int) -> Pulled:
        """Up to ``want`` more tasks for ``worker``, in queue order.

        ``Pulled.seq`` numbers this hand-out (heartbeats acknowledge it). With no
        work the pull waits at most ``pull_wait`` seconds and answers empty.
        """
        self._worker(worker)
        _expect_int("pull", "epoch", epoch)
        _expect_int("pull", "want", want)
        try:
            actions = self._sched.pull(worker, epoch, want, self._clock.monotonic())
        except StaleEpoch as e:
            raise NoSuchObject(str(e)) from None
        mine = next((a for a in actions if isinstance(a, Handout) and a.worker == worker
                     and a.tasks), None)
        self._act([a for a in actions if a is not mine])
        if mine is not None:
            self._monitor.handed(worker, mine.tasks)
        else:
            fut: asyncio.Future[Handout] = asyncio.get_running_loop().create_future()
            self._pulls[worker] = fut
            try:
                mine = await fut  # _act told the monitor
            finally:
                if self._pulls.get(worker) is fut:
                    del self._pulls[worker]
        return self._handout_reply(mine)

    def _handout_reply(self, handout: Handout) -> Pulled:
        tasks = handout.tasks
        ids = [t.id for t in tasks]
        fns = [t.fn for t in tasks]
        pickled: dict[str, bytes] = {}
        for fn in set(fns):
            fn = fn.removeprefix("chunk:")
            if fn.startswith("pickle:") and fn in self._functions:
                pickled[fn] = self._functions[fn]
        return Pulled(ids, fns, [t.body for t in tasks], [t.lease for t in tasks], pickled,
                      handout.seq)

    async def exchange(self, worker: str, epoch: int, report: Report, want: int) -> Pulled:
        """``report`` then ``pull`` in one round trip: what a busy worker sends."""
        _expect_int("exchange", "want", want)  # before the report is taken
        await self.report(worker, epoch, report)
        return await self.pull(worker, epoch, want)

    async def report(self, worker: str, epoch: int, report: Report) -> None:
        """Tasks started, and results.

        Only the holder of a task's current lease completes it; anything else (a
        late result from an expired lease, a duplicate, a forgery) is refused,
        counted in ``refused_results`` once, and changes nothing else. A report
        from an older epoch of the worker is refused whole.
        """
        _as_itself(worker)
        _expect_int("report", "epoch", epoch)
        if type(report) is not Report:
            raise ConfigError("a report is a Report record (PROTOCOL.md 16.5)")
        ids, oks, started = report.ids, report.oks, report.started
        member = self._members.get(worker)
        if member is None or not member.alive:
            self._sched.refused_results += len(ids)
            raise NoSuchObject("unknown worker: join first")
        _, done0, failed0 = self._sched.worker_load(worker)
        failures = [] if all(oks) else [r for r in report.rows() if not r[1]]
        for tid, _, _, lease, error_type, tb in failures:
            if error_type is not None:  # shown by a dashboard, never decoded
                task = self._sched.tasks.get(tid)  # only from the lease holder
                if task is not None and task.worker == worker and task.lease == lease:
                    self._monitor.error_detail(tid, error_type, tb or "")
        try:
            actions = self._sched.started(worker, epoch, started) if started else []
            if ids:
                actions += self._sched.results(
                    worker, epoch, zip(ids, oks, report.bodies, report.leases, strict=True))
        except StaleEpoch as e:
            if started:  # refused before its results were looked at: they count too
                self._sched.refused_results += len(ids)
            log.info("refused a report from %s: %s", worker[:8], e)
            raise NoSuchObject(str(e)) from None
        _, done1, failed1 = self._sched.worker_load(worker)
        member.done += done1 - done0
        member.failed += failed1 - failed0
        if failed1 != failed0:
            types = {r[0]: r[4] or "?" for r in failures}
            for a in actions:
                if isinstance(a, Deliver) and not a.result[1] and a.result[0] in types:
                    task = self._sched.tasks.get(a.result[0])
                    _log_failed(task.fn if task else "?", a.result[0], member,
                                types[a.result[0]])
        self._act(actions)

    def _act(self, actions: list[Action]) -> None:
        """Carry out what the scheduler decided."""
        delivers: list[Deliver] = []
        for action in actions:
            if isinstance(action, Handout):
                if action.tasks:
                    self._monitor.handed(action.worker, action.tasks)
                fut = self._pulls.pop(action.worker, None)
                if fut is not None and not fut.done():
                    fut.set_result(action)
            elif isinstance(action, Deliver):
                result = action.result
                tid, error = result[0], result[3]
                delivers.append(action)
                if error is not None:  # the head's own verdict: WorkerLost, ConfigError
                    task = self._sched.tasks.get(tid)
                    _log_failed(task.fn if task else "?", tid, None,
                                f"{type(error).__name__}: {str(error)[:60]}")
                if self._store is not None:
                    self._store.finish(tid, action.result)
                self._outbox.setdefault(action.client, []).append(result)
                self._owe(action.client, _result_size(result))
                self._schedule_flush()
            elif isinstance(action, Started):
                self._monitor.started(action.tasks)
                sink = self._clients.get(action.client)
                if isinstance(sink, Proxy):
                    self._started.setdefault(action.client, []).extend(action.tasks)
                    self._schedule_flush()
                elif sink is not None:  # a client on this node: its futures turn RUNNING now
                    for tid in action.tasks:
                        sink.claim(tid)
            elif isinstance(action, Reclaim):
                self._spawn(self._steal(action))
        if delivers:  # their tasks stay in the scheduler until delivered
            self._monitor.results(delivers, self._sched.tasks)

    def _part(self) -> int:
        """The bytes of results one client may have waiting before its tasks are held."""
        return self._budget // (self._sched.clients + 1)

    def _owe(self, client: str, size: int) -> None:
        """``size`` more (or, negative, fewer) bytes of results wait for ``client``: hold
        back its tasks past its part, hand them out again under half of it (O(1))."""
        owed = self._owed.get(client, 0) + size
        if owed > 0:
            self._owed[client] = owed
        else:
            self._owed.pop(client, None)
        self._undelivered += size
        held = self._sched.held(client)
        if size > 0 and not held and owed > self._part():
            log.info("results waiting for client %s (%d bytes) exceed its part of the budget "
                     "(%d bytes): holding back its tasks", client[:8], owed, self._part())
            self._act(self._sched.hold(client, True))
        elif size < 0 and held and owed <= self._part() // 2:
            log.info("results waiting for client %s (%d bytes) are under half its part of "
                     "the budget: handing out its tasks again", client[:8], owed)
            self._act(self._sched.hold(client, False))
        if self._undelivered > self._budget and not self._paused:
            self._paused = True
            log.info("results waiting for clients (%d bytes) fill the budget: pausing hand-outs",
                     self._undelivered)
            self._act(self._sched.pause(True))
        elif self._paused and self._undelivered <= self._budget // 2:
            self._paused = False
            log.info("results waiting for clients (%d bytes) are back under half the "
                     "budget: handing out tasks again", self._undelivered)
            self._act(self._sched.pause(False))

    async def _reclaim(self, action: Reclaim) -> list[str]:
        """Ask a worker to give back tasks it has not started (for an idle worker, or
        a cancel); returns those a cancel dropped."""
        member = self._members.get(action.worker)
        returned: list[str] = []
        if member is not None and member.alive and member.control is not None:
            try:
                answer = await member.control.with_options(timeout=10).give_back.aio(
                    action.epoch, list(action.tasks))
                if not (type(answer) is list and all(type(t) is str for t in answer)):
                    raise ConfigError(f"give_back answers a list of task ids, not {short(answer)}")
                returned = answer
            except Exception as e:  # it keeps them; a heartbeat or its death settles it
                log.info("worker %s did not give tasks back: %s", action.worker[:8], e)
        dropped, actions = self._sched.gave_back(action, returned)
        self._act(actions)
        return dropped

    async def _steal(self, action: Reclaim) -> None:
        await self._reclaim(action)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send started notices and finished results to their clients, in bounded messages."""
        self._flush_scheduled = False
        started, self._started = self._started, {}
        for client, tids in started.items():
            sink = self._clients.get(client)
            if isinstance(sink, Proxy):
                try:
                    sink.started.oneway(tids)
                except (ConnectionLost, OSError):
                    pass  # only the RUNNING state is lost; results still wait for it
        for client, batch in list(self._outbox.items()):
            sink = self._clients.get(client)
            if sink is None or not batch or client in self._delivering:
                continue
            # A client on this node takes any batch; over a link, frames are bounded.
            first = self._split(batch)[0] if isinstance(sink, Proxy) else batch
            rest = batch[len(first):]
            if rest:
                self._outbox[client] = rest
            else:
                del self._outbox[client]
            self._delivering.add(client)
            self._spawn(self._deliver(client, sink, first))

    def _split(self, results: list[Finished]) -> list[list[Finished]]:
        limits = self._node.config.transport.limits
        return batches(results, _result_size, limits.max_frame // 4,
                       max(1, limits.max_buffers // 2), limits.oob_threshold)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start a background job, holding a reference so it is not collected mid-flight."""
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _deliver(self, client: str, sink: Any, batch: list[Finished]) -> None:
        """Forget results only once the client acknowledged them.

        A client that is slow to take them holds up only its own deliveries (one
        message in flight each) and, past its part of the budget, its own tasks
        (``_owe``); a failed delivery is tried again.
        """
        try:
            if isinstance(sink, Proxy):
                await sink.with_options(timeout=30).results.aio(Delivery.of(batch))
            else:  # a client on the head's own node (the embedded cluster)
                await sink.results(Delivery.of(batch))
        except Exception as e:  # connection lost, timeout: keep them for the client
            if client not in self._clients:  # forgotten meanwhile (its grace ran out)
                self._owe(client, -sum(_result_size(r) for r in batch))
                return
            log.info("results for client %s wait for it: %s", client[:8], e)
            self._outbox.setdefault(client, [])[:0] = batch
            if client in self._node.connected_peers():
                self._clock.call_later(asyncio.get_running_loop(), 1.0, self._schedule_flush)
            return
        finally:
            self._delivering.discard(client)
        done = [r[0] for r in batch]
        self._sched.delivered(done)
        self._owe(client, -sum(_result_size(r) for r in batch))
        if self._store is not None:
            self._store.forget(done)
        if self._outbox.get(client):
            self._schedule_flush()

    def _forget_client(self, client: str) -> None:
        self._code.forget_client(client)
        self._members.pop(client, None)
        self._clients.pop(client, None)
        dropped = self._outbox.pop(client, [])
        gone = self._sched.forget_client(client)  # its hold goes with its tasks
        # After its queued tasks are gone: none of them is handed out on a resume.
        self._owe(client, -sum(_result_size(r) for r in dropped))
        self._monitor.forget(gone)
        if gone and self._store is not None:
            self._store.forget(gone)

