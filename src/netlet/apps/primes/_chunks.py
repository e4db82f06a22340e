"""Cutting a range of numbers into chunks of work for the prime search.

The coordinator hands out chunks, not single numbers (the tutorial sent one
message per number): a chunk is a half-open ``(start, end)`` pair, and the
chunks of a range cover it exactly once, in order, with no gaps or overlaps,
so the per-chunk counts add up to the answer.  Two ways to cut: by chunk size
(``split_range``) or into a number of pieces (``split_equal``).  Both refuse a
cut into more than ``MAX_CHUNKS`` pieces, which would be a typo rather than a
plan, and would only fill the coordinator's memory.
"""

from __future__ import annotations

import operator
from typing import Final

__all__ = ["MAX_CHUNKS", "split_equal", "split_range"]

MAX_CHUNKS: Final = 10_000_000
"""Most chunks one range may be cut into."""


def _check_range(start: int, end: int) -> tuple[int, int]:
    start, end = operator.index(start), operator.index(end)
    if start < 0:
        raise ValueError(f"a range to search must start at 0 or above, got start={start}")
    if end < start:
        raise ValueError(f"a range must not end before it starts, got [{start}, {end})")
    return start, end


def split_range(start: int, end: int, chunk: int) -> list[tuple[int, int]]:
    """Cut ``[start, end)`` into chunks of ``chunk`` numbers; the last one may be shorter.

    >>> split_range(0, 10, 4)
    [(0, 4), (4, 8), (8, 10)]

    An empty range gives no chunks.  Raises ``ValueError`` if ``start < 0``,
    ``end < start``, ``chunk < 1`` or the cut would make over ``MAX_CHUNKS``.
    """
    start, end = _check_range(start, end)
    chunk = operator.index(chunk)
    if chunk < 1:
        raise ValueError(f"a chunk must hold at least one number, got chunk={chunk}")
    pieces = -(-(end - start) // chunk)
    if pieces > MAX_CHUNKS:
        raise ValueError(
            f"[{start}, {end}) in chunks of {chunk} makes {pieces} chunks,"
            f" over the limit of {MAX_CHUNKS}; use larger chunks"
        )
    return [(lo, min(lo + chunk, end)) for lo in range(start, end, chunk)]


def split_equal(start: int, end: int, n: int) -> list[tuple[int, int]]:
    """Cut ``[start, end)`` into ``n`` chunks whose sizes differ by at most one.

    The longer chunks come first.  A range shorter than ``n`` gives one chunk
    per number (never an empty chunk), and an empty range gives none.

    >>> split_equal(0, 10, 3)
    [(0, 4), (4, 7), (7, 10)]

    Raises ``ValueError`` if ``start < 0``, ``end < start``, ``n < 1`` or
    ``n > MAX_CHUNKS``.
    """
    start, end = _check_range(start, end)
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"a range must be cut into at least one chunk, got n={n}")
    if n > MAX_CHUNKS:
        raise ValueError(f"cannot cut a range into {n} chunks, over the limit of {MAX_CHUNKS}")
    n = min(n, end - start)
    size, longer = divmod(end - start, n) if n else (0, 0)
    chunks = []
    lo = start
    for i in range(n):
        hi = lo + size + (1 if i < longer else 0)
        chunks.append((lo, hi))
        lo = hi
    return chunks
