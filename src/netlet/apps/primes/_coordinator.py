"""The prime search's coordinator: chunks out to a cluster, results in, progress on disk.

How a search runs
=================

``[start, end)`` is cut into ``n`` chunks of ``chunk`` numbers (chunk ``i`` is
``[start + i*chunk, start + (i+1)*chunk)``, the last one shorter), computed
on the fly, so a range of millions of chunks never becomes millions of objects.
They are handed out last first (ascending with ``out``, which writes in order):
the chunks of larger numbers cost more, and the cheap ones, coming last, even
out when the workers finish.
The coordinator submits ``search_chunk`` tasks through a ``Cluster`` and keeps
at most ``per_worker`` chunks in flight per worker (the embedded cluster's
count, or the head's live workers, asked once a second, so a worker that joins
mid-run widens the window and gets chunks). Workers pull; when one dies, the
head gives its chunks to another (``Cluster.max_retries`` times); a chunk
whose workers kept dying comes back as ``WorkerLost`` and is submitted again
from here. Any other failure of a chunk stops the search and is raised with a
note naming the chunk.

With ``out``, primes are written to the file in ascending order, one per line.
Chunks finish out of order, so a finished chunk waits in memory until the ones
before it are written; the window bounds how many may wait, and a chunk is
recorded only once its primes are on disk, together with the file's length.
Resuming cuts the file back to that length and goes on from there.

What a search is (``SearchConfig``) is in ``_config.py``; how finished chunks
are kept on disk, and why a run can resume, in ``_state.py``.
"""

from __future__ import annotations

import concurrent.futures
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import IO, Any, Final

from netlet.apps.primes._config import (
    MAX_CHUNK,
    MAX_NAIVE_END,
    MAX_OUT_CHUNK,
    SearchConfig,
    default_chunk,
)
from netlet.apps.primes._methods import KNOWN_PI
from netlet.apps.primes._state import ChunkLog, check_state
from netlet.apps.primes._tasks import TASK, WARM_UP
from netlet.clock import REAL_CLOCK, Clock
from netlet.cluster import Cluster
from netlet.errors import ConfigError, NetletError, WorkerLost

__all__ = [
    "MAX_CHUNK",
    "MAX_NAIVE_END",
    "MAX_OUT_CHUNK",
    "NodeShare",
    "PrimeSearch",
    "PrimeStatistics",
    "Progress",
    "SearchConfig",
    "Summary",
    "check_state",
    "default_chunk",
]

_WARM_UPS_PER_WORKER: Final = 4
"""Warm-up tasks per worker in one round: a head hands each worker waiting for work a
few tasks at once, so a round of several per worker reaches every waiting worker."""

_RESUBMITS: Final = 3
"""Times a chunk lost with its workers (``WorkerLost``) is submitted again from here."""


@dataclass(frozen=True, slots=True)
class NodeShare:
    """What one worker process did: ``node`` is ``"host:pid"``."""

    node: str
    host: str
    pid: int
    chunks: int
    numbers: int
    primes: int
    seconds: float
    """Time its chunks took on the worker."""
    share: float
    """Its fraction of the numbers checked so far (resumed chunks included)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a running search, handed to the ``on_progress`` callback."""

    start: int
    end: int
    method: str
    chunk: int
    chunks_total: int
    chunks_done: int
    chunks_resumed: int
    """Chunks finished by an earlier run (``resume``), not computed by this one."""
    numbers_total: int
    numbers_done: int
    numbers_resumed: int
    primes: int
    """Primes found so far (in finished chunks)."""
    primes_resumed: int
    elapsed: float
    """Seconds since this run started."""
    workers: int
    """Workers the cluster had at the last look."""
    nodes: tuple[NodeShare, ...]

    @property
    def fraction(self) -> float:
        return self.numbers_done / self.numbers_total if self.numbers_total else 1.0

    @property
    def rate(self) -> float:
        """Numbers checked per second by this run."""
        return (self.numbers_done - self.numbers_resumed) / self.elapsed if self.elapsed else 0.0

    @property
    def primes_rate(self) -> float:
        """Primes found per second by this run."""
        return (self.primes - self.primes_resumed) / self.elapsed if self.elapsed else 0.0


@dataclass(frozen=True, slots=True)
class PrimeStatistics:
    """``PrimeSearch.statistics()``: the latest progress (None before the first chunk
    is out), chunks in flight, and the estimated seconds left (None: unknown)."""

    progress: Progress | None
    in_flight: int
    eta: float | None


