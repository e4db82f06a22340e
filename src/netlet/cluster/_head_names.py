"""The head's name service and the objects it places on workers (``spawn``).

A mixin of :class:`netlet.cluster._head.Head`, like ``_head_code``: every
method runs on the head's loop. A name maps to a handle (a REF) and belongs
to the member that registered it, or to the worker hosting a spawned object:
it goes when that member does, and a spawned object with
``restart="on-failure"`` is placed again on another worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from netlet.cluster._head_checks import _as_itself
from netlet.cluster._head_monitor import HeadMonitor
from netlet.cluster._head_tasks import Member, _pickled
from netlet.cluster._member_messages import NameEntry, Names
from netlet.cluster._scheduler import Scheduler
from netlet.cluster._store import HeadStore
from netlet.codec import RemoteRef
from netlet.errors import ConfigError
from netlet.node import Proxy, expose

__all__ = ["ActorSpec", "HeadNamesMixin"]

log = logging.getLogger("netlet.cluster")


@dataclass(slots=True)
class ActorSpec:
    name: str
    cls: str
    body: bytes
    restart: str | None
    functions: dict[str, bytes]
    worker: str = ""


@expose(concurrent=True)
class HeadNamesMixin:
    """``register``, ``lookup``, ``names``, ``unregister`` and ``spawn``, for the head."""

    _names: dict[str, tuple[RemoteRef, str]]
    _actors: dict[str, ActorSpec]
    _members: dict[str, Member]
    _store: HeadStore | None
    _sched: Scheduler
    _monitor: HeadMonitor

    def _pickle_refusal(self, client: str) -> str | None:
        raise NotImplementedError

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

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

    async def names(self) -> Names:
        """Every registered name, with its handle's kind and address and its owner."""
        return Names([NameEntry(n, r.kind, r.address, o) for n, (r, o) in self._names.items()])

    async def unregister(self, name: str) -> bool:
        self._drop_actor(name)
        return self._drop_name(name)

    def _drop_actor(self, name: str) -> None:
        if self._actors.pop(name, None) is not None and self._store is not None:
            self._store.drop_actor(name)

    def _drop_name(self, name: str) -> bool:
        found = self._names.pop(name, None) is not None
        if found and self._store is not None:
            self._store.drop_name(name)
        return found

    # -- actors ---------------------------------------------------------------------

    async def spawn(self, cls: str, body: bytes, name: str, restart: str | None,
                    functions: dict[str, bytes], client: str = "") -> RemoteRef:
        """Place an exposed object on a worker and name it; returns its handle."""
        if not (type(cls) is str and type(body) is bytes and type(name) is str and name
                and type(client) is str and type(functions) is dict
                and all(type(k) is str and type(v) is bytes for k, v in functions.items())):
            raise ConfigError("spawn: cls (str), body (bin), name (a non-empty str), restart, "
                              "functions (a map str -> bin) and client (str)")
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
        if self._store is not None:
            self._store.put_actor(name, cls, body, restart, spec.functions, spec.worker)
        return ref

    async def _place(self, spec: ActorSpec, exclude: str = "") -> RemoteRef:
        workers = [m for m in self._members.values()
                   if m.role == "worker" and m.alive and m.control is not None
                   and m.node != exclude]
        if not workers:
            raise ConfigError("no worker is available to host the object")
        member = min(workers, key=lambda m: (self._sched.worker_load(m.node)[0],
                                             m.actors))
        assert member.control is not None
        raw = await member.control.create.aio(spec.cls, spec.body, spec.name, spec.functions)
        ref = raw.__netlet_ref__()
        spec.worker = member.node
        member.actors += 1
        self._names[spec.name] = (ref, member.node)
        if self._store is not None:
            self._store.put_name(spec.name, ref, member.node)
        return ref  # type: ignore[no-any-return]

    def _respawn_orphans(self) -> None:
        for spec in list(self._actors.values()):
            if spec.name in self._names:
                continue
            if spec.restart != "on-failure":
                self._drop_actor(spec.name)
                continue
            self._spawn(self._replace(spec))

    async def _replace(self, spec: ActorSpec) -> None:
        try:
            await self._place(spec, exclude=spec.worker)
            log.info("restarted %s on worker %s", spec.name, spec.worker[:8])
            self._monitor.event("restart", spec.worker, "actor", spec.name)
            self._monitor.restarts[spec.name] = self._monitor.restarts.get(spec.name, 0) + 1
        except Exception as e:
            log.warning("cannot restart %s yet: %s", spec.name, e)
