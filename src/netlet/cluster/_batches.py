"""Splitting a list of items into messages a peer accepts (submits, results, hand-outs).

Not scheduling: the client, the worker and the head all cut what they send with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["batches"]


def batches(items: list[Any], size: Callable[[Any], int], max_bytes: int,
            max_big: int, big: int, max_count: int | None = None) -> list[list[Any]]:
    """Split ``items`` into messages a peer accepts: each under ``max_bytes`` in all
    and with at most ``max_big`` items of ``big`` bytes or more (each of those
    travels as an out-of-band buffer, of which a frame carries a bounded number),
    and at most ``max_count`` items (a list in a message holds ``max_array``).
    An item alone always makes a message (the frame limit then judges it).
    """
    out: list[list[Any]] = []
    cur: list[Any] = []
    total = nbig = 0
    for item in items:
        n = size(item)
        is_big = n >= big
        if cur and (total + n > max_bytes or nbig + is_big > max_big
                    or (max_count is not None and len(cur) >= max_count)):
            out.append(cur)
            cur, total, nbig = [], 0, 0
        cur.append(item)
        total += n
        nbig += is_big
    if cur:
        out.append(cur)
    return out
