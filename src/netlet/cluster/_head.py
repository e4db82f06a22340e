"""The head: name service, membership and the task scheduler, served by one node.

Everything runs on the head node's event loop (the object is concurrent and all
its methods are ``async``), so its state needs no locks. Tasks travel as opaque
encoded bytes: the head never decodes (let alone unpickles) a task's arguments
or result, it only queues, assigns and forwards them.

Scheduling is pull-based and decided by a sans-I/O ``Scheduler``
(``_scheduler.py``, which states its rules): this class is the shell that
feeds it events from the network and the clock, and carries out the actions
it returns (answer a parked pull, ask a worker to give tasks back, tell a
client its tasks started, deliver results in messages the frame limits
accept). A worker asks for as many tasks as its credit allows, never more
than its share of the queue, so a fast worker asks more often and does more;
an idle worker takes over tasks another has not started.

Each hand-out is a *lease*: a fresh random token (a fencing token) that goes to
the worker with the task and must come back with its result. A result is
accepted only from the worker holding the task's current lease; one from an
expired lease (the task was requeued), a duplicate, or anyone else is refused
and changes nothing, so one client cannot complete another's task. Every
worker request also carries the epoch its join gave it: one from an older
epoch (a late packet on a connection the worker replaced) is refused whole.

Members name themselves in calls (``join(node, ...)``, ``report(worker, ...)``);
a call over the network may only name the node its connection proved to be
(``netlet.node.current_peer``), so no member acts for another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from netlet.cluster._scheduler import (
    DONE,
    Action,
    Deliver,
    Handout,
    Reclaim,
    Scheduler,
    StaleEpoch,
    Started,
    Task,
    batches,
)
from netlet.cluster._store import HeadStore
from netlet.codec import RemoteRef
from netlet.errors import ConfigError, ConnectionLost, NoSuchObject
from netlet.node import Node, Proxy, current_peer, expose

__all__ = ["Head", "HeadConfig", "Task"]

log = logging.getLogger("netlet.cluster")


def _result_size(result: list[Any]) -> int:
    """Bytes a result ``[id, ok, body, error]`` holds (its body; the rest is small)."""
    body = result[2]
    return 64 + (len(body) if isinstance(body, bytes) else 0)


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
    result_budget: int = 256 * 1024 * 1024
    """Bytes of results waiting for clients beyond which no task is handed out."""


@dataclass(slots=True)
class Member:
    node: str
    role: str
    info: dict[str, Any]
    control: Proxy | None = None
    since: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
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


def _as_itself(node: str) -> None:
    """Refuse a call from the network that names a member other than its caller."""
    caller = current_peer()
    if caller is not None and caller != node:
        raise PermissionError(
            f"this connection may act only for its own node, not {str(node)[:8]!r}: "
            "pass your own node id (a connection claiming an id another one owns has none)")


@expose(concurrent=True)
class Head:
    """The cluster's head; served as ``"netlet.head"``."""

    def __init__(self, node: Node, config: HeadConfig | None = None,
                 store: HeadStore | None = None) -> None:
        self._node = node
        self.config = config or HeadConfig()
        self._store = store
        self._sched = Scheduler()
        self._tasks = self._sched.tasks
        self._functions: dict[str, bytes] = {}
        self._members: dict[str, Member] = {}
        self._clients: dict[str, Any] = {}  # a Proxy, or the sink itself when on our node
        self._outbox: dict[str, list[list[Any]]] = {}
        self._started: dict[str, list[str]] = {}
        self._flush_scheduled = False
        self._delivering: set[str] = set()
        self._undelivered = 0
        """Bytes of results waiting for (or on their way to) clients."""
        self._budget = self.config.result_budget
        self._paused = False
        self._jobs: set[asyncio.Task[None]] = set()
        self._pulls: dict[str, asyncio.Future[Handout]] = {}
        self._names: dict[str, tuple[RemoteRef, str]] = {}
        self._actors: dict[str, ActorSpec] = {}
        self._subscribers: dict[str, Any] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        self.started = time.time()
        node.on_peer_change(self._peer_changed)
        if store is not None:
            self._restore(store)

    @property
    def refused_results(self) -> int:
        """Results refused: late (an expired lease), duplicates, or not from the lease holder."""
        return self._sched.refused_results

    @property
    def scheduler(self) -> Scheduler:
        return self._sched

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
            task = Task(t.id, t.client, t.fn, t.body, t.retries, t.attempts)
            result = None
            if t.state == DONE:
                result = tuple(t.result) if t.result is not None else (t.id, False, None, None)
            for action in self._sched.restore(task, result):
                if isinstance(action, Deliver) and t.result is not None:
                    self._outbox.setdefault(task.client, []).append(list(action.result))
        for name, ref, node in store.names():
            self._names[name] = (ref, node)
        log.info("head restored %d tasks and %d names from %s",
                 len(self._tasks), len(self._names), store.path)

    # -- membership -----------------------------------------------------------------

    async def join(self, node: str, role: str, info: dict[str, Any],
                   control: Proxy | None = None) -> dict[str, Any]:
        """A worker or client joins (or rejoins after a drop or a head restart).

        A worker gets a new ``epoch``: its requests carry it from now on, and
        requests carrying an older one are refused.
        """
        _as_itself(node)
        if role not in ("worker", "client"):
            raise ConfigError(f"unknown role {role!r}")
        old = self._members.get(node)
        member = Member(node, role, dict(info), control)
        if old is not None and old.alive:
            member.since, member.done, member.failed = old.since, old.done, old.failed
        self._members[node] = member
        reply = {"head": self._node.id, "heartbeat": self.config.heartbeat,
                 "dead_after": self.config.dead_after}
        if role == "worker":
            reply["epoch"], actions = self._sched.join(node, time.monotonic())
            self._act(actions)
        self._event("join", member)
        if role == "worker":
            self._respawn_orphans()
        return reply

    async def heartbeat(self, node: str, stats: dict[str, Any] | None = None,
                        epoch: int | None = None, holding: list[str] | None = None,
                        seen: int = 0) -> bool:
        """A member is alive; a worker names the tasks it ``holding`` and the last
        hand-out it has ``seen``, and the head requeues any it handed out before
        that the worker does not hold. False: rejoin (unknown here, or an old epoch)."""
        _as_itself(node)
        member = self._members.get(node)
        if member is None or not member.alive:
            return False  # unknown here (head restarted, or declared dead): rejoin
        member.last_seen = time.monotonic()
        if stats:
            member.info.update(stats)
        if member.role == "worker" and epoch is not None and holding is not None:
            try:
                actions = self._sched.heartbeat(node, int(epoch), holding, int(seen),
                                                member.last_seen)
            except StaleEpoch:
                return False
            self._act(actions)
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
            await asyncio.sleep(min(self.config.heartbeat, self.config.pull_wait / 2))
            now = time.monotonic()
            self._act(self._sched.expire(now, self.config.pull_wait))
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
            held = len(self._sched.holds(member.node))
            if held:
                log.info("%d task(s) of worker %s go back to the queue", held, member.node[:8])
            self._act(self._sched.worker_lost(member.node))
            fut = self._pulls.pop(member.node, None)
            if fut is not None and not fut.done():
                fut.set_result(Handout(member.node, (), 0))
            self._respawn_orphans()
        self._event("leave", member)

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
        specs = [(tid, fn, body, int(retries)) for tid, fn, body, retries in tasks]
        if refusal is not None:  # never queued, never sent to a worker
            for tid, fn, body, _ in [s for s in specs if _pickled(s[1])]:
                self._act(self._sched.reject(client, tid, fn, body, ConfigError(
                    f"the head refuses the pickled function of task {tid}: {refusal}")))
            specs = [s for s in specs if not _pickled(s[1])]
        new, actions = self._sched.submit(client, specs, time.monotonic())
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
        if cancelled and self._store is not None:
            self._store.forget(cancelled)
        return cancelled

    def _worker(self, worker: str) -> Member:
        _as_itself(worker)
        member = self._members.get(worker)
        if member is None or not member.alive or member.role != "worker":
            raise NoSuchObject("unknown worker: join first")
        return member

    async def pull(self, worker: str, epoch: int, want: int) -> list[Any]:
        """Up to ``want`` more tasks for ``worker``: ``[tasks, functions, seq]``.

        ``tasks`` is ``[[id, fn, body, lease], ...]``; ``seq`` numbers this
        hand-out (heartbeats acknowledge it). With no work the pull waits at
        most ``pull_wait`` seconds and answers empty.
        """
        self._worker(worker)
        try:
            actions = self._sched.pull(worker, int(epoch), int(want), time.monotonic())
        except StaleEpoch as e:
            raise NoSuchObject(str(e)) from None
        mine = next((a for a in actions if isinstance(a, Handout) and a.worker == worker
                     and a.tasks), None)
        self._act([a for a in actions if a is not mine])
        if mine is None:
            fut: asyncio.Future[Handout] = asyncio.get_running_loop().create_future()
            self._pulls[worker] = fut
            try:
                mine = await fut
            finally:
                if self._pulls.get(worker) is fut:
                    del self._pulls[worker]
        return self._handout_reply(mine)

    def _handout_reply(self, handout: Handout) -> list[Any]:
        batch: list[list[Any]] = []
        fns: dict[str, bytes] = {}
        for task in handout.tasks:
            batch.append([task.id, task.fn, task.body, task.lease])
            fn = task.fn.removeprefix("chunk:")
            if fn.startswith("pickle:") and fn in self._functions:
                fns[fn] = self._functions[fn]
        return [batch, fns, handout.seq]

    async def exchange(self, worker: str, epoch: int, results: list[list[Any]],
                       started: list[str], want: int) -> list[Any]:
        """``report`` then ``pull`` in one round trip: what a busy worker sends."""
        await self.report(worker, epoch, results, started)
        return await self.pull(worker, epoch, want)

    async def report(self, worker: str, epoch: int, results: list[list[Any]],
                     started: list[str] | None = None) -> None:
        """Tasks ``started`` and results ``[id, ok, body, lease]`` from a worker.

        Only the holder of a task's current lease completes it; anything else (a
        late result from an expired lease, a duplicate, a forgery) is refused,
        counted in ``refused_results`` once, and changes nothing else. A report
        from an older epoch of the worker is refused whole.
        """
        _as_itself(worker)
        if not isinstance(results, list) or not all(
                isinstance(r, list) and len(r) == 4 and isinstance(r[0], str)
                and isinstance(r[2], bytes) and isinstance(r[3], str) for r in results):
            raise ConfigError("results are [[task_id: str, ok, body: bytes, lease: str], ...]")
        if started is not None and not (isinstance(started, list)
                                        and all(isinstance(t, str) for t in started)):
            raise ConfigError("started is a list of task ids")
        member = self._members.get(worker)
        if member is None or not member.alive:
            self._sched.refused_results += len(results)
            raise NoSuchObject("unknown worker: join first")
        _, done0, failed0 = self._sched.worker_load(worker)
        try:
            actions = self._sched.started(worker, int(epoch), started) if started else []
            if results:
                actions += self._sched.results(
                    worker, int(epoch), [(t, bool(ok), b, ls) for t, ok, b, ls in results])
        except StaleEpoch as e:
            log.info("refused a report from %s: %s", worker[:8], e)
            raise NoSuchObject(str(e)) from None
        _, done1, failed1 = self._sched.worker_load(worker)
        member.done += done1 - done0
        member.failed += failed1 - failed0
        self._act(actions)

    def _act(self, actions: list[Action]) -> None:
        """Carry out what the scheduler decided."""
        for action in actions:
            if isinstance(action, Handout):
                fut = self._pulls.pop(action.worker, None)
                if fut is not None and not fut.done():
                    fut.set_result(action)
            elif isinstance(action, Deliver):
                result = list(action.result)
                if self._store is not None:
                    self._store.finish(action.result[0], result)
                self._outbox.setdefault(action.client, []).append(result)
                self._undelivered += _result_size(result)
                self._schedule_flush()
            elif isinstance(action, Started):
                sink = self._clients.get(action.client)
                if isinstance(sink, Proxy):
                    self._started.setdefault(action.client, []).extend(action.tasks)
                    self._schedule_flush()
                elif sink is not None:  # a client on this node: its futures turn RUNNING now
                    for tid in action.tasks:
                        sink.claim(tid)
            elif isinstance(action, Reclaim):
                self._spawn(self._steal(action))
        if self._undelivered > self._budget and not self._paused:
            self._paused = True
            log.info("results waiting for clients (%d bytes) fill the budget: pausing hand-outs",
                     self._undelivered)
            self._act(self._sched.pause(True))

    async def _reclaim(self, action: Reclaim) -> list[str]:
        """Ask a worker to give back tasks it has not started (for an idle worker, or
        a cancel); returns those a cancel dropped."""
        member = self._members.get(action.worker)
        returned: list[str] = []
        if member is not None and member.alive and member.control is not None:
            try:
                returned = await member.control.with_options(timeout=10).give_back.aio(
                    action.epoch, list(action.tasks))
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
            first = self._split(batch)[0]
            rest = batch[len(first):]
            if rest:
                self._outbox[client] = rest
            else:
                del self._outbox[client]
            self._delivering.add(client)
            self._spawn(self._deliver(client, sink, first))

    def _split(self, results: list[list[Any]]) -> list[list[list[Any]]]:
        limits = self._node.config.transport.limits
        return batches(results, _result_size, limits.max_frame // 4,
                       max(1, limits.max_buffers // 2), limits.oob_threshold)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start a background job, holding a reference so it is not collected mid-flight."""
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _deliver(self, client: str, sink: Any, batch: list[list[Any]]) -> None:
        """Forget results only once the client acknowledged them.

        A client that is slow to take them holds up only its own deliveries (one
        message in flight each); while what waits for clients exceeds the budget,
        no task is handed out (backpressure), and a failed delivery is tried again.
        """
        try:
            if isinstance(sink, Proxy):
                await sink.with_options(timeout=30).results.aio(batch)
            else:  # a client on the head's own node (the embedded cluster)
                await sink.results(batch)
        except Exception as e:  # connection lost, timeout: keep them for the client
            log.info("results for client %s wait for it: %s", client[:8], e)
            self._outbox.setdefault(client, [])[:0] = batch
            if client in self._node.connected_peers():
                asyncio.get_running_loop().call_later(1.0, self._schedule_flush)
            return
        finally:
            self._delivering.discard(client)
        done = [r[0] for r in batch]
        self._sched.delivered(done)
        self._undelivered -= sum(_result_size(r) for r in batch)
        if self._store is not None:
            self._store.forget(done)
        if self._paused and self._undelivered <= self._budget // 2:
            self._paused = False
            self._act(self._sched.pause(False))
        if self._outbox.get(client):
            self._schedule_flush()

    def _forget_client(self, client: str) -> None:
        self._members.pop(client, None)
        self._clients.pop(client, None)
        dropped = self._outbox.pop(client, [])
        self._undelivered -= sum(_result_size(r) for r in dropped)
        gone = self._sched.forget_client(client)
        if gone and self._store is not None:
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
        member = min(workers, key=lambda m: (self._sched.worker_load(m.node)[0],
                                             m.info.get("actors", 0)))
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
                  "running": self._sched.worker_load(m.node)[0], "done": m.done,
                  "failed": m.failed}
                 for m in self._members.values()]
        return {"head": self._node.id, "started": self.started, "nodes": nodes,
                "names": await self.names(), "queued": self._sched.queued,
                "running": self._sched.running, "refused_results": self.refused_results}
