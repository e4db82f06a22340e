"""A histogram counted as observations come: the head's task timings, the bank's latencies.

It lives on a hot path (once per task or request) and in every head from its
start, while the frozen snapshot records of ``_stats.py`` (ten dataclasses,
~5 ms to import) are needed only when someone asks for statistics; so the
counter is its own module and imports ``Histogram`` when it first makes one.
"""

from __future__ import annotations

import bisect
import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netlet.cluster._stats import Histogram

__all__ = ["HistogramCounter"]


class HistogramCounter:
    """Observations counted into buckets as they come (the owner's lock guards it);
    ``snapshot`` gives the frozen ``Histogram``."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> Histogram:
        from netlet.cluster._stats import Histogram

        return Histogram(self.bounds, tuple(itertools.accumulate(self.counts)), self.total)
