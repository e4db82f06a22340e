"""Ways to find the primes in ``[start, end)``: the pure, CPU-bound core of the prime search.

The coordinator hands each worker one chunk and the name of a method; the worker
calls that method's function on the chunk.  Everything here is therefore pure
(no I/O, no shared state beyond per-process caches), takes and returns plain
ints and lists, and lives at module level so it can be shipped by import path
(``"netlet.apps.primes:count_naive"``) and pickled by reference.

Two methods:

``naive``
    The tutorial's trial division (``prime-node.py``), with its bugs fixed: it
    stops at the square root, tries 2 and then odd divisors only, and no longer
    calls 0, 1 and 4 prime.  It stays deliberately naive: it is the CPU-bound
    workload of benchmarks W4 and P1, where what is measured is how well the
    work spreads over processes, not how clever one process is.

``sieve``
    A segmented sieve of Eratosthenes on numpy arrays, the fast method
    (benchmark P2).  It keeps only odd numbers, one byte each, in segments of
    ``_SEGMENT`` entries (``2 * _SEGMENT`` numbers), so memory stays bounded
    whatever the range.  Each segment starts as a copy of a precomputed pattern
    with the multiples of 3, 5, 7, 11 and 13 already struck out (the most
    expensive primes to strike one by one); the remaining base primes up to
    ``sqrt(end)`` strike their multiples with one strided slice each.  Base
    primes are cached per process and the cache grows, so a worker that
    receives many chunks sieves them once.  numpy is optional: without it the
    sieve raises an ``ImportError`` that says what to install.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from math import isqrt, prod
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "KNOWN_PI",
    "MAX_SIEVE_END",
    "METHODS",
    "Method",
    "count_naive",
    "count_sieve",
    "primes_naive",
    "primes_sieve",
    "primes_sieve_array",
]

KNOWN_PI: Final[Mapping[int, int]] = MappingProxyType(
    {
        300_000: 25_997,
        10**6: 78_498,
        10**7: 664_579,
        10**8: 5_761_455,
        10**9: 50_847_534,
        10**10: 455_052_511,
    }
)
"""pi(n), the number of primes below n, for checking a search's answer."""

MAX_SIEVE_END: Final = 10**16
"""Largest ``end`` the sieve accepts: its base primes (up to 10**8) stay under 60 MB."""

_SEGMENT: Final = 2**22
"""Odd numbers per sieve segment: 4 MiB of bytes covering 2**23 numbers."""

_WHEEL: Final = (3, 5, 7, 11, 13)
"""Odd primes struck out by copying a precomputed pattern instead of by slicing."""

_WHEEL_PERIOD: Final = prod(_WHEEL)
"""The pattern repeats every 15015 odd numbers."""


def _bounds(start: int, end: int) -> tuple[int, int]:
    """Check that ``start`` and ``end`` are integers; no prime is below 2."""
    return max(operator.index(start), 2), operator.index(end)


# --- naive: trial division ---------------------------------------------------


def _is_odd_prime(n: int) -> bool:
    """Trial division of an odd ``n >= 3`` by the odd numbers up to its square root."""
    # An explicit loop, not all(...): a generator costs ~50% more per divisor.
    for d in range(3, isqrt(n) + 1, 2):  # noqa: SIM110
        if n % d == 0:
            return False
    return True


def _odd_candidates(start: int, end: int) -> range:
    """The odd numbers from ``max(start, 3)`` up to ``end``: every prime but 2."""
    return range(max(start, 3) | 1, end, 2)


def count_naive(start: int, end: int) -> int:
    """Count the primes in ``[start, end)`` by trial division up to the square root."""
    start, end = _bounds(start, end)
    two = 1 if start <= 2 < end else 0
    return two + sum(map(_is_odd_prime, _odd_candidates(start, end)))


def primes_naive(start: int, end: int) -> list[int]:
    """List the primes in ``[start, end)``, ascending, by trial division."""
    start, end = _bounds(start, end)
    two = [2] if start <= 2 < end else []
    return two + list(filter(_is_odd_prime, _odd_candidates(start, end)))


# --- sieve: segmented sieve of Eratosthenes on numpy arrays --------------------


def _numpy() -> Any:
    """Import numpy, or say how to get it."""
    try:
        import numpy
    except ImportError as exc:
        raise ImportError(
            "the 'sieve' prime method needs numpy: pip install 'netlet[numpy]'"
            " (or use the 'naive' method)",
            name="numpy",
        ) from exc
    return numpy


