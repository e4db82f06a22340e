"""One simulated process: a node on the simulation's loop, and the tasks it runs.

A process ends in one of two ways. ``crash()`` is ``kill -9``: its connections
break at once (the network drops what it had not sent), its tasks stop where
they are, and nothing it held in memory survives. ``close()`` is a clean exit,
used when the simulation is over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from netlet.node import Node
from netlet.testing._loop import SimClock
from netlet.testing._net import SimNet

__all__ = ["Process", "Recorder"]


class Recorder(Protocol):
    """Where a process writes what it saw (the run's trace and its checks)."""

    def note(self, what: str) -> None: ...

    def violation(self, what: str) -> None: ...


class Process:
    """A named process of the simulation, with one node."""

    def __init__(self, name: str, net: SimNet, clock: SimClock, rec: Recorder) -> None:
        self.name = name
        self.net = net
        self.clock = clock
        self.rec = rec
        self.node: Node | None = None
        self.alive = False
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start_node(self, listen: str | None = None, **options: Any) -> Node:
        node = Node(listen, start=False, **self.net.node_options(self.name, **options))
        await node.astart()
        self.node = node
        self.alive = True
        return node

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as part of this process (it dies with it)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.rec.violation(f"{self.name}: a task of the simulated process failed: "
                               f"{task.exception()!r}")

    async def crash(self, before_close: Callable[[], None] | None = None) -> None:
        """Die at once: see the module docstring."""
        if not self.alive:
            return
        self.alive = False
        self.net.crash(self.name)
        for task in list(self._tasks):
            task.cancel()
        if before_close is not None:
            before_close()
        if self.node is not None:
            with contextlib.suppress(Exception):
                await self.node.aclose(grace=0)

    async def close(self) -> None:
        """Exit cleanly (the end of a run)."""
        self.alive = False
        for task in list(self._tasks):
            task.cancel()
        if self.node is not None:
            with contextlib.suppress(Exception):
                await self.node.aclose(grace=0)
