"""``Cluster.map``'s results: in order, each dropped once yielded (as ``Executor.map``)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

from netlet.clock import Clock, wait_future

__all__ = ["ordered_results"]


def ordered_results(clock: Clock, futures: list[concurrent.futures.Future[Any]],
                    timeout: float | None, chunked: bool) -> Iterator[Any]:
    """Yield results in order, holding none of them (nor a chunk's) while paused;
    what is left is cancelled when the caller stops (a timeout, an error, ``close``)."""
    deadline = None if timeout is None else clock.monotonic() + timeout
    try:
        futures.reverse()
        while futures:
            left = None if deadline is None else max(0.0, deadline - clock.monotonic())
            if not chunked:
                yield wait_future(clock, futures.pop(), left)
                continue
            chunk = wait_future(clock, futures.pop(), left)
            chunk.reverse()
            while chunk:
                yield chunk.pop()
    finally:
        for f in futures:
            f.cancel()
