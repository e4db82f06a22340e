"""What every part of the tour shares, and the runner that gives each part a time limit.

A part is a function ``run(tour) -> figures`` (short lines). It runs in its
own thread so that the main thread can stop it: when the part overruns its
time limit (or Ctrl-C comes), the main thread calls the part's abort hooks
(kill its server, stop its swarm, shut its cluster down), which makes the
part's blocking calls fail at once, so the part ends and cleans up after
itself instead of hanging the tour.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from netlet.cluster import Cluster, EmbeddedCluster, usable_cpus

__all__ = ["Part", "PartFailed", "PartResult", "Tour", "run_part"]

log = logging.getLogger("netlet.tour")

GRACE = 15.0
"""Seconds a part has to end after it was aborted before the tour stops waiting for it."""

_JOIN_TIMEOUT = 20.0
"""Seconds the embedded workers may take to join the head."""

Figures = list[str]
"""What a part measured, one short line each, for the summary."""


class PartFailed(Exception):
    """A part's own check failed: a wrong prime count, a failed audit, a broken promise."""


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    title: str
    run: Callable[[Tour], Figures]
    """Runs the part, prints as it goes, returns its figures; raises PartFailed."""


@dataclass(slots=True)
class PartResult:
    """How a part ended, and the figures it measured (for the summary)."""

    part: Part
    seconds: float
    figures: Figures = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class Tour:
    """The console, the options, a private temp directory and the shared embedded cluster."""

    def __init__(self, console: Console, tmp: Path, *, quick: bool) -> None:
        self.console = console
        self.tmp = tmp
        self.quick = quick
        self.workers = 2 if quick else max(2, min(usable_cpus(), 8))
        self.aborted = threading.Event()
        self._aborts: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._embedded: EmbeddedCluster | None = None
        self._board: Any = None
        self._cluster: Cluster | None = None
        self.join_seconds = 0.0

    # -- stopping a part from outside -------------------------------------------------

    def on_abort(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` if this part is aborted (at once, if it already was)."""
        with self._lock:
            if not self.aborted.is_set():
                self._aborts.append(fn)
                return
        _quietly(fn)

    def abort(self) -> None:
        """Stop the running part: its hooks run here, in the caller's thread."""
        with self._lock:
            self.aborted.set()
            hooks, self._aborts = self._aborts, []
        for fn in reversed(hooks):
            _quietly(fn)

    def check(self) -> None:
        """Raise ``PartFailed`` if the part was aborted (called between its steps)."""
        if self.aborted.is_set():
            raise PartFailed("stopped")

    def results(self, futures: list[concurrent.futures.Future[Any]],
                timeout: float) -> list[Any]:
        """The futures' results, waiting in short slices so that an abort is noticed."""
        deadline = time.monotonic() + timeout
        pending = set(futures)
        while pending:
            self.check()
            if time.monotonic() > deadline:
                raise PartFailed(f"{len(pending)} of {len(futures)} tasks still unfinished "
                                 f"after {timeout:g} s")
            _, pending = concurrent.futures.wait(pending, timeout=0.25)
        return [f.result() for f in futures]

    def next_part(self) -> None:
        """A new part starts: clear the abort flag and the last part's abort hooks."""
        with self._lock:
            self.aborted.clear()
            self._aborts = []
            if self._embedded is not None:  # a later part may use it: stop it if that part is
                self._aborts.append(self._drop_cluster)

    # -- the embedded cluster, shared by the cluster and primes parts ---------------

    def cluster(self) -> Cluster:
        """The embedded cluster (a head here, ``workers`` local processes), started once.

        What ``netlet.Executor()`` starts, held as its two halves so that an abort
        can close it without waiting for tasks that will never finish.
        """
        cluster = self._cluster
        if cluster is None:
            self.check()
            t0 = time.monotonic()
            embedded = EmbeddedCluster(self.workers)
            with self._lock:
                self._embedded = embedded
            self.on_abort(self._drop_cluster)
            cluster = Cluster(embedded.address, node=embedded.node)
            with self._lock:
                self._cluster = cluster
            self._board = _dashboard(embedded, self.console)
            self._wait_for_workers(cluster, t0)
            self.join_seconds = time.monotonic() - t0
        self.check()
        return cluster

    def _wait_for_workers(self, cluster: Cluster, t0: float) -> None:
        deadline = t0 + _JOIN_TIMEOUT
        while not self.aborted.is_set():
            if len(self.alive_workers(cluster)) >= self.workers:
                return
            if time.monotonic() > deadline:
                raise PartFailed(f"only {len(self.alive_workers(cluster))} of {self.workers} "
                                 f"workers joined in {_JOIN_TIMEOUT:g} s")
            time.sleep(0.02)
        self.check()

    def add_worker(self) -> int:
        """Start one more local worker; it joins the running cluster. Returns its pid."""
        embedded = self._embedded
        if embedded is None:
            raise PartFailed("no cluster to add a worker to")
        return embedded.add_worker().pid

    def kill_worker(self) -> int:
        """SIGKILL the first worker still running, as a crash would. Returns its pid."""
        embedded = self._embedded
        alive = [p for p in embedded.procs if p.poll() is None] if embedded else []
        if not alive:
            raise PartFailed("no worker left to kill")
        alive[0].kill()
        return alive[0].pid

    @staticmethod
    def alive_workers(cluster: Cluster) -> list[dict[str, Any]]:
        return [n for n in cluster.status()["nodes"] if n["role"] == "worker" and n["alive"]]

    def _drop_cluster(self) -> None:
        """Close the client (cancelling what has not started), stop the head and workers."""
        with self._lock:
            cluster, self._cluster = self._cluster, None
            embedded, self._embedded = self._embedded, None
            board, self._board = self._board, None
        if board is not None:
            board.stop()
        if cluster is not None:
            cluster.close()
        if embedded is not None:
            embedded.close()

    def close(self) -> None:
        """Stop the embedded cluster (its workers exit); the tour is over."""
        self._drop_cluster()


def _dashboard(embedded: EmbeddedCluster, console: Any) -> Any:
    """The embedded head's web dashboard on a free loopback port, when netlet[web] is
    installed: its URL is printed, so the tour can be watched while it runs."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        return None
    from netlet.web import Dashboard, LocalHead

    try:
        board = Dashboard(LocalHead(embedded.head), listen="127.0.0.1:0").start()
    except Exception as e:  # the tour goes on without it
        log.info("no dashboard for the tour: %s", e)
        return None
    console.print(f"watch it live: the dashboard is at [cyan]{board.url}[/]", soft_wrap=True)
    return board


def _quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # an abort hook failing must not stop the others
        log.debug("abort hook %r failed", fn, exc_info=True)


def run_part(tour: Tour, part: Part, limit: float) -> PartResult:
    """Run ``part`` in a thread; abort it after ``limit`` s. Ctrl-C aborts it and re-raises."""
    tour.next_part()
    box: list[Figures | BaseException] = []

    def target() -> None:
        try:
            box.append(part.run(tour))
        except BaseException as e:  # reported by the main thread, whatever it is
            box.append(e)

    thread = threading.Thread(target=target, name=f"tour-{part.name}", daemon=True)
    t0 = time.monotonic()
    thread.start()
    try:
        thread.join(limit)
    except KeyboardInterrupt:
        tour.abort()
        thread.join(GRACE)
        raise
    overran = thread.is_alive()
    if overran:
        tour.abort()
        thread.join(GRACE)
    seconds = time.monotonic() - t0
    if overran:
        still = "" if not thread.is_alive() else f" (and it did not stop within {GRACE:g} s)"
        return PartResult(part, seconds, error=f"it did not finish within its time limit of "
                                                f"{limit:g} s{still}")
    outcome = box[0]
    if isinstance(outcome, BaseException):
        if isinstance(outcome, PartFailed):
            return PartResult(part, seconds, error=str(outcome))
        log.debug("part %s failed", part.name, exc_info=outcome)
        return PartResult(part, seconds, error=f"{type(outcome).__name__}: {outcome}")
    return PartResult(part, seconds, figures=outcome)
