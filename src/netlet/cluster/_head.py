"""The head: name service, membership and the task scheduler, served by one node.

Everything runs on the head node's event loop (the object is concurrent and all
its methods are ``async``), so its state needs no locks. Tasks travel as opaque
encoded bytes: the head never decodes (let alone unpickles) a task's arguments
or result, it only queues, assigns and forwards them.

Scheduling is pull-based: a worker asks for as many tasks as its credit allows
and gets them in submission order, so a fast worker asks more often and does
more, and a slow one never holds more than its credit.

Each hand-out is a *lease*: a fresh random token (a fencing token) that goes to
the worker with the task and must come back with its result. A result is
accepted only from the worker holding the task's current lease; one from an
expired lease (the task was requeued), a duplicate, or anyone else is refused
and changes nothing, so one client cannot complete another's task.

Members name themselves in calls (``join(node, ...)``, ``report(worker, ...)``);
a call over the network may only name the node its connection proved to be
(``netlet.node.current_peer``), so no member acts for another.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from netlet.cluster._code import MAX_PACKAGE, MAX_TOTAL, CodeStore
from netlet.cluster._head_code import HeadCodeMixin, _as_itself
from netlet.cluster._store import HeadStore
from netlet.codec import RemoteRef
from netlet.errors import ConfigError, ConnectionLost, NoSuchObject, WorkerLost
from netlet.node import Node, Proxy, current_peer, expose

__all__ = ["Head", "HeadConfig"]

log = logging.getLogger("netlet.cluster")

QUEUED, RUNNING, DONE = "queued", "running", "done"


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
    """How long results wait for a client that lost its connection to come back."""
    code_max_package: int = MAX_PACKAGE
    """Largest code package a client may upload (``working_dir=``, ``py_modules=``)."""
    code_max_total: int = MAX_TOTAL
    """What all code packages together may hold at the head."""


@dataclass(slots=True)
class Task:
    id: str
    client: str
    fn: str
    body: bytes
    retries: int
    state: str = QUEUED
    worker: str = ""
    attempts: int = 0
    lease: str = ""
    """The current hand-out's fencing token ("" while not handed out)."""


@dataclass(slots=True)
class Member:
    node: str
    role: str
    info: dict[str, Any]
    control: Proxy | None = None
    since: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    running: set[str] = field(default_factory=set)
    lacks: dict[str, str] = field(default_factory=dict)
    """Functions this worker could not import (never offered again), and why."""
    done: int = 0
    failed: int = 0
    alive: bool = True


@dataclass(slots=True)
class ActorSpec:
    name: str
    cls: str
    body: bytes
    restart: str | None
    functions: dict[str, bytes]
    worker: str = ""


