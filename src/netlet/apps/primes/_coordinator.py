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

State
=====

Finished chunks are recorded in a small SQLite file (each chunk's count and
which host and pid did it), committed together once per progress interval
(a quarter of a second by default), and all of them when a run fails or is
interrupted; so a coordinator that dies loses at most the chunks in flight and
those of its last interval. A search that ends within its first interval never
writes the file (creating it costs milliseconds). ``resume=True`` opens the file of an
earlier, unfinished run of the same search (same range, method, output file
and chunk size) and submits only the chunks it does not list: the answer is
the same, and finished chunks are not computed again. The file is removed after
a successful run unless ``keep_state``. A run that finds an unfinished run's
file refuses to start unless told to resume it, rather than throw its work away.

With ``out``, primes are written to the file in ascending order, one per line.
Chunks finish out of order, so a finished chunk waits in memory until the ones
before it are written; the window bounds how many may wait, and a chunk is
recorded only once its primes are on disk, together with the file's length.
Resuming cuts the file back to that length and goes on from there.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import sqlite3
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Final

from netlet.apps.primes._chunks import MAX_CHUNKS
from netlet.apps.primes._methods import KNOWN_PI, MAX_SIEVE_END, METHODS
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

MAX_CHUNK: Final = 10**10
"""Most numbers in one chunk: a bigger one runs for minutes on one worker and cannot be shared."""

MAX_OUT_CHUNK: Final = 10**8
"""Most numbers in one chunk when the primes are written out: their bytes stay under 64 MiB."""

MAX_NAIVE_END: Final = 10**18
"""Largest ``end`` for trial division (state and results hold 64-bit numbers)."""

_CHUNK_BOUNDS: Final = {"sieve": (10**6, 10**8), "naive": (1_000, 20_000)}
"""Default chunk sizes per method: (smallest, largest); each largest takes ~50-200 ms."""

_OUT_CHUNK_CEILING: Final = 10**7
"""Largest default chunk with ``out``: at most ~5 MB of primes wait in memory per chunk."""

_CHUNKS_PER_WORKER: Final = 8
"""A default chunk size aims at this many chunks per worker: enough for an even spread
(handed out last first, the cheap chunks even out the finish), few enough that the
per-chunk costs stay small. It decides only for short searches; longer ones hit the
method's largest chunk and get more chunks, for a smooth live view and resume."""

_WARM_UPS_PER_WORKER: Final = 4
"""Warm-up tasks per worker in one round: a head hands each worker waiting for work a
few tasks at once, so a round of several per worker reaches every waiting worker."""

_RESUBMITS: Final = 3
"""Times a chunk lost with its workers (``WorkerLost``) is submitted again from here."""

_STATE_VERSION: Final = "1"


def _pow10(n: int) -> str:
    """``10**k`` for a power of ten, else the number with thousands separators."""
    text = str(n)
    return f"10**{len(text) - 1}" if text.strip("0") == "1" else f"{n:,}"


