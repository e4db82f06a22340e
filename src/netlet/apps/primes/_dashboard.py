"""The prime search's page on the web dashboard (``netlet primes --dashboard``).

A ``Provider`` (see ``netlet.web``) whose model is ``PrimeSearch.statistics()``.
Imported only when a dashboard is asked for (it needs ``netlet[web]``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from netlet.apps.primes._coordinator import PrimeSearch, PrimeStatistics
from netlet.web.metrics import counter, gauge

__all__ = ["PrimesProvider"]


class PrimesProvider:
    name = "primes"
    title = "Prime search"
    template = "primes"

    def __init__(self, search: PrimeSearch | Callable[[], PrimeSearch]) -> None:
        """``search``, or a function giving the one to show now (a demo runs several)."""
        self._search = search

    def _statistics(self) -> PrimeStatistics:
        search = self._search if isinstance(self._search, PrimeSearch) else self._search()
        return search.statistics()

    def snapshot(self) -> dict[str, Any]:
        s = self._statistics()
        p = s.progress
        progress = None
        if p is not None:
            progress = {
                "start": p.start, "end": p.end, "method": p.method, "chunk": p.chunk,
                "chunks_total": p.chunks_total, "chunks_done": p.chunks_done,
                "numbers_total": p.numbers_total, "numbers_done": p.numbers_done,
                "primes": p.primes, "elapsed": p.elapsed, "workers": p.workers,
                "fraction": p.fraction, "rate": p.rate,
                "nodes": [{"node": n.node, "chunks": n.chunks, "numbers": n.numbers,
                           "primes": n.primes, "seconds": n.seconds, "share": n.share}
                          for n in p.nodes]}
        return {"progress": progress, "in_flight": s.in_flight, "eta": s.eta}

    def counters(self) -> dict[str, float]:
        p = self._statistics().progress
        return {"numbers": float(p.numbers_done if p else 0)}

    def metrics(self) -> Iterable[Any]:
        s = self._statistics()
        p = s.progress
        yield gauge("netlet_primes_numbers_per_second", "Numbers checked per second by this "
                                                        "run.", p.rate if p else 0.0)
        yield counter("netlet_primes_numbers_checked", "Numbers checked.",
                      p.numbers_done if p else 0)
        yield counter("netlet_primes_found", "Primes found.", p.primes if p else 0)
        yield gauge("netlet_primes_chunks_in_flight", "Chunks submitted, not finished.",
                    s.in_flight)
        yield gauge("netlet_primes_progress_ratio", "Fraction of the range done.",
                    p.fraction if p else 0.0)

    def actions(self) -> Mapping[str, Callable[[], Any]]:
        return {}