@expose(concurrent=True)
class Head(HeadCodeMixin):
    """The cluster's head; served as ``"netlet.head"``."""

    def __init__(self, node: Node, config: HeadConfig | None = None,
                 store: HeadStore | None = None) -> None:
        self._node = node
        self.config = config or HeadConfig()
        self._store = store
        self._tasks: dict[str, Task] = {}
        self._queue: deque[str] = deque()
        self._functions: dict[str, bytes] = {}
        self._members: dict[str, Member] = {}
        self._clients: dict[str, Any] = {}  # a Proxy, or the sink itself when on our node
        self._outbox: dict[str, list[list[Any]]] = {}
        self._started: dict[str, list[str]] = {}
        self._flush_scheduled = False
        self._delivering: set[str] = set()
        self._cancelled_early: set[str] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._pullers: deque[tuple[str, int, asyncio.Future[None]]] = deque()
        self._names: dict[str, tuple[RemoteRef, str]] = {}
        self._actors: dict[str, ActorSpec] = {}
        self._subscribers: dict[str, Any] = {}
        self._lacking_fns: set[str] = set()
        self._code = CodeStore(self.config.code_max_package, self.config.code_max_total)
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        self.refused_results = 0
        """Results refused: late (an expired lease), duplicates, or not from the lease holder."""
        self.started = time.time()
        node.on_peer_change(self._peer_changed)
        if store is not None:
            self._restore(store)

    # -- lifecycle (called by the process that hosts the head) ----------------------

    def start(self) -> None:
        loop = self._node._get_loop()
        loop.call_soon_threadsafe(self._start_sweeper)

    def stop(self) -> None:
        """The host is shutting down: members leaving now is expected, not news."""
        self._stopping = True

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def _restore(self, store: HeadStore) -> None:
        self._functions.update(store.functions())
        for t in store.tasks():
            task = Task(t.id, t.client, t.fn, t.body, t.retries, QUEUED, "", t.attempts)
            if t.state == DONE:
                task.state = DONE
                if t.result is not None:
                    self._outbox.setdefault(task.client, []).append(list(t.result))
            else:
                self._queue.append(task.id)
            self._tasks[task.id] = task
        for name, ref, node in store.names():
            self._names[name] = (ref, node)
        log.info("head restored %d tasks and %d names from %s",
                 len(self._tasks), len(self._names), store.path)

    # -- membership -----------------------------------------------------------------

    async def join(self, node: str, role: str, info: dict[str, Any],
                   control: Proxy | None = None) -> dict[str, Any]:
        """A worker or client joins (or rejoins after a drop or a head restart)."""
        _as_itself(node)
        if role not in ("worker", "client"):
            raise ConfigError(f"unknown role {role!r}")
        old = self._members.get(node)
        member = Member(node, role, dict(info), control)
        if old is not None and old.alive:
            member.since, member.done, member.failed = old.since, old.done, old.failed
            member.running = old.running
        if old is not None:
            member.lacks = old.lacks
        self._members[node] = member
        self._event("join", member)
        if role == "worker":
            self._respawn_orphans()
        return {"head": self._node.id, "heartbeat": self.config.heartbeat,
                "dead_after": self.config.dead_after}

    async def heartbeat(self, node: str, stats: dict[str, Any] | None = None) -> bool:
        _as_itself(node)
        member = self._members.get(node)
        if member is None or not member.alive:
            return False  # unknown here (head restarted, or declared dead): rejoin
        member.last_seen = time.monotonic()
        if stats:
            member.info.update(stats)
        return True

    async def leave(self, node: str) -> None:
        """A member says goodbye; a client that leaves takes its unfinished tasks along."""
        _as_itself(node)
        member = self._members.get(node)
        if member is not None:
            self._member_died(member, "left")
            if member.role == "client":
                self._forget_client(node)

    def _peer_changed(self, node: str, connected: bool) -> None:
        if node == self._node.id:
            return
        member = self._members.get(node)
        if member is None:
            return
        if connected:
            member.last_seen = time.monotonic()
        elif member.alive:
            self._member_died(member, "connection lost")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat)
            now = time.monotonic()
            for member in list(self._members.values()):
                # Workers heartbeat; a client is judged by its connection (or its leave).
                if (member.role == "worker" and member.alive
                        and now - member.last_seen > self.config.dead_after):
                    self._member_died(member, f"silent for {now - member.last_seen:.1f} s")
            cutoff = now - self.config.client_grace
            for client in [c for c, m in self._members.items()
                           if m.role == "client" and not m.alive and m.last_seen < cutoff]:
                self._forget_client(client)

    def _member_died(self, member: Member, why: str) -> None:
        member.alive = False
        level = logging.INFO if why == "left" or self._stopping else logging.WARNING
        log.log(level, "%s %s is gone (%s)", member.role, member.node[:8], why)
        for name in [n for n, (_, owner) in self._names.items() if owner == member.node]:
            self._drop_name(name)
        if member.role == "worker":
            self._pullers = deque(p for p in self._pullers if p[0] != member.node)
            for tid in list(member.running):
                self._requeue(tid, member)
            member.running.clear()
            self._respawn_orphans()
        self._event("leave", member)

    def _requeue(self, tid: str, member: Member) -> None:
        task = self._tasks.get(tid)
        if task is None or task.state != RUNNING:
            return
        task.attempts += 1
        if task.attempts <= task.retries:
            task.state, task.worker, task.lease = QUEUED, "", ""
            self._queue.appendleft(tid)
            log.info("task %s goes to another worker (attempt %d)", tid, task.attempts + 1)
            self._dispatch()
        else:
            error = WorkerLost(f"the worker running task {tid} died "
                               f"({task.attempts} time(s); max_retries={task.retries})")
            self._log_failed(task, member, "WorkerLost")
            self._complete(task, [tid, False, None, error])

    def _event(self, kind: str, member: Member) -> None:
        for key, sink in list(self._subscribers.items()):
            try:
                if isinstance(sink, Proxy):
                    sink.event.oneway(kind, member.node, member.role, member.info)
                else:  # a subscriber on the head's own node
                    self._spawn(sink.event(kind, member.node, member.role, member.info))
            except (ConnectionLost, OSError):
                self._subscribers.pop(key, None)

    async def subscribe(self, sink: Any) -> None:
        """Membership events: ``sink.event(kind, node, role, info)``, kind join/leave."""
        key = repr(sink._ref) if isinstance(sink, Proxy) else f"local-{id(sink)}"
        self._subscribers[key] = sink

    # -- names ----------------------------------------------------------------------

    async def register(self, name: str, ref: Any, node: str) -> None:
        """Map ``name`` to a handle; it disappears when ``node`` dies."""
        _as_itself(node)
        if not isinstance(name, str) or not name:
            raise ConfigError("a name is a non-empty string")
        if not isinstance(ref, (Proxy, RemoteRef)) and not hasattr(ref, "__netlet_ref__"):
            raise ConfigError("only handles (proxies, channels) can be registered")
        raw = ref.__netlet_ref__()
        self._names[name] = (raw, node)
        if self._store is not None:
            self._store.put_name(name, raw, node)

    async def lookup(self, name: str) -> RemoteRef | None:
        entry = self._names.get(name)
        return entry[0] if entry is not None else None

    async def names(self) -> dict[str, list[str]]:
        return {n: [r.kind, r.address, o] for n, (r, o) in self._names.items()}

    async def unregister(self, name: str) -> bool:
        self._actors.pop(name, None)
        return self._drop_name(name)

    def _drop_name(self, name: str) -> bool:
        found = self._names.pop(name, None) is not None
        if found and self._store is not None:
            self._store.drop_name(name)
        return found

    # -- tasks ----------------------------------------------------------------------

    async def submit(self, client: str, sink: Proxy, tasks: list[list[Any]],
                     functions: dict[str, bytes]) -> int:
        """Queue tasks ``[id, fn, body, retries]``; returns how many were new."""
        _as_itself(client)
        self._clients[client] = sink
        refusal = self._pickle_refusal(client)
        if refusal is None:
            self._functions.update(functions)
        new: list[Task] = []
        refused: list[Task] = []
        for tid, fn, body, retries in tasks:
            if tid in self._tasks:
                continue  # a resubmission after a reconnect: already queued or done
            if tid in self._cancelled_early:
                self._cancelled_early.discard(tid)  # its cancel overtook its submit
                continue
            task = Task(tid, client, fn, body, int(retries))
            self._tasks[tid] = task
            if refusal is not None and _pickled(fn):
                refused.append(task)  # never queued, never sent to a worker
                continue
            self._queue.append(tid)
            new.append(task)
        for task in refused:
            self._complete(task, [task.id, False, None, ConfigError(
                f"the head refuses the pickled function of task {task.id}: {refusal}")])
        if self._store is not None and new:
            self._store.add_tasks(new, {f: self._functions[f] for f in functions})
        for fn in {t.fn for t in new if t.fn in self._lacking_fns}:
            self._fail_unrunnable(fn)  # no live worker can import it
        self._dispatch()
        return len(new)

    def _pickle_refusal(self, client: str) -> str | None:
        """Why pickled functions from ``client`` may not run (None: the head and the
        client agreed to pickle, over a keyed link; workers check their own side)."""
        t = self._node.config.transport
        if not (t.allow_pickle and t.key is not None):
            return "the head was not started with --allow-pickle (and a key)"
        if client == self._node.id:
            return None  # a client on the head's own node (the embedded cluster)
        link = self._node._links_by_node.get(client)
        if link is None or not link.peer.pickle:
            return ("the client did not agree to pickle (it needs allow_pickle=True and "
                    "the cluster key)")
        return None

    async def resume(self, client: str, sink: Proxy, pending: list[str]) -> list[str]:
        """A client came back: deliver what finished meanwhile; return ids we never saw."""
        _as_itself(client)
        self._clients[client] = sink
        member = self._members.get(client)
        if member is not None:
            member.alive, member.last_seen = True, time.monotonic()
        self._schedule_flush()
        return [tid for tid in pending if tid not in self._tasks]

    async def cancel(self, tasks: list[str]) -> list[str]:
        """Drop queued tasks; returns those cancelled (running ones finish).

        Over the network, only the caller's own tasks: others are left alone.
        """
        caller = current_peer()
        cancelled = []
        for tid in tasks:
            task = self._tasks.get(tid)
            if task is not None and caller is not None and task.client != caller:
                continue
            if task is None:  # not submitted yet (the cancel overtook it): skip it later
                self._cancelled_early.add(tid)
                if len(self._cancelled_early) > 100_000:
                    self._cancelled_early.pop()
                cancelled.append(tid)
                continue
            if task.state == QUEUED:
                task.state = DONE
                self._tasks.pop(tid, None)
                cancelled.append(tid)
        if cancelled:
            dropped = set(cancelled)
            self._queue = deque(t for t in self._queue if t not in dropped)
            if self._store is not None:
                self._store.forget(cancelled)
        return cancelled

    async def pull(self, worker: str, want: int) -> list[Any]:
        """Up to ``want`` tasks for ``worker``: [[id, fn, body, lease], ...], functions it needs."""
        _as_itself(worker)
        member = self._members.get(worker)
        if member is None or not member.alive or member.role != "worker":
            raise NoSuchObject("unknown worker: join first")
        want = max(1, min(int(want), 1024))
        if not self._queue or not self._runnable(member):
            fut = asyncio.get_running_loop().create_future()
            self._pullers.append((worker, want, fut))
            try:
                async with asyncio.timeout(self.config.pull_wait):
                    await fut
            except TimeoutError:
                self._pullers = deque(p for p in self._pullers if p[2] is not fut)
                return [[], {}]
            if fut.result() is None and not self._queue:
                return [[], {}]
        return self._assign(member, want)

    async def exchange(self, worker: str, results: list[list[Any]], want: int) -> list[Any]:
        """``report`` then ``pull`` in one round trip: what a busy worker sends per task."""
        _as_itself(worker)
        if results:
            await self.report(worker, results)
        if want <= 0:
            return [[], {}]
        return await self.pull(worker, want)

    def _assign(self, member: Member, want: int) -> list[Any]:
        batch: list[list[Any]] = []
        fns: dict[str, bytes] = {}
        skipped: list[str] = []
        while self._queue and len(batch) < want:
            tid = self._queue.popleft()
            task = self._tasks.get(tid)
            if task is None or task.state != QUEUED:
                continue
            if task.fn in member.lacks:
                skipped.append(tid)  # it cannot import this function: leave it to others
                continue
            if not self._claim(task):
                continue  # its future was cancelled: the task never runs
            task.state, task.worker, task.lease = RUNNING, member.node, secrets.token_hex(12)
            member.running.add(tid)
            batch.append([tid, task.fn, task.body, task.lease])
            if task.fn.startswith("pickle:"):
                fns[task.fn] = self._functions[task.fn]
        self._queue.extendleft(reversed(skipped))
        return [batch, fns]

    def _claim(self, task: Task) -> bool:
        """Tell the client its task starts; False if its future was cancelled meanwhile.

        A client on this node answers at once (its future turns RUNNING, or is
        found cancelled and the task dropped), exactly like ProcessPoolExecutor.
        A remote client is told in a batch per loop turn; a cancel racing that
        message loses only the result, not the run.
        """
        if task.attempts:
            return True  # a rerun: the future is already running
        sink = self._clients.get(task.client)
        if sink is None:
            return True
        if isinstance(sink, Proxy):
            self._started.setdefault(task.client, []).append(task.id)
            self._schedule_flush()
            return True
        if sink.claim(task.id):
            return True
        task.state = DONE
        self._tasks.pop(task.id, None)
        if self._store is not None:
            self._store.forget([task.id])
        return False

    def _dispatch(self) -> None:
        """Wake waiting pullers while there is work."""
        while self._queue and self._pullers:
            _, _, fut = self._pullers.popleft()
            if not fut.done():
                fut.set_result(None)

    async def report(self, worker: str, results: list[list[Any]]) -> None:
        """Results ``[id, ok, body, lease]`` from a worker.

        Only the holder of a task's current lease completes it; anything else (a
        late result from an expired lease, a duplicate, a forgery) is refused,
        counted in ``refused_results`` once, and changes nothing else.
        """
        _as_itself(worker)
        if not isinstance(results, list) or not all(
                isinstance(r, list) and len(r) in (4, 5) and isinstance(r[0], str)
                and isinstance(r[2], bytes) and isinstance(r[3], str) for r in results):
            raise ConfigError("results are [[task_id: str, ok, body: bytes, lease: str"
                              "(, error type: str)], ...]")
        member = self._members.get(worker)
        for tid, ok, body, lease, *error_type in results:
            task = self._tasks.get(tid)
            if member is None or task is None or not self._holds(member, task, lease):
                self.refused_results += 1
                log.info("refused a result for task %s from %s: not its current lease",
                         tid[:40], worker[:8])
                continue
            member.running.discard(tid)
            if ok:
                member.done += 1
            else:
                member.failed += 1
                self._log_failed(task, member, str(error_type[0] if error_type else "?"))
            task.lease = ""
            self._complete(task, [tid, bool(ok), body, None])

    def _complete(self, task: Task, result: list[Any]) -> None:
        task.state = DONE
        if self._store is not None:
            self._store.finish(task.id, result)
        self._outbox.setdefault(task.client, []).append(result)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send finished results to their clients: one message per client per turn."""
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
            del self._outbox[client]
            self._delivering.add(client)
            self._spawn(self._deliver(client, sink, batch))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start a background job, holding a reference so it is not collected mid-flight."""
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _deliver(self, client: str, sink: Any, batch: list[list[Any]]) -> None:
        """Forget results only once the client acknowledged them."""
        try:
            if isinstance(sink, Proxy):
                await sink.with_options(timeout=30).results.aio(batch)
            else:  # a client on the head's own node (the embedded cluster)
                await sink.results(batch)
        except Exception as e:  # connection lost, timeout: keep them for the client
            log.info("results for client %s wait for it: %s", client[:8], e)
            self._outbox.setdefault(client, [])[:0] = batch
            return
        finally:
            self._delivering.discard(client)
        done = [r[0] for r in batch]
        for tid in done:
            self._tasks.pop(tid, None)
        if self._store is not None:
            self._store.forget(done)
        if self._outbox.get(client):
            self._schedule_flush()

    def _forget_client(self, client: str) -> None:
        self._code.forget_client(client)
        self._members.pop(client, None)
        self._clients.pop(client, None)
        self._outbox.pop(client, None)
        gone = [tid for tid, t in self._tasks.items() if t.client == client]
        for tid in gone:
            self._tasks.pop(tid, None)
        if gone:
            self._queue = deque(t for t in self._queue if t in self._tasks)
            if self._store is not None:
                self._store.forget(gone)

    # -- actors ---------------------------------------------------------------------

    async def spawn(self, cls: str, body: bytes, name: str, restart: str | None,
                    functions: dict[str, bytes], client: str = "") -> RemoteRef:
        """Place an exposed object on a worker and name it; returns its handle."""
        if restart not in (None, "on-failure"):
            raise ConfigError("restart is None or 'on-failure'")
        if name in self._names:
            raise ConfigError(f"the name {name!r} is taken")
        if _pickled(cls):
            refusal = self._pickle_refusal(client)
            if refusal is not None:
                raise ConfigError(f"the head refuses the pickled class {cls}: {refusal}")
        spec = ActorSpec(name, cls, body, restart, dict(functions))
        ref = await self._place(spec)
        self._actors[name] = spec
        return ref

    async def _place(self, spec: ActorSpec, exclude: str = "") -> RemoteRef:
        workers = [m for m in self._members.values()
                   if m.role == "worker" and m.alive and m.control is not None
                   and m.node != exclude]
        if not workers:
            raise ConfigError("no worker is available to host the object")
        member = min(workers, key=lambda m: (len(m.running), m.info.get("actors", 0)))
        assert member.control is not None
        raw = await member.control.create.aio(spec.cls, spec.body, spec.name, spec.functions)
        ref = raw.__netlet_ref__()
        spec.worker = member.node
        member.info["actors"] = member.info.get("actors", 0) + 1
        self._names[spec.name] = (ref, member.node)
        return ref  # type: ignore[no-any-return]

    def _respawn_orphans(self) -> None:
        for spec in list(self._actors.values()):
            if spec.name in self._names:
                continue
            if spec.restart != "on-failure":
                self._actors.pop(spec.name, None)
                continue
            self._spawn(self._replace(spec))

    async def _replace(self, spec: ActorSpec) -> None:
        try:
            await self._place(spec, exclude=spec.worker)
            log.info("restarted %s on worker %s", spec.name, spec.worker[:8])
        except Exception as e:
            log.warning("cannot restart %s yet: %s", spec.name, e)

    # -- status -----------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        now = time.monotonic()
        nodes = [{"node": m.node, "role": m.role, "alive": m.alive, "name": m.info.get("name", ""),
                  "address": m.info.get("address", ""), "host": m.info.get("host", ""),
                  "since": m.since, "heartbeat_age": now - m.last_seen,
                  "running": len(m.running), "done": m.done, "failed": m.failed}
                 for m in self._members.values()]
        running = sum(1 for t in self._tasks.values() if t.state == RUNNING)
        return {"head": self._node.id, "started": self.started, "nodes": nodes,
                "names": await self.names(), "queued": len(self._queue), "running": running,
                "refused_results": self.refused_results}
