"""The tour's first three parts: calls to another process, a cluster, a prime search.

Each is a thin driver over the real code (``netlet.cli._demo``, the embedded
cluster behind ``netlet.Executor()``, the coordinator behind ``netlet
primes``), so what the tour shows is what the commands do.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import socket
from collections.abc import Callable

from rich.live import Live
from rich.table import Table

from netlet.apps.primes import PrimeSearch, Progress, SearchConfig, Summary
from netlet.apps.primes._cli import _LiveView, _nodes_table, _si
from netlet.apps.tour._core import Figures, PartFailed, Tour
from netlet.cli._demo import run_calls

__all__ = ["calls", "cluster", "primes", "where"]

PRIMES_FULL = (("naive", 10**6), ("sieve", 10**10))
"""The searches of the full tour: the seed's trial division, then the sieve (a few seconds)."""
PRIMES_QUICK = (("naive", 300_000), ("sieve", 10**8))

_METHOD_NOTE = {"naive": "trial division, the Stackless tutorial's method",
                "sieve": "a segmented sieve of Eratosthenes on numpy arrays"}


def calls(tour: Tour) -> Figures:
    """Part 1: an object in another process, called in every style."""
    f = run_calls(tour.console, quick=tour.quick, on_abort=tour.on_abort)
    if f.surprises:
        raise PartFailed(f"{len(f.surprises)} call(s) did not behave as promised; first: "
                         f"{f.surprises[0]}")
    return [f"{f.as_expected}/{f.rows} call styles and failures as promised",
            f"blocking call p50 {f.p50_us:.0f} µs",
            f"1,000 pipelined futures in {f.futures_ms:.0f} ms"]


def where(_: object) -> str:
    """Which worker ran this task (``host:pid``): what the cluster part maps over."""
    return f"{socket.gethostname()}:{os.getpid()}"


def cluster(tour: Tour) -> Figures:
    """Part 2: an embedded head with local worker processes, and tasks spread over them."""
    console = tour.console
    console.print(f"the embedded cluster that netlet.Executor() starts: a head in this process "
                  f"and {tour.workers} worker processes, joining it over a unix socket with a "
                  "fresh key ...")
    cl = tour.cluster()
    joined = len(tour.alive_workers(cl))
    console.print(f"head at [cyan]{cl.address}[/]: {joined} workers joined in "
                  f"{tour.join_seconds:.2f} s")
    tasks = 20 if tour.quick else 100
    ran = collections.Counter(tour.results([cl.submit(where, i) for i in range(tasks)], 30))
    tour.check()
    table = Table(title="the cluster's members (cluster.status())", title_justify="left")
    for col in ("node", "role", "address", "tasks done"):
        table.add_column(col, justify="right" if col == "tasks done" else "left")
    for n in cl.status()["nodes"]:
        if n["alive"]:
            table.add_row(n["node"][:8], n["role"], n["address"] or "-",
                          str(n["done"]) if n["role"] == "worker" else "")
    console.print(table)
    spread = ", ".join(f"{count} on {node}" for node, count in sorted(ran.items()))
    console.print(f"{tasks} x cluster.submit(where, i) ran on: {spread}")
    if sum(ran.values()) != tasks:
        raise PartFailed(f"{sum(ran.values())} of {tasks} tasks came back")
    return [f"{joined} workers joined in {tour.join_seconds:.2f} s",
            f"{tasks} tasks over {len(ran)} worker(s)"]


