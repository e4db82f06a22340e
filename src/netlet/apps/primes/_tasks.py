"""What a worker runs for the prime search: one chunk, shipped by import path.

The coordinator submits ``"netlet.apps.primes._tasks:search_chunk"`` with
plain arguments (a method name and a half-open range), so any worker that can
import netlet runs it; nothing is pickled. The answer says who did the work
(host and pid), which is how the coordinator shows each node's share, and,
when the caller wants the primes themselves (``--out``), carries them as the
very bytes the output file gets: one prime per line, in ASCII. Formatting 50
million numbers takes longer than sieving them, so the workers do it, in
parallel, and the coordinator only appends bytes in order.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Final

from netlet.apps.primes._methods import METHODS, primes_naive, primes_sieve_array

__all__ = ["TASK", "WARM_UP", "search_chunk", "warm_up"]

TASK: Final = "netlet.apps.primes._tasks:search_chunk"
"""The import path the coordinator submits."""

WARM_UP: Final = "netlet.apps.primes._tasks:warm_up"
"""The import path of ``warm_up``."""

_HOST: Final = socket.gethostname()


def _lines(primes: list[int]) -> bytes:
    return ("\n".join(map(str, primes)) + "\n").encode() if primes else b""


def _primes_text(method: str, start: int, end: int) -> tuple[int, bytes]:
    if method == "sieve":
        primes: list[int] = primes_sieve_array(start, end).tolist()
    else:
        primes = primes_naive(start, end)
    return len(primes), _lines(primes)


def search_chunk(method: str, start: int, end: int, want_primes: bool = False) -> dict[str, Any]:
    """Count (and with ``want_primes`` list) the primes in ``[start, end)`` with ``method``.

    Returns ``{"start", "end", "count", "primes", "host", "pid", "seconds"}``:
    ``primes`` is the primes as ASCII lines (``b"2\\n3\\n"``) or None,
    ``seconds`` the time the work took on this worker. Raises ``ValueError``
    for an unknown method and ``ImportError`` for the sieve without numpy.
    """
    found = METHODS.get(method)
    if found is None:
        raise ValueError(f"unknown prime method {method!r}; choose from {sorted(METHODS)}")
    t0 = time.perf_counter()
    primes: bytes | None = None
    if want_primes:
        count, primes = _primes_text(method, start, end)
    else:
        count = found.count(start, end)
    return {"start": start, "end": end, "count": count, "primes": primes, "host": _HOST,
            "pid": os.getpid(), "seconds": time.perf_counter() - t0}


def warm_up(method: str) -> str:
    """Load what ``method`` needs on this worker, so its first chunk does not; returns "host:pid".

    For the sieve that is numpy (~50 ms to import) and the sieve's tables; for
    trial division, this module. Raises like ``search_chunk``.
    """
    found = METHODS.get(method)
    if found is None:
        raise ValueError(f"unknown prime method {method!r}; choose from {sorted(METHODS)}")
    found.count(0, 100)
    return f"{_HOST}:{os.getpid()}"
