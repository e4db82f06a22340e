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
from typing import Any

from netlet.cluster._code import CodeStore
from netlet.cluster._head_checks import _as_itself, _expect
from netlet.cluster._head_code import HeadCodeMixin
from netlet.cluster._head_names import ActorSpec, HeadNamesMixin
from netlet.cluster._head_stats import HeadMonitor, HeadStatsMixin, worker_fields
from netlet.cluster._head_tasks import HeadConfig, Member, TaskDesk, _result_size
from netlet.cluster._member_messages import Joined, JoinInfo, Load, MemberEvent
from netlet.cluster._messages import Finished
from netlet.cluster._scheduler import DONE, Deliver, Handout, Scheduler, StaleEpoch, Task
from netlet.cluster._store import HeadStore
from netlet.codec import RemoteRef, short
from netlet.errors import ConfigError, ConnectionLost
from netlet.node import Node, Proxy, current_peer, expose

__all__ = ["Head", "HeadConfig", "Task"]

log = logging.getLogger("netlet.cluster")

_EPOCH_BLOCK = 64
"""Worker epochs reserved in the store at a time (a restarted head starts above them)."""


@expose(concurrent=True)
class Head(TaskDesk, HeadCodeMixin, HeadNamesMixin, HeadStatsMixin):
    """The cluster's head; served as ``"netlet.head"``."""

    def __init__(self, node: Node, config: HeadConfig | None = None,
                 store: HeadStore | None = None) -> None:
        self._node = node
        self._clock = node.config.clock
        self.config = config or HeadConfig()
        self._store = store
        self._sched = Scheduler()
        self._tasks = self._sched.tasks
        self._functions: dict[str, bytes] = {}
        self._members: dict[str, Member] = {}
        self._clients: dict[str, Any] = {}  # a Proxy, or the sink itself when on our node
        self._outbox: dict[str, list[Finished]] = {}
        self._started: dict[str, list[str]] = {}
        self._flush_scheduled = False
        self._delivering: set[str] = set()
        self._undelivered = 0
        """Bytes of results waiting for (or on their way to) clients."""
        self._owed: dict[str, int] = {}
        """The same per client."""
        self._budget = self.config.result_budget
        self._paused = False
        self._jobs: set[asyncio.Task[None]] = set()
        self._pulls: dict[str, asyncio.Future[Handout]] = {}
        self._names: dict[str, tuple[RemoteRef, str]] = {}
        self._actors: dict[str, ActorSpec] = {}
        self._subscribers: dict[str, Any] = {}
        self._code = CodeStore(self.config.code_max_package, self.config.code_max_total)
        self._sweeper: asyncio.Task[None] | None = None
        self._monitor = HeadMonitor()
        self._stopping = False
        self.started = self._clock.time()
        self._restored: tuple[float, set[str], set[str]] | None = None
        """After a restore: when, the name owners and the clients that must come back."""
        node.on_peer_change(self._peer_changed)
        self._epochs_reserved = 0
        """Worker epochs up to here are recorded in the store as handed out."""
        if store is not None:
            self._restore(store)
            self._epochs_reserved = store.epoch_floor()
            self._sched.epochs_after(self._epochs_reserved)

    @property
    def refused_results(self) -> int:
        """Results refused: late (an expired lease), duplicates, or not from the lease holder."""
        return self._sched.refused_results

    @property
    def node(self) -> Node:
        """The node serving this head."""
        return self._node

    @property
    def scheduler(self) -> Scheduler:
        return self._sched

    # -- lifecycle (called by the process that hosts the head) ----------------------

    def start(self) -> None:
        loop = self._node.get_loop()
        loop.call_soon_threadsafe(self._start_sweeper)

    def stop(self) -> None:
        """The host is shutting down: members leaving now is expected, not news."""
        self._stopping = True

    def halt(self) -> None:
        """The host is gone (a simulation kills it): the periodic sweep ends and nothing
        more reaches the store, whatever its node does while it is closed. On the
        node's loop."""
        self._stopping = True
        self._store = None
        if self._sweeper is not None:
            self._sweeper.cancel()

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
                    done = action.result  # the store remade its error
                    self._outbox.setdefault(task.client, []).append(done)
                    self._owe(task.client, _result_size(done))
        for name, ref, node in store.names():
            self._names[name] = (ref, node)
        for name, cls, body, restart, functions, worker in store.actors():
            self._actors[name] = ActorSpec(name, cls, body, restart, functions, worker)
        self._restored = (self._clock.monotonic(), {o for _, o in self._names.values()},
                          {t.client for t in self._tasks.values()})
        log.info("head restored %d tasks, %d names and %d actors from %s",
                 len(self._tasks), len(self._names), len(self._actors), store.path)

    def _forget_absent(self, now: float) -> None:
        """After a restore: drop the names of owners that did not rejoin within
        ``dead_after`` (respawning actors per their policy), and the tasks of
        clients that did not come back within ``client_grace``."""
        assert self._restored is not None
        since, owners, clients = self._restored
        if owners and now - since > self.config.dead_after:
            for name in [n for n, (_, o) in self._names.items() if o in owners
                         and not (o in self._members and self._members[o].alive)]:
                log.info("%s was not re-announced since the restart: dropped", name)
                self._drop_name(name)
            owners.clear()
            self._respawn_orphans()
        if clients and now - since > self.config.client_grace:
            for client in clients - set(self._members):
                log.info("client %s did not come back since the restart: its tasks are "
                         "dropped", client[:8])
                self._forget_client(client)
            clients.clear()
        if not (owners or clients):
            self._restored = None

    # -- membership -----------------------------------------------------------------

    async def join(self, node: str, role: str, info: JoinInfo,
                   control: Proxy | None = None) -> Joined:
        """A worker or client joins (or rejoins after a drop or a head restart).

        A worker gets a new ``epoch``: its requests carry it from now on, and
        requests carrying an older one are refused. Arguments of the wrong type
        are refused before anything changes.
        """
        _as_itself(node)
        if role not in ("worker", "client"):
            raise ConfigError(f"unknown role {short(role)}: 'worker' or 'client'")
        _expect("join", "info", info, JoinInfo)
        if control is not None and not isinstance(control, Proxy):
            raise ConfigError(f"join: control is a reference (REF) or nil, not {short(control)}")
        old = self._members.get(node)
        member = Member(node, role, info, control, since=self._clock.time(),
                        last_seen=self._clock.monotonic())
        if old is not None and old.alive:
            member.since, member.done, member.failed = old.since, old.done, old.failed
            member.load, member.actors = old.load, old.actors
        self._members[node] = member
        epoch = None
        if role == "worker":
            epoch, actions = self._sched.join(node, self._clock.monotonic())
            if self._store is not None and epoch > self._epochs_reserved:
                self._epochs_reserved = epoch + _EPOCH_BLOCK  # a write per block
                self._store.reserve_epochs(self._epochs_reserved)
            self._act(actions)
        self._event("join", member)
        self._monitor.event("join", node, role, info.name)
        if role == "worker":
            self._respawn_orphans()
        return Joined(self._node.id, float(self.config.heartbeat),
                      float(self.config.dead_after), epoch)

    async def heartbeat(self, node: str, load: Load | None = None,
                        epoch: int | None = None, holding: list[str] | None = None,
                        seen: int = 0) -> bool:
        """A member is alive; a worker names the tasks it ``holding`` and the last
        hand-out it has ``seen``, and the head requeues any it handed out before
        that the worker does not hold. False: rejoin (unknown here, or an old epoch).
        Arguments of the wrong type are refused before anything changes."""
        _as_itself(node)
        if load is not None:
            _expect("heartbeat", "load", load, Load)
        if epoch is not None and type(epoch) is not int:
            raise ConfigError(f"heartbeat: epoch is an int or nil, not {short(epoch)}")
        if holding is not None and not (type(holding) is list
                                        and all(type(t) is str for t in holding)):
            raise ConfigError(f"heartbeat: holding is a list of task ids (str) or nil, "
                              f"not {short(holding)}")
        if type(seen) is not int:
            raise ConfigError(f"heartbeat: seen is an int, not {short(seen)}")
        member = self._members.get(node)
        if member is None or not member.alive:
            return False  # unknown here (head restarted, or declared dead): rejoin
        member.last_seen = self._clock.monotonic()
        if load is not None:
            member.load = load
        if member.role == "worker" and epoch is not None and holding is not None:
            try:
                actions = self._sched.heartbeat(node, epoch, holding, seen, member.last_seen)
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
            member.last_seen = self._clock.monotonic()
        elif member.alive:
            self._member_died(member, "connection lost")

    async def _sweep(self) -> None:
        """Every heartbeat period, and the moment a worker's ``dead_after`` runs out."""
        period = min(self.config.heartbeat, self.config.pull_wait / 2)
        dead_after, wait = self.config.dead_after, period
        while True:
            await self._clock.sleep(wait)
            now = self._clock.monotonic()
            self._act(self._sched.expire(now, self.config.pull_wait))
            due = now + period
            for member in list(self._members.values()):
                # Workers heartbeat; a client is judged by its connection (or its leave).
                if member.role == "worker" and member.alive:
                    if now - member.last_seen >= dead_after:
                        self._member_died(member, f"silent for {now - member.last_seen:.1f} s")
                    else:
                        due = min(due, member.last_seen + dead_after)
                if member.role == "worker" and not member.alive:
                    del self._members[member.node]  # its tasks were requeued: nothing left
            if self._restored is not None:
                self._forget_absent(now)
            cutoff = now - self.config.client_grace
            for client in [c for c, m in self._members.items()
                           if m.role == "client" and not m.alive and m.last_seen < cutoff]:
                self._forget_client(client)
            wait = max(due - now, 1e-3)

    def _member_died(self, member: Member, why: str) -> None:
        member.alive = False
        level = logging.INFO if why == "left" or self._stopping else logging.WARNING
        log.log(level, "%s %s is gone (%s)", member.role, member.node[:8], why)
        for name in [n for n, (_, owner) in self._names.items() if owner == member.node]:
            self._drop_name(name)
        name = member.info.name
        self._monitor.event("left" if why == "left" else "dead", member.node, member.role, name,
                            why)
        if member.role == "worker":
            self._monitor.worker_died(worker_fields(member, self._sched, self._clock.monotonic(),
                                                    "dead", why))
            retried = self._sched.retried
            held = len(self._sched.holds(member.node))
            if held:
                log.info("%d task(s) of worker %s go back to the queue", held, member.node[:8])
            self._act(self._sched.worker_lost(member.node))
            if self._sched.retried > retried:
                self._monitor.event("retry", member.node, member.role, name,
                                    f"{self._sched.retried - retried} task(s) run again")
            fut = self._pulls.pop(member.node, None)
            if fut is not None and not fut.done():
                fut.set_result(Handout(member.node, (), 0))
            self._respawn_orphans()
        self._event("leave", member, why)

    def _event(self, kind: str, member: Member, detail: str = "") -> None:
        event = MemberEvent(kind, member.node, member.role, member.info, detail)
        for key, sink in list(self._subscribers.items()):
            try:
                if isinstance(sink, Proxy):
                    sink.event.oneway(event)
                else:  # a subscriber on the head's own node
                    self._spawn(sink.event(event))
            except (ConnectionLost, OSError):
                self._subscribers.pop(key, None)

    async def subscribe(self, sink: Any) -> None:
        """Membership events: ``sink.event(MemberEvent)``, kind join/leave.

        Over the network the sink must be a reference (anything else would make
        every later join fail); an object of the head's own process must have ``event``.
        """
        if not isinstance(sink, Proxy) and (current_peer() is not None
                                            or not callable(getattr(sink, "event", None))):
            raise ConfigError(f"subscribe: sink is a reference (REF), not {short(sink)}")
        key = repr(sink.__netlet_ref__()) if isinstance(sink, Proxy) else f"local-{id(sink)}"
        self._subscribers[key] = sink

    # -- status -----------------------------------------------------------------------

    async def dashboard(self, what: str, args: dict[str, Any] | None = None) -> Any:
        """Statistics for a dashboard watching from another process, as plain data.

        ``what``: "statistics", "node", "links", "names", "tasks" (``args``: state, fn,
        worker, client, offset, limit), "task" (``args``: id) or "events" (``args``:
        after, limit). The first call turns on per-task history (timings, attempts).
        Any peer holding the cluster key may ask, as for ``status``.
        """
        from netlet.cluster._stats import as_dict  # the records load with the first query

        if args is not None and type(args) is not dict:
            raise ConfigError(f"dashboard: args is a map or nil, not {short(args)}")
        self.track_tasks()
        args = dict(args or {})
        if what == "statistics":
            return as_dict(self.statistics())
        if what == "node":
            return as_dict(self._node.statistics())
        if what == "tasks":
            return as_dict(self.task_page(
                str(args.get("state", "")), str(args.get("fn", "")), str(args.get("worker", "")),
                str(args.get("client", "")), _int(args, "offset", 0), _int(args, "limit", 50)))
        if what == "task":
            info = self.task_info(str(args.get("id", "")))
            return as_dict(info) if info is not None else None
        if what == "names":
            return [as_dict(n) for n in self.names_list()]
        if what == "links":
            return [as_dict(lk) for lk in self._node.link_statistics()]
        if what == "events":
            return [as_dict(e) for e in self.events(_int(args, "after", 0),
                                                   _int(args, "limit", 200))]
        raise ConfigError(f"unknown dashboard query {str(what)[:40]!r}: statistics, node, "
                          "links, names, tasks, task or events")

    async def status(self) -> dict[str, Any]:
        now = self._clock.monotonic()
        # A dead worker is gone for good (a restarted one joins with a new id): not shown.
        nodes = [{"node": m.node, "role": m.role, "alive": m.alive, "name": m.info.name,
                  "address": m.info.address, "host": m.info.host, "pid": m.info.pid,
                  "since": m.since, "heartbeat_age": now - m.last_seen,
                  "running": self._sched.worker_load(m.node)[0], "done": m.done,
                  "failed": m.failed,
                  # A client whose unread results passed its part of the result budget:
                  # its queued tasks are held back until it reads (docs/cluster.md).
                  "held": self._sched.held(m.node),
                  "results_waiting": self._owed.get(m.node, 0)}
                 for m in self._members.values() if m.alive or m.role != "worker"]
        return {"head": self._node.id, "started": self.started, "nodes": nodes,
                "names": {n: [r.kind, r.address, o] for n, (r, o) in self._names.items()},
                "queued": self._sched.queued,
                "running": self._sched.running, "refused_results": self.refused_results,
                "results_waiting": self._undelivered, "paused": self._paused}


def _int(args: dict[str, Any], name: str, default: int) -> int:
    """An int argument of a dashboard query (PROTOCOL.md 16.3): else ConfigError."""
    value = args.get(name, default)
    if type(value) is not int:
        raise ConfigError(f"dashboard: {name} is an int, not {short(value)}")
    return value