def _simple_sieve(limit: int) -> Any:
    """All odd primes up to ``limit`` as an int64 array, by a plain odd-only sieve."""
    np = _numpy()
    if limit < 3:
        return np.zeros(0, dtype=np.int64)
    is_prime = np.ones((limit - 1) // 2, dtype=bool)  # index i stands for 2*i + 3
    for i in range((isqrt(limit) - 1) // 2):
        if is_prime[i]:
            p = 2 * i + 3
            is_prime[(p * p - 3) // 2 :: p] = False
    return 2 * np.flatnonzero(is_prime).astype(np.int64) + 3


class _BasePrimes:
    """Per-process cache of the odd primes up to some limit, grown geometrically.

    Chunks arrive in any order with growing ``sqrt(end)``; doubling the limit
    on a miss keeps the total work of the simple sieve linear.  The cache is
    replaced in one assignment, so concurrent threads at worst sieve twice.
    """

    def __init__(self) -> None:
        self._cached: tuple[int, Any] = (0, None)

    def upto(self, limit: int) -> Any:
        cached_limit, primes = self._cached
        if limit > cached_limit:
            ceiling = max(limit, isqrt(MAX_SIEVE_END))
            cached_limit = min(max(limit, 2 * cached_limit, 2**16), ceiling)
            primes = _simple_sieve(cached_limit)
            self._cached = (cached_limit, primes)
        return primes[: int(primes.searchsorted(limit, side="right"))]


_base_primes: Final = _BasePrimes()


@lru_cache(maxsize=4)
def _wheel_tile(length: int) -> Any:
    """``length + _WHEEL_PERIOD`` flags over odd numbers, False where a wheel prime divides.

    Entry ``j`` stands for the odd number ``2*j + 1``; the pattern repeats every
    ``_WHEEL_PERIOD`` entries, so a segment whose first odd number is ``x``
    starts as a copy of the tile from ``((x - 1) // 2) % _WHEEL_PERIOD``.
    Read only: callers copy out of it.
    """
    np = _numpy()
    odd = 2 * np.arange(_WHEEL_PERIOD, dtype=np.int64) + 1
    pattern = np.ones(_WHEEL_PERIOD, dtype=bool)
    for p in _WHEEL:
        pattern[odd % p == 0] = False
    total = length + _WHEEL_PERIOD
    tile = np.tile(pattern, -(-total // _WHEEL_PERIOD))[:total]
    tile.flags.writeable = False
    return tile


def _sieve_segments(start: int, end: int, segment: int = _SEGMENT) -> Iterator[tuple[int, Any]]:
    """Sieve the odd numbers of ``[max(start, 3), end)``, one segment at a time.

    Yields ``(lo, flags)``: ``flags[i]`` is True iff ``lo + 2*i`` is prime.
    ``flags`` is a view of one reused buffer, valid until the next segment.
    The number 2 is the caller's business.
    """
    np = _numpy()
    start, end = _bounds(start, end)
    if end > MAX_SIEVE_END:
        raise ValueError(f"the sieve goes up to end={MAX_SIEVE_END}, got end={end}")
    lo = max(start, 3) | 1
    if lo >= end:
        return
    tile = _wheel_tile(segment)
    base = _base_primes.upto(isqrt(end - 1))
    base = base[base > _WHEEL[-1]]
    wheel_primes = [p for p in _WHEEL if lo <= p < end]
    buffer = np.empty(min(segment, (end - lo + 1) // 2), dtype=bool)
    while lo < end:
        hi = min(lo + 2 * segment, end)
        n = (hi - lo + 1) // 2
        flags = buffer[:n]
        offset = ((lo - 1) // 2) % _WHEEL_PERIOD
        flags[:] = tile[offset : offset + n]
        for p in wheel_primes:
            if lo <= p < hi:
                flags[(p - lo) // 2] = True
        primes = base[: int(base.searchsorted(isqrt(hi - 1), side="right"))]
        if len(primes):
            # First odd multiple of p in [lo, hi) that is at least p*p; its
            # successors are 2p apart in numbers, p apart in odd indices.
            first = np.maximum(primes * primes, (lo + primes - 1) // primes * primes)
            first = np.where(first & 1, first, first + primes)
            indices = (first - lo) // 2
            hits = indices < n  # in a short segment, most large primes miss it
            for p, i in zip(primes[hits].tolist(), indices[hits].tolist(), strict=True):
                flags[i::p] = False
        yield lo, flags
        lo += 2 * n


def count_sieve(start: int, end: int) -> int:
    """Count the primes in ``[start, end)`` with a segmented sieve; needs numpy."""
    np = _numpy()
    start, end = _bounds(start, end)
    count = 1 if start <= 2 < end else 0
    for _lo, flags in _sieve_segments(start, end):
        count += int(np.count_nonzero(flags))
    return count


def primes_sieve_array(start: int, end: int) -> Any:
    """The primes in ``[start, end)`` as an ascending int64 numpy array; needs numpy."""
    np = _numpy()
    start, end = _bounds(start, end)
    parts = [np.array([2] if start <= 2 < end else [], dtype=np.int64)]
    parts.extend(lo + 2 * np.flatnonzero(flags) for lo, flags in _sieve_segments(start, end))
    return np.concatenate(parts).astype(np.int64, copy=False)


def primes_sieve(start: int, end: int) -> list[int]:
    """List the primes in ``[start, end)``, ascending, with a segmented sieve; needs numpy."""
    primes: list[int] = primes_sieve_array(start, end).tolist()
    return primes


# --- the table the coordinator and the CLI choose from -------------------------


@dataclass(frozen=True, slots=True)
class Method:
    """A way to find primes: two functions over a half-open range ``[start, end)``."""

    count: Callable[[int, int], int]
    """Number of primes in the range."""
    primes: Callable[[int, int], list[int]]
    """The primes in the range, ascending."""


METHODS: Final[Mapping[str, Method]] = MappingProxyType(
    {
        "naive": Method(count=count_naive, primes=primes_naive),
        "sieve": Method(count=count_sieve, primes=primes_sieve),
    }
)
"""Prime-finding methods by the name the coordinator and ``netlet primes --method`` use."""