def default_chunk(method: str, start: int, end: int, workers: int, *, out: bool = False) -> int:
    """A chunk size giving each of ``workers`` ~8 chunks, within the method's bounds."""
    floor, ceiling = _CHUNK_BOUNDS[method]
    if out:
        ceiling = min(ceiling, _OUT_CHUNK_CEILING)
    wanted = -(-(end - start) // (_CHUNKS_PER_WORKER * max(1, workers)))
    return max(floor, min(ceiling, wanted))


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """What to search and how; checked on creation (``ConfigError`` says what is wrong)."""

    start: int
    end: int
    method: str = "sieve"
    chunk: int | None = None
    """Numbers per chunk; None picks one per method and worker count (``default_chunk``)."""
    out: Path | None = None
    """Write the primes here, ascending, one per line."""
    state: Path | None = None
    """The state file; None means ``.netlet-primes-<hash>.db`` in the working directory."""
    resume: bool = False
    """Continue an unfinished run recorded in the state file (start afresh if there is none)."""
    keep_state: bool = False
    """Keep the state file after a successful run."""
    per_worker: int = 4
    """Chunks in flight per worker."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose from "
                              f"{', '.join(sorted(METHODS))}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
            if value < 0:
                raise ConfigError(f"{name} must be 0 or more, got {value}")
        if self.end < self.start:
            raise ConfigError(f"end ({self.end}) is below start ({self.start}): "
                              "the search covers [start, end)")
        limit = MAX_SIEVE_END if self.method == "sieve" else MAX_NAIVE_END
        if self.end > limit:
            raise ConfigError(f"the {self.method} method goes up to end={_pow10(limit)}, "
                              f"got end={self.end}")
        if self.chunk is not None:
            self.check_chunk(self.chunk)
        if self.per_worker < 1:
            raise ConfigError("per_worker must be 1 or more")

    def check_chunk(self, chunk: int) -> None:
        """Raise ``ConfigError`` unless ``chunk`` is a sensible chunk size for this range."""
        most = MAX_OUT_CHUNK if self.out is not None else MAX_CHUNK
        if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= most:
            why = " when writing the primes out" if self.out is not None else ""
            raise ConfigError(f"a chunk holds 1 to {_pow10(most)} numbers{why}, got {chunk}")
        pieces = -(-(self.end - self.start) // chunk)
        if pieces > MAX_CHUNKS:
            raise ConfigError(f"[{self.start}, {self.end}) in chunks of {chunk} makes {pieces} "
                              f"chunks, over the limit of {MAX_CHUNKS}; use larger chunks")

    def state_path(self) -> Path:
        """Where the state lives: ``state``, or a name derived from the search's parameters."""
        if self.state is not None:
            return self.state
        return Path.cwd() / f".netlet-primes-{self._digest()}.db"

    def _digest(self) -> str:
        out = str(self.out.resolve()) if self.out is not None else ""
        key = f"{self.method}:{self.start}:{self.end}:{out}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]


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


# --- the state file --------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    idx INTEGER PRIMARY KEY, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    count INTEGER NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, seconds REAL NOT NULL
);
"""


class _ChunkLog:
    """The finished chunks of one search, in SQLite (WAL, one commit per ``commit_every``).

    A fresh run's file is created at its first commit, not up front: creating it
    costs milliseconds (SQLite syncs the new file and its switch to WAL), which a
    short search would otherwise spend before its first chunk and again on
    removing the file.
    """

    def __init__(self, path: Path, params: dict[str, str], resume: bool, *,
                 check_chunk: bool, commit_every: float = 0.0,
                 clock: Clock = REAL_CLOCK) -> None:
        self.path = path
        self.commit_every = commit_every
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._rows: list[tuple[int, int, int, int, str, int, float]] = []
        self._offset: int | None = None
        self._committed = clock.monotonic()
        if path.exists() and not resume:
            _refuse_unfinished(path)
            _remove(path)  # a finished run's kept state: a new run replaces it
        db = self._connect() if path.exists() else None
        stored = dict(db.execute("SELECT key, value FROM meta").fetchall()) if db else {}
        self.resumed = bool(stored)
        if stored:
            self._check(stored, params, check_chunk)
            self.meta = stored
        else:
            self.meta = {**params, "version": _STATE_VERSION, "out_offset": "0"}
            if db is not None:  # an empty file someone left: fill it now
                self._create()

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.path)
            # WAL first: the schema and every commit after it then skip the fsyncs.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()
            raise ConfigError(f"{self.path} is not a prime-search state file ({e})") from None
        self._db = db
        return db

    def _create(self) -> sqlite3.Connection:
        db = self._db if self._db is not None else self._connect()
        with db:
            db.executemany("INSERT INTO meta VALUES (?, ?)", self.meta.items())
        return db

    def _writer(self) -> sqlite3.Connection:
        """The open database, created with this run's parameters if it is not yet."""
        return self._db if self._db is not None else self._create()

    def _check(self, stored: dict[str, str], params: dict[str, str], check_chunk: bool) -> None:
        if stored.get("version") != _STATE_VERSION:
            self.close()
            raise ConfigError(f"{self.path} was written by another version of netlet; "
                              "delete it to start over")
        for key, value in params.items():
            if key == "chunk" and not check_chunk:
                continue  # the caller left the chunk size to us: the stored one holds
            if stored.get(key) != value:
                self.close()
                raise ConfigError(
                    f"{self.path} belongs to a different search ({key} was "
                    f"{stored.get(key) or 'unset'!s}, now {value or 'unset'}); "
                    "give the same parameters to resume it, or delete it to start over")

    def done(self) -> array[int]:
        """Indices of the finished chunks, ascending."""
        found = array("q")
        if self._db is not None:
            for (idx,) in self._db.execute("SELECT idx FROM chunks ORDER BY idx"):
                found.append(idx)
        return found

    def shares(self) -> list[tuple[str, int, int, int, int, float]]:
        """(host, pid, chunks, numbers, primes, seconds) per worker, from the finished chunks."""
        if self._db is None:
            return []
        return self._db.execute(
            "SELECT host, pid, COUNT(*), SUM(hi - lo), SUM(count), SUM(seconds) FROM chunks"
            " GROUP BY host, pid").fetchall()

    def record(self, rows: list[tuple[int, int, int, int, str, int, float]],
               out_offset: int | None) -> None:
        """Add finished chunks ``(idx, lo, hi, count, host, pid, seconds)``.

        They are committed together with those before them once ``commit_every``
        seconds have passed since the last commit (or the log was opened), or by
        ``flush``: a search shorter than that never writes its state file.
        """
        self._rows.extend(rows)
        if out_offset is not None:
            self._offset = out_offset
        if self._clock.monotonic() - self._committed >= self.commit_every:
            self.flush()

    def flush(self) -> None:
        """Commit the chunks recorded since the last commit, in one transaction."""
        self._committed = self._clock.monotonic()
        if not self._rows and self._offset is None:
            return
        db = self._writer()
        with db:
            db.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
                           self._rows)
            if self._offset is not None:
                db.execute("UPDATE meta SET value = ? WHERE key = 'out_offset'",
                           (str(self._offset),))
        self._rows, self._offset = [], None

    def finish(self) -> None:
        """Commit what is pending and mark the run finished: a later run may replace
        this file without --resume."""
        self.flush()
        db = self._writer()
        with db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('finished', '1')")

    def close(self, remove: bool = False) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        if remove:
            _remove(self.path)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def _refuse_unfinished(path: Path) -> None:
    """Raise ``ConfigError`` unless the state file at ``path`` records a finished run."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'finished'").fetchone()
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{path} is in the way and is not a prime-search state file ({e}); "
                          "move it, or give another --state") from None
    if row is None:
        raise ConfigError(
            f"an unfinished run of this search left its state in {path}: add --resume "
            "to continue it, or delete that file to start over")


def check_state(config: SearchConfig) -> None:
    """Refuse now what ``PrimeSearch.run`` would: another run's unfinished state, no resume.

    Lets a caller fail before it starts a cluster.
    """
    path = config.state_path()
    if path.exists() and not config.resume:
        _refuse_unfinished(path)


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
        log = _ChunkLog(self.state_path, params, cfg.resume, check_chunk=cfg.chunk is not None,
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

    def _run(self, log: _ChunkLog, t0: float, on_progress: Callable[[Progress], None] | None,
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

    def _open_out(self, log: _ChunkLog, done: array[int]) -> IO[bytes] | None:
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
