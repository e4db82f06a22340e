"""Helpers a variant uses inside its own subprocess: timing loops, percentiles, errors.

A variant is a function ``run(params) -> Figures``; it raises ``Unavailable`` when the
peer cannot run here (not installed, refuses the payload, ...), which the report shows
as "n/a" with the message. A figure whose value is a string is "n/a" for that figure
alone, the string saying why (W5 uses this when a peer carries bytes but not arrays).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "Figures",
    "Params",
    "Unavailable",
    "latency_figures",
    "random_payload",
    "rate_figures",
    "require",
    "time_async_calls",
    "time_sync_calls",
    "transfer_mbps",
]

Params = dict[str, Any]
Figures = dict[str, float | str]


class Unavailable(Exception):
    """The peer cannot run here; the message says why and is shown in the report."""


def require(module: str, install: str) -> Any:
    """Import ``module`` or raise ``Unavailable`` naming what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"not installed ({exc}); pip install {install}") from None


def latency_figures(latencies_ns: list[int], total_ns: int) -> Figures:
    """p50 and p99 in µs (nearest rank) and calls per second over the timed loop."""
    ordered = sorted(latencies_ns)
    n = len(ordered)
    return {
        "p50_us": ordered[min(n - 1, int(0.50 * n))] / 1e3,
        "p99_us": ordered[min(n - 1, int(0.99 * n))] / 1e3,
        "calls_per_s": n / (total_ns / 1e9),
    }


def rate_figures(calls: int, total_ns: int) -> Figures:
    return {"calls_per_s": calls / (total_ns / 1e9)}


def time_sync_calls(call: Callable[[], object], warmup: int, calls: int) -> Figures:
    """Latency figures of ``calls`` sequential calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    gc.collect()
    clock = time.perf_counter_ns
    latencies = [0] * calls
    start = clock()
    for i in range(calls):
        t0 = clock()
        call()
        latencies[i] = clock() - t0
    return latency_figures(latencies, clock() - start)


async def time_async_calls(
    call: Callable[[], Awaitable[object]], warmup: int, calls: int
) -> Figures:
    """``time_sync_calls`` for a coroutine function, awaited one at a time."""
    for _ in range(warmup):
        await call()
    gc.collect()
    clock = time.perf_counter_ns
    latencies = [0] * calls
    start = clock()
    for i in range(calls):
        t0 = clock()
        await call()
        latencies[i] = clock() - t0
    return latency_figures(latencies, clock() - start)


def transfer_mbps(send: Callable[[Any], object], data: Any, nbytes: int) -> float:
    """MB/s (10^6 bytes per second) of one timed ``send(data)``.

    ``send`` returns what the remote side reported as the length; it must be the
    byte count or the element count, or the transfer did not arrive whole.
    """
    expected = {nbytes, len(data)}
    t0 = time.perf_counter_ns()
    result = send(data)
    elapsed = time.perf_counter_ns() - t0
    if result not in expected:
        raise RuntimeError(f"remote length {result!r}, expected one of {sorted(expected)}")
    return nbytes / (elapsed / 1e9) / 1e6


def random_payload(size: int) -> bytes:
    return os.urandom(size)
