"""The node's object table: what it serves, by name, and what it serves only for a peer.

It owns the actors (one per served object) and the thread pool the actors of
concurrent objects run their calls on.

An object is served under a name (``Node.serve``), or served automatically when
it is passed by value to a peer: then it stays served for as long as some link
it was handed to is open. Incoming calls find their actor here (``get``); the
table knows nothing of links beyond the names each was handed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from netlet.errors import ConfigError
from netlet.node._actor import Actor

if TYPE_CHECKING:
    from netlet.node._link import Link

__all__ = ["ObjectTable"]


class ObjectTable:
    """Served objects by name (each behind its ``Actor``), with their per-peer exports."""

    def __init__(self, loop: Callable[[], asyncio.AbstractEventLoop], max_threads: int) -> None:
        self._loop = loop
        self._max_threads = max_threads
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._threads_lock = threading.Lock()
        self._actors: dict[str, Actor] = {}
        self._auto_names: dict[int, str] = {}  # id(obj) -> its automatic name
        self._export_counts: dict[str, int] = {}  # automatic name -> links holding it
        self.get = self._actors.get
        """``get(name)``: the actor served as ``name``, or None (every incoming call asks)."""

    def add(self, name: str, obj: object) -> None:
        """Serve ``obj`` as ``name``; a name is never silently taken over."""
        if name in self._actors:
            raise ConfigError(f"a different object is already served as {name!r}")
        self._actors[name] = Actor(obj, name, self._loop, self._pool)

    def remove(self, name: str) -> None:
        """Stop serving ``name`` (its actor finishes what it runs, then stops)."""
        actor = self._actors.pop(name, None)
        if actor is not None:
            self._auto_names.pop(id(actor.obj), None)
            actor.close()

    def export(self, obj: object, link: Link) -> str:
        """The name ``obj`` is served under for the peer of ``link``, serving it if needed.

        It stays served until every link it was handed to has closed (``release``).
        """
        name = self._auto_names.get(id(obj))
        if name is None or name not in self._actors:
            name = f"auto-{uuid.uuid4().hex[:12]}"
            self._actors[name] = Actor(obj, name, self._loop, self._pool)
            self._auto_names[id(obj)] = name
        if name not in link.exported:
            link.exported.add(name)
            self._export_counts[name] = self._export_counts.get(name, 0) + 1
        return name

    def release(self, link: Link) -> None:
        """``link`` closed: stop serving what was handed only to it."""
        for name in link.exported:
            left = self._export_counts.get(name, 1) - 1
            if left <= 0:
                self._export_counts.pop(name, None)
                self.remove(name)
            else:
                self._export_counts[name] = left

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """The actors' thread pool, started on first use."""
        if self._threads is None:
            with self._threads_lock:
                if self._threads is None:
                    self._threads = concurrent.futures.ThreadPoolExecutor(
                        self._max_threads, thread_name_prefix="netlet-pool")
        return self._threads

    async def close(self) -> None:
        """Close every actor (each finishes the call it runs), then stop the pool."""
        for actor in list(self._actors.values()):
            await asyncio.to_thread(actor.close)
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