def primes(tour: Tour) -> Figures:
    """Part 3: the prime search on the same cluster, with its live view, checked against pi(N)."""
    console = tour.console
    cl = tour.cluster()
    figures: Figures = []
    for method, end in PRIMES_QUICK if tour.quick else PRIMES_FULL:
        if method == "sieve" and not _have_numpy():
            console.print("[yellow]the sieve is skipped: numpy is not installed[/] "
                          "(pip install 'netlet[numpy]')")
            figures.append("sieve skipped (no numpy)")
            continue
        churn = _Churn(tour) if method == "sieve" and not tour.quick else None
        console.print(f"[bold]{method}[/] ({_METHOD_NOTE[method]}) over [0, {_pow10(end)}) "
                      f"on {tour.workers} workers"
                      + (": one more joins mid-search, and one is SIGKILLed" if churn else ":"))
        config = SearchConfig(0, end, method, state=tour.tmp / f"primes-{method}.db")
        # With churn the coordinator asks the head how many workers are alive, once a
        # second, as it does with --head, so that the newcomer gets its share.
        search = PrimeSearch(cl, config, workers=None if churn else tour.workers)
        search.warm_up(timeout=5.0)
        s = _search(search, tour, churn)
        tour.check()
        check = ("[green]= the known pi(N) ✓[/]" if s.matches_known
                 else f"[bold red]!= the known pi(N) = {s.known_pi}[/]")
        console.print(f"  [bold]{s.count:,}[/] primes below {end:,} {check}; {s.elapsed:.2f} s, "
                      f"{_si(s.rate)} numbers/s, {s.chunks_total} chunks of {s.chunk:,}")
        console.print(_nodes_table(s))
        if not s.matches_known:
            raise PartFailed(f"{s.count:,} primes below {end:,} by {method}, but "
                             f"pi({_pow10(end)}) = {s.known_pi}")
        figures.append(f"pi({_pow10(end)}) = {s.count:,} by {method} in {s.elapsed:.2f} s "
                       f"({_si(s.rate)} numbers/s{churn.told() if churn else ''})")
    return figures


class _Churn:
    """Mid-search, a worker joins (at 20 %) and another is SIGKILLed (at 50 %).

    The head gives the dead worker's chunks to the others and the newcomer
    pulls its share, so the count must still be exact: the design's promise,
    shown rather than told.
    """

    def __init__(self, tour: Tour) -> None:
        self.tour = tour
        self.joined = self.killed = 0

    def __call__(self, p: Progress) -> None:
        if not self.joined and p.fraction >= 0.2:
            self.joined = self.tour.add_worker()
            self.tour.console.print(f"  + worker process {self.joined} starts and joins "
                                    f"at {p.fraction:.0%}")
        elif self.joined and not self.killed and p.fraction >= 0.5:
            self.killed = self.tour.kill_worker()
            self.tour.console.print(f"  x worker process {self.killed} SIGKILLed at "
                                    f"{p.fraction:.0%}: its chunks go to the others")

    def told(self) -> str:
        """What happened, for the summary: ``"; +1 worker, 1 killed mid-search"``."""
        done = [what for what, pid in (("+1 worker", self.joined), ("1 killed", self.killed))
                if pid]
        return f"; {', '.join(done)} mid-search" if done else ""


def _search(search: PrimeSearch, tour: Tour,
            churn: Callable[[Progress], None] | None) -> Summary:
    """Run with the live view of ``netlet primes`` on a terminal, a line a second elsewhere.

    The coordinator reports progress every ``interval`` even when no chunk
    finishes, so checking for an abort there stops a search whose workers are gone.
    """
    console = tour.console
    interval = 0.1 if churn is not None else 0.25  # churn needs reports between 20 and 50 %
    if console.is_terminal:
        view = _LiveView(search, console)
        with Live(view.render(), console=console, refresh_per_second=8, transient=True) as live:
            def show(p: Progress) -> None:
                tour.check()
                if churn is not None:
                    churn(p)
                view.update(p)
                live.update(view.render())

            return search.run(show, interval)
    last = [0.0]

    def line(p: Progress) -> None:
        tour.check()
        if churn is not None:
            churn(p)
        if p.elapsed - last[0] >= 1.0:
            last[0] = p.elapsed
            console.print(f"  {p.fraction:4.0%} {p.primes:,} primes, {_si(p.rate)} numbers/s, "
                          f"{p.workers} workers", highlight=False)

    return search.run(line, interval)


def _have_numpy() -> bool:
    """Whether the local workers can run the sieve; found, not imported (that costs ~40 ms)."""
    try:
        return importlib.util.find_spec("numpy") is not None
    except (ImportError, ValueError):
        return False


def _pow10(n: int) -> str:
    text = str(n)
    return f"10^{len(text) - 1}" if text.strip("0") == "1" else f"{n:,}"
