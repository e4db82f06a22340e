"""Fixtures for the dashboard's tests: a real head (embedded in this process) with
real worker processes, a client submitting to it, and the dashboard served over
real HTTP on a free loopback port (``dashboard_server``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from netlet.cluster import Cluster, EmbeddedCluster, HeadConfig
from netlet.web import Dashboard, LocalHead
from tests._support import wait_until

__all__ = ["Kit", "wait_until"]

pytest.importorskip("fastapi", reason="the dashboard needs netlet[web]")


@dataclass
class Kit:
    embedded: EmbeddedCluster
    cluster: Cluster

    def workers_alive(self, n: int) -> None:
        wait_until(lambda: self._alive() >= n, what=f"{n} workers joining")

    def _alive(self) -> int:
        return sum(1 for m in self.cluster.status()["nodes"]
                   if m["role"] == "worker" and m["alive"])

    def on_head(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the head's loop (where its state lives) and return its value."""

        async def run() -> object:
            return fn()

        loop = self.embedded.node.loop
        assert loop is not None
        return asyncio.run_coroutine_threadsafe(run(), loop).result(10)


@pytest.fixture
def kit() -> Iterator[Kit]:
    emb = EmbeddedCluster(2, config=HeadConfig(heartbeat=0.2, dead_after=1.5))
    cluster = Cluster(emb.address, node=emb.node)
    k = Kit(emb, cluster)
    try:
        k.workers_alive(2)
        yield k
    finally:
        cluster.close()
        emb.close()


@pytest.fixture
def dashboard_for(kit: Kit) -> Iterator[Callable[..., Dashboard]]:
    """``dashboard_for(**options)``: the kit's head's dashboard, served on a free
    loopback port over real HTTP; stopped at the end of the test."""
    started: list[Dashboard] = []

    def make(**options: object) -> Dashboard:
        options.setdefault("listen", "127.0.0.1:0")
        options.setdefault("interval", 0.2)
        d = Dashboard(LocalHead(kit.embedded.head), **options)  # type: ignore[arg-type]
        started.append(d.start())
        return d

    yield make
    for d in started:
        d.stop()
