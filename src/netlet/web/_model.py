"""The dashboard's model: its sources, its providers and the rate history it samples.

Once a second it reads the head's task counters (O(workers)) and each
provider's counters, and keeps ten minutes of them: the charts are rates
between consecutive samples.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from netlet.cluster import HeadStatistics
from netlet.web._sources import HeadSource, Provider

__all__ = ["DashboardModel", "RatePoint"]

log = logging.getLogger("netlet.web")
HISTORY = 600


@dataclass(frozen=True, slots=True)
class RatePoint:
    """Rates per second over the interval ending at ``time``."""
    time: float
    submitted: float
    done: float
    failed: float


@dataclass(slots=True)
class _Sample:
    t: float
    head: tuple[int, int, int] | None
    apps: dict[str, dict[str, float]] = field(default_factory=dict)


class DashboardModel:
    def __init__(self, head: HeadSource | None, providers: list[Provider],
                 interval: float = 1.0) -> None:
        self.head = head
        self.providers = {p.name: p for p in providers}
        self.interval = interval
        self._samples: deque[_Sample] = deque(maxlen=HISTORY + 1)
        self.last_statistics: HeadStatistics | None = None

    async def sample(self) -> None:
        head: tuple[int, int, int] | None = None
        if self.head is not None:
            try:
                s = await self.head.statistics()
                self.last_statistics = s
                head = (s.tasks.submitted, s.tasks.done, s.tasks.failed)
            except Exception as e:  # the head is away: a gap in the chart
                log.info("dashboard: no statistics from the head (%s)", e)
        apps: dict[str, dict[str, float]] = {}
        for name, p in self.providers.items():
            try:
                apps[name] = dict(await asyncio.to_thread(p.counters))
            except Exception as e:
                log.info("dashboard: no counters from %s (%s)", name, e)
        self._samples.append(_Sample(time.time(), head, apps))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except TimeoutError:
                pass

    def rates(self) -> list[RatePoint]:
        out: list[RatePoint] = []
        prev: _Sample | None = None
        for s in self._samples:
            if prev is not None and prev.head is not None and s.head is not None:
                dt = max(1e-6, s.t - prev.t)
                out.append(RatePoint(s.t, *((b - a) / dt
                                            for a, b in zip(prev.head, s.head, strict=True))))
            prev = s
        return out

    def app_rates(self, name: str) -> dict[str, list[float]]:
        """Per-second rates of each counter a provider reports (a ``gauge:`` one as it is)."""
        out: dict[str, list[float]] = {}
        prev: _Sample | None = None
        for s in self._samples:
            if prev is not None and name in prev.apps and name in s.apps:
                dt = max(1e-6, s.t - prev.t)
                for k, v in s.apps[name].items():
                    if k.startswith("gauge:"):  # a value of its own, charted as it is
                        out.setdefault(k[6:], []).append(v)
                    else:
                        out.setdefault(k, []).append(
                            max(0.0, (v - prev.apps[name].get(k, v)) / dt))
            prev = s
        return out

    def app_names(self) -> list[dict[str, Any]]:
        return [{"name": p.name, "title": p.title} for p in self.providers.values()]