@dataclass(frozen=True, slots=True)
class Summary(Progress):
    """The finished search: the final progress, the answer's check and where things are."""

    known_pi: int | None
    """pi(end) from ``KNOWN_PI`` when the search covers [0, end) and it is known."""
    out: str | None
    state: str | None
    """The state file, if it was kept."""

    @property
    def count(self) -> int:
        return self.primes

    @property
    def matches_known(self) -> bool | None:
        return None if self.known_pi is None else self.primes == self.known_pi

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-able values (what ``netlet primes --json`` prints)."""
        return {
            "start": self.start, "end": self.end, "method": self.method, "count": self.primes,
            "known_pi": self.known_pi, "matches_known": self.matches_known,
            "seconds": round(self.elapsed, 6), "numbers": self.numbers_total,
            "numbers_per_second": round(self.rate, 1),
            "primes_per_second": round(self.primes_rate, 1),
            "chunk": self.chunk, "chunks": self.chunks_total,
            "computed_chunks": self.chunks_done - self.chunks_resumed,
            "resumed_chunks": self.chunks_resumed, "workers": self.workers,
            "out": self.out, "state": self.state,
            "nodes": [{"node": n.node, "host": n.host, "pid": n.pid, "chunks": n.chunks,
                       "numbers": n.numbers, "primes": n.primes,
                       "seconds": round(n.seconds, 6), "share": round(n.share, 6)}
                      for n in self.nodes],
        }


def _pending(n: int, done: array[int]) -> Iterator[int]:
    """Chunk indices in ``[0, n)`` not in ``done`` (ascending), last first, without a set.

    Last first: the chunks of larger numbers cost more (trial division's divisors
    grow with the square root, the sieve's base primes too), and a search ends
    when its slowest last chunk does; handing out the dear chunks first leaves
    the cheap ones to even out the workers' finishing times.
    """
    j = len(done) - 1
    for idx in range(n - 1, -1, -1):
        while j >= 0 and done[j] > idx:
            j -= 1
        if j >= 0 and done[j] == idx:
            continue
        yield idx


@dataclass(slots=True)
class _Tally:
    chunks: int = 0
    numbers: int = 0
    primes: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class _Run:
    """The coordinator's working state for one run."""

    done: int = 0
    numbers: int = 0
    primes: int = 0
    resumed: int = 0
    numbers_resumed: int = 0
    primes_resumed: int = 0
    nodes: dict[tuple[str, int], _Tally] = field(default_factory=dict)

    def add(self, host: str, pid: int, chunks: int, numbers: int, primes: int,
            seconds: float) -> None:
        tally = self.nodes.setdefault((host, pid), _Tally())
        tally.chunks += chunks
        tally.numbers += numbers
        tally.primes += primes
        tally.seconds += seconds
        self.done += chunks
        self.numbers += numbers
        self.primes += primes


# --- the coordinator -------------------------------------------------------------------


class PrimeSearch:
    """Runs one search (``SearchConfig``) on a cluster; ``run()`` returns its ``Summary``.

    ``workers`` is how many workers the cluster has (an embedded cluster's
    count); None asks the head, at the start and once a second while running.
    ``clock`` (the cluster node's) times that and the state file's commits.
    """

    def __init__(self, cluster: Cluster, config: SearchConfig, *,
                 workers: int | None = None, clock: Clock = REAL_CLOCK) -> None:
        self.cluster = cluster
        self.config = config
        self._fixed_workers = workers
        self._workers = workers if workers is not None else self._alive_workers(1)
        self._clock = clock  # state commits, worker-count polls (the cluster node's)
        self._polled = self._clock.monotonic()
        self._latest: PrimeStatistics = PrimeStatistics(None, 0, None)
        self._warmed: set[str] = set()
        self.state_path = config.state_path()
        self.chunk = config.chunk or default_chunk(config.method, config.start, config.end,
                                                   self._workers, out=config.out is not None)

    # -- the window -------------------------------------------------------------------

    def _alive_workers(self, fallback: int) -> int:
        try:
            nodes = self.cluster.status()["nodes"]
        except (NetletError, OSError):
            return fallback
        return sum(1 for n in nodes if n["role"] == "worker" and n["alive"]) or fallback

    def _window(self) -> int:
        if self._fixed_workers is None and self._clock.monotonic() - self._polled >= 1.0:
            self._workers = self._alive_workers(self._workers)
            self._polled = self._clock.monotonic()
        return self.config.per_worker * max(1, self._workers)

    # -- warming up -------------------------------------------------------------------

    def warm_up(self, timeout: float = 10.0, rounds: int = 3) -> int:
        """Have the workers load the method (numpy for the sieve) before the search's clock.

        A fresh worker otherwise loads it in its first chunk: for the sieve, ~50 ms
        of importing numpy and building its tables, inside the search. Best effort:
        rounds of small tasks until every worker has run one (as far as this search
        knows, across calls), or ``rounds`` rounds, or ``timeout``; a failure (a
        worker without numpy) is left for the search to report with its chunk.
        Returns how many distinct workers have run one.
        """
        deadline = time.monotonic() + timeout
        for _ in range(rounds):
            wanted = max(1, self._workers)
            if len(self._warmed) >= wanted:
                break
            futures = [self.cluster.submit(WARM_UP, self.config.method)
                       for _ in range(_WARM_UPS_PER_WORKER * wanted)]
            done, late = concurrent.futures.wait(futures,
                                                 timeout=max(0.0, deadline - time.monotonic()))
            for fut in late:
                fut.cancel()
            for fut in done:
                if not fut.cancelled() and fut.exception() is None:
                    self._warmed.add(str(fut.result()))
            if late or time.monotonic() >= deadline:
                break
        return len(self._warmed)

    # -- running ----------------------------------------------------------------------

    def _bounds(self, idx: int) -> tuple[int, int]:
        lo = self.config.start + idx * self.chunk
        return lo, min(lo + self.chunk, self.config.end)

    def run(self, on_progress: Callable[[Progress], None] | None = None,
            interval: float = 0.25) -> Summary:
        """Search; call ``on_progress`` at most every ``interval`` s and once at the end.

        Raises ``ConfigError`` for a state file that does not fit, and whatever a
        chunk raised on its worker (with a note naming the chunk). On any
        exception, ``KeyboardInterrupt`` included, the state file stays for ``resume``.
        """
        cfg = self.config
        t0 = time.monotonic()
        params = {"start": str(cfg.start), "end": str(cfg.end), "method": cfg.method,
                  "out": str(cfg.out.resolve()) if cfg.out is not None else "",
                  "chunk": str(self.chunk)}
        log = ChunkLog(self.state_path, params, cfg.resume, check_chunk=cfg.chunk is not None,
                        commit_every=interval, clock=self._clock)
        self.chunk = int(log.meta["chunk"])  # a resumed run keeps its chunk size
        try:
            summary = self._run(log, t0, on_progress, interval)
            if cfg.keep_state:
                log.finish()
        except BaseException:
            try:
                log.flush()  # every finished chunk stays for --resume
            finally:
                log.close()
            raise
        log.close(remove=not cfg.keep_state)
        return summary

    def _run(self, log: ChunkLog, t0: float, on_progress: Callable[[Progress], None] | None,
             interval: float) -> Summary:
        cfg = self.config
        n = -(-(cfg.end - cfg.start) // self.chunk)
        state = _Run()
        for host, pid, chunks, numbers, primes, seconds in log.shares():
            state.add(host, pid, chunks, numbers, primes, seconds)
        state.resumed, state.numbers_resumed = state.done, state.numbers
        state.primes_resumed = state.primes
        done = log.done()
        out = self._open_out(log, done)
        next_write = len(done)  # with out, the finished chunks are always a prefix
        todo = _pending(n, done) if out is None else iter(range(next_write, n))
        del done
        in_flight: dict[concurrent.futures.Future[Any], int] = {}
        waiting: dict[int, dict[str, Any]] = {}
        lost: dict[int, int] = {}
        upcoming = next(todo, None)
        last_report = 0.0

        def report(final: bool = False) -> None:
            nonlocal last_report
            now = time.monotonic()
            if final or now - last_report >= min(interval, 0.5):
                last_report = now
                snap = self._snapshot(state, n, now - t0)
                left = snap.numbers_total - snap.numbers_done
                eta = left / snap.rate if snap.rate > 0 else (0.0 if not left else None)
                self._latest = PrimeStatistics(snap, 0 if final else len(in_flight), eta)
                if on_progress is not None:
                    on_progress(snap)

        try:
            while True:
                window = self._window()
                while (upcoming is not None and len(in_flight) < window
                       and (out is None or upcoming < next_write + window)):
                    in_flight[self._submit(upcoming)] = upcoming
                    upcoming = next(todo, None)
                if not in_flight:
                    break
                finished, _ = concurrent.futures.wait(
                    in_flight, timeout=interval, return_when=concurrent.futures.FIRST_COMPLETED)
                rows = []
                for fut in finished:
                    idx = in_flight.pop(fut)
                    result = self._result(fut, idx, lost)
                    if result is None:
                        in_flight[self._submit(idx)] = idx
                    elif out is None:
                        rows.append(self._row(idx, result))
                    else:
                        waiting[idx] = result
                offset = None
                if out is not None:
                    while next_write in waiting:
                        result = waiting.pop(next_write)
                        out.write(result["primes"])
                        rows.append(self._row(next_write, result))
                        next_write += 1
                    out.flush()
                    offset = out.tell()
                if rows:
                    log.record(rows, offset)
                    for _, lo, hi, count, host, pid, seconds in rows:
                        state.add(host, pid, 1, hi - lo, count, seconds)
                report()
        finally:
            for fut in in_flight:
                fut.cancel()
            if out is not None:
                out.close()
        report(final=True)
        final = self._snapshot(state, n, time.monotonic() - t0)
        known = KNOWN_PI.get(cfg.end) if cfg.start <= 2 else None
        return Summary(**{f.name: getattr(final, f.name) for f in fields(Progress)},
                       known_pi=known, out=str(cfg.out) if cfg.out is not None else None,
                       state=str(self.state_path) if cfg.keep_state else None)

    def statistics(self) -> PrimeStatistics:
        """The latest snapshot (refreshed twice a second while ``run`` runs); any thread."""
        return self._latest

    def _submit(self, idx: int) -> concurrent.futures.Future[Any]:
        lo, hi = self._bounds(idx)
        return self.cluster.submit(TASK, self.config.method, lo, hi, self.config.out is not None)

    def _result(self, fut: concurrent.futures.Future[Any], idx: int,
                lost: dict[int, int]) -> dict[str, Any] | None:
        """The chunk's result, or None to submit it again (its workers kept dying)."""
        try:
            result: dict[str, Any] = fut.result()
        except WorkerLost as e:
            lost[idx] = lost.get(idx, 0) + 1
            if lost[idx] > _RESUBMITS:
                lo, hi = self._bounds(idx)
                e.add_note(f"while searching chunk [{lo}, {hi}); submitted {lost[idx]} times")
                raise
            return None
        except Exception as e:
            lo, hi = self._bounds(idx)
            e.add_note(f"while searching chunk [{lo}, {hi}) with the {self.config.method} method")
            raise
        return result

    def _row(self, idx: int, result: dict[str, Any]) -> tuple[int, int, int, int, str, int, float]:
        lo, hi = self._bounds(idx)
        return (idx, lo, hi, int(result["count"]), str(result["host"]), int(result["pid"]),
                float(result["seconds"]))

    def _open_out(self, log: ChunkLog, done: array[int]) -> IO[bytes] | None:
        """The output file, cut back to what the state file says was written."""
        path = self.config.out
        if path is None:
            return None
        if not log.resumed or not done:
            return open(path, "wb")
        if done[-1] != len(done) - 1:
            raise ConfigError(f"{log.path} does not list a prefix of the chunks; "
                              "delete it to start over")
        offset = int(log.meta["out_offset"])
        try:
            f = open(path, "r+b")  # noqa: SIM115 -- closed by _run
        except FileNotFoundError:
            raise ConfigError(f"{path} is gone, but {log.path} says {offset} bytes of it "
                              "were written; delete the state file to start over") from None
        f.seek(0, 2)
        if f.tell() < offset:
            f.close()
            raise ConfigError(f"{path} is shorter than {log.path} says it should be; "
                              "delete the state file to start over")
        f.truncate(offset)
        f.seek(offset)
        return f

    def _snapshot(self, state: _Run, n: int, elapsed: float) -> Progress:
        cfg = self.config
        total = cfg.end - cfg.start
        checked = state.numbers or 1
        nodes = tuple(NodeShare(f"{host}:{pid}", host, pid, t.chunks, t.numbers, t.primes,
                                t.seconds, t.numbers / checked)
                      for (host, pid), t in sorted(state.nodes.items()))
        return Progress(cfg.start, cfg.end, cfg.method, self.chunk, n, state.done,
                        state.resumed, total, state.numbers, state.numbers_resumed,
                        state.primes, state.primes_resumed, elapsed, self._workers, nodes)
