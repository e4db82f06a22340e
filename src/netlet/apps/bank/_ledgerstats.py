"""What the ledger measures for its statistics: commands by kind and outcome, latency,
commit batch sizes and commit (fsync) time. Bumped under the ledger's lock or by
the one writer thread; read as frozen tuples by ``Ledger.statistics()``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from netlet.cluster import Histogram, HistogramCounter

__all__ = ["BATCH_BOUNDS", "LATENCY_BOUNDS", "LedgerMeter"]

T = TypeVar("T")
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
BATCH_BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)


class LedgerMeter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[tuple[str, str], int] = {}
        self.latency = HistogramCounter(LATENCY_BOUNDS)
        self.batch = HistogramCounter(BATCH_BOUNDS)
        self.commit = HistogramCounter(LATENCY_BOUNDS)
        self.careful = 0  # batches that failed in memory and ran again job by job (writer)

    def command(self, kind: str, outcome: str, seconds: float) -> None:
        with self._lock:
            key = (kind, outcome)
            self._ops[key] = self._ops.get(key, 0) + 1
            self.latency.observe(seconds)

    @contextlib.contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        """Count one command of ``kind`` and its latency, by how it ended."""
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except BaseException as e:  # a refusal (InsufficientFunds, ...) or a failure
            outcome = type(e).__name__
            raise
        finally:
            self.command(kind, outcome, time.perf_counter() - t0)

    async def waited(self, kind: str, future: Awaitable[T]) -> T:
        """``timed`` around awaiting ``future``, without a context manager's generator (this
        runs once per command on the bank's event loop)."""
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            return await future
        except BaseException as e:
            outcome = type(e).__name__
            raise
        finally:
            self.command(kind, outcome, time.perf_counter() - t0)

    def committed(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch.observe(size)
            self.commit.observe(seconds)

    def snapshot(self) -> tuple[tuple[tuple[str, str, int], ...], Histogram, Histogram,
                                Histogram, int]:
        with self._lock:
            ops = tuple(sorted((k, o, n) for (k, o), n in self._ops.items()))
            return (ops, self.latency.snapshot(), self.batch.snapshot(), self.commit.snapshot(),
                    self.careful)
