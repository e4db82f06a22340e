"""The dashboard's models: where its statistics snapshots come from.

A ``HeadSource`` reads a head's frozen records. ``LocalHead`` reads a head in
this process, hopping onto the head's loop (its state lives there and needs
no lock); ``RemoteHead`` is a client of a head elsewhere and asks it over
netlet (``Head.dashboard``), so it needs the cluster key like any member.

An application (the bank, a prime search) plugs in through a ``Provider``:
the web layer sits below the apps and never imports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from netlet.cluster import (
    ClusterEvent,
    Head,
    HeadStatistics,
    NameInfo,
    TaskInfo,
    TaskPage,
)
from netlet.cluster._stats import from_dict
from netlet.node import LinkStatistics, Node, NodeStatistics
from netlet.transport import TLSConfig

__all__ = ["HeadSource", "LocalHead", "Provider", "RemoteHead"]

T = TypeVar("T")


class HeadSource(Protocol):
    """What the dashboard asks a head; every answer is a frozen record."""

    can_cancel: bool
    can_drain: bool

    async def statistics(self) -> HeadStatistics: ...
    async def node(self) -> NodeStatistics: ...
    async def links(self) -> list[LinkStatistics]: ...
    async def tasks(self, state: str, fn: str, worker: str, client: str, offset: int,
                    limit: int) -> TaskPage: ...
    async def task(self, tid: str) -> TaskInfo | None: ...
    async def events(self, after: int, limit: int) -> list[ClusterEvent]: ...
    async def names(self) -> list[NameInfo]: ...
    async def cancel(self, tids: list[str]) -> list[str]: ...
    async def drain(self, node: str, on: bool) -> bool: ...
    def close(self) -> None: ...


class Provider(Protocol):
    """An application's page: ``/apps/<name>`` and ``/api/v1/apps/<name>``.

    ``snapshot()`` is the page's model (plain JSON-able data, rendered by the
    template ``apps/<template>.html``); ``counters()`` are running totals the
    dashboard charts as rates; ``metrics()`` yields prometheus-client metric
    families for ``/metrics``; ``actions()`` are the control POSTs it offers
    (``/apps/<name>/<action>``, token and CSRF checked). Calls may block: they
    run on a worker thread.
    """

    name: str
    title: str
    template: str

    def snapshot(self) -> dict[str, Any]: ...
    def counters(self) -> dict[str, float]: ...
    def metrics(self) -> Iterable[Any]: ...
    def actions(self) -> Mapping[str, Callable[[], Any]]: ...


class LocalHead:
    """A head served by this process (``netlet head --dashboard``, the embedded cluster)."""

    can_cancel = True
    can_drain = True

    def __init__(self, head: Head) -> None:
        self._head, self._node = head, head.node
        self._run(head.track_tasks)

    def _run(self, fn: Callable[[], T]) -> T:
        loop = self._node.loop
        assert loop is not None

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(30)

    async def _on_head(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return await self._on_head_coro(call())

    async def _on_head_coro(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._node.loop
        assert loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def statistics(self) -> HeadStatistics:
        return await self._on_head(self._head.statistics)

    async def node(self) -> NodeStatistics:
        return self._node.statistics()

    async def links(self) -> list[LinkStatistics]:
        return list(await self._on_head(self._node.link_statistics))

    async def tasks(self, state: str, fn: str, worker: str, client: str, offset: int,
                    limit: int) -> TaskPage:
        return await self._on_head(
            lambda: self._head.task_page(state, fn, worker, client, offset, limit))

    async def task(self, tid: str) -> TaskInfo | None:
        return await self._on_head(lambda: self._head.task_info(tid))

    async def events(self, after: int, limit: int) -> list[ClusterEvent]:
        return await self._on_head(lambda: self._head.events(after, limit))

    async def names(self) -> list[NameInfo]:
        return await self._on_head(self._head.names_list)

    async def cancel(self, tids: list[str]) -> list[str]:
        return await self._on_head_coro(self._head.cancel_tasks(tids))

    async def drain(self, node: str, on: bool) -> bool:
        return await self._on_head(lambda: self._head.drain_worker(node, on))

    def close(self) -> None:
        pass


class RemoteHead:
    """A head elsewhere, watched as a client holding the cluster key.

    Control of tasks stays with their clients: a remote dashboard cannot
    cancel another client's task (the head refuses it), so it offers none;
    nor does the head offer its members a way to drain each other.
    """

    can_cancel = False
    can_drain = False

    def __init__(self, address: str, *, key: bytes | None = None,
                 key_file: str | None = None, tls: TLSConfig | None = None,
                 timeout: float = 10.0) -> None:
        self._node = Node(key=key, key_file=key_file, tls=tls, call_timeout=timeout)
        self._head = self._node.proxy(address, "netlet.head")
        self.address = address

    def check(self) -> None:
        """Reach the head now (its refusal, a wrong key, is told here)."""
        self._head.dashboard("node")

    async def _ask(self, what: str, args: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self._head.dashboard, what, args or {})

    async def statistics(self) -> HeadStatistics:
        return from_dict(HeadStatistics, await self._ask("statistics"))

    async def node(self) -> NodeStatistics:
        return from_dict(NodeStatistics, await self._ask("node"))

    async def links(self) -> list[LinkStatistics]:
        return [from_dict(LinkStatistics, lk) for lk in await self._ask("links")]

    async def tasks(self, state: str, fn: str, worker: str, client: str, offset: int,
                    limit: int) -> TaskPage:
        return from_dict(TaskPage, await self._ask("tasks", {
            "state": state, "fn": fn, "worker": worker, "client": client, "offset": offset,
            "limit": limit}))

    async def task(self, tid: str) -> TaskInfo | None:
        data = await self._ask("task", {"id": tid})
        return from_dict(TaskInfo, data) if data is not None else None

    async def events(self, after: int, limit: int) -> list[ClusterEvent]:
        return [from_dict(ClusterEvent, e)
                for e in await self._ask("events", {"after": after, "limit": limit})]

    async def names(self) -> list[NameInfo]:
        return [from_dict(NameInfo, n) for n in await self._ask("names")]

    async def cancel(self, tids: list[str]) -> list[str]:
        raise PermissionError("a remote dashboard cannot cancel tasks: their clients can")

    async def drain(self, node: str, on: bool) -> bool:
        raise PermissionError("a remote dashboard cannot drain workers: serve the dashboard "
                              "from the head (netlet head --dashboard ... --dashboard-control)")

    def close(self) -> None:
        self._node.close()
