"""Tests for the prime search's coordinator and its task, in process.

The coordinator runs against ``FakeCluster``: the real task function on a pool
of threads, with results finishing out of order and, on request, chunks whose
worker "dies" (``WorkerLost``) or whose task raises. That makes the
bookkeeping checkable exactly: each chunk submitted once (or once more after
a loss), never more than the window in flight, the primes written in order
whatever order chunks finish in, and a resumed run submitting only the chunks
the first one did not finish. Real processes are in ``test_cli.py``.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import random
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import pytest

import netlet.apps.primes as primes_pkg
from netlet.apps.primes import (
    KNOWN_PI,
    MAX_CHUNK,
    MAX_OUT_CHUNK,
    PrimeSearch,
    Progress,
    SearchConfig,
    Summary,
    _chunks,
    _config,
    _coordinator,
    _methods,
    _state,
    _tasks,
    check_state,
    count_sieve,
    default_chunk,
)
from netlet.apps.primes._tasks import TASK, search_chunk
from netlet.cluster import Cluster
from netlet.errors import ConfigError, WorkerLost

__all__: list[str] = []


def reference_primes(start: int, end: int) -> list[int]:
    """Primes in [start, end) by a plain sieve that shares no code with the methods."""
    flags = bytearray([1]) * max(end, 2)
    flags[0:2] = b"\0\0"
    for p in range(2, int(end**0.5) + 1):
        if flags[p]:
            flags[p * p :: p] = bytes(len(range(p * p, end, p)))
    return [n for n in range(start, end) if flags[n]]


class FakeCluster:
    """Just enough of ``Cluster`` for the coordinator: ``submit`` and ``status``.

    Tasks run ``search_chunk`` on ``workers`` threads after a random pause of
    up to a millisecond (seeded), so they finish out of order. ``lose`` holds
    chunk starts whose next run fails with ``WorkerLost`` (``always_lose``:
    every run); ``fail`` holds chunk starts whose task raises ``ValueError``.
    """

    def __init__(self, workers: int = 3, *, lose: set[int] | None = None,
                 always_lose: bool = False, fail: set[int] | None = None,
                 seed: int = 1) -> None:
        self.workers = workers
        self.lose = set(lose or ())
        self.always_lose = always_lose
        self.fail = set(fail or ())
        self.pool = concurrent.futures.ThreadPoolExecutor(workers)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.submitted: list[tuple[int, int]] = []

    def submit(self, fn: str, method: str, lo: int, hi: int,
               want: bool) -> concurrent.futures.Future[Any]:
        assert fn == TASK
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.submitted.append((lo, hi))
            pause = self.rng.random() / 1000

        def work() -> None:
            time.sleep(pause)  # only to shuffle the order chunks finish in
            try:
                if lo in self.fail:
                    raise ValueError("the task blew up")
                if lo in self.lose:
                    if not self.always_lose:
                        self.lose.discard(lo)
                    raise WorkerLost("the worker died")
                result: Any = search_chunk(method, lo, hi, want)
            except Exception as e:
                with self.lock:
                    self.in_flight -= 1
                fut.set_exception(e)
                return
            with self.lock:
                self.in_flight -= 1
            fut.set_result(result)

        self.pool.submit(work)
        return fut

    def status(self) -> dict[str, Any]:
        return {"nodes": [{"role": "worker", "alive": True}] * self.workers
                + [{"role": "client", "alive": True}]}

    def close(self) -> None:
        self.pool.shutdown(wait=True)


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeCluster]]:
    made: list[FakeCluster] = []

    def make(*args: Any, **kwargs: Any) -> FakeCluster:
        made.append(FakeCluster(*args, **kwargs))
        return made[-1]

    yield make
    for f in made:
        f.close()


def search(cluster: FakeCluster, config: SearchConfig, workers: int | None = 3,
           on_progress: Callable[[Progress], None] | None = None) -> Summary:
    return PrimeSearch(cast(Cluster, cluster), config, workers=workers).run(on_progress,
                                                                             interval=0)


def state_rows(path: Path) -> list[tuple[int, int, int]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT idx, lo, hi FROM chunks ORDER BY idx").fetchall()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # default state files land in the test's directory


# --- answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "end", "chunk"), [
    ("naive", 300_000, 7_919), ("sieve", 10**7, 10**6), ("sieve", 10**6, None)])
def test_known_counts(fake: Callable[..., FakeCluster], method: str, end: int,
                      chunk: int | None) -> None:
    cluster = fake()
    summary = search(cluster, SearchConfig(0, end, method, chunk))

    assert summary.count == KNOWN_PI[end]
    assert summary.matches_known is True
    assert summary.chunks_done == summary.chunks_total == len(cluster.submitted)
    covered = sorted(cluster.submitted)
    assert covered[0][0] == 0
    assert covered[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
    assert sum(n.numbers for n in summary.nodes) == end
    assert sum(n.share for n in summary.nodes) == pytest.approx(1)
    assert not list(Path().glob(".netlet-primes-*")), "the state file goes after a good run"


def test_a_range_not_from_zero_and_an_empty_one(fake: Callable[..., FakeCluster]) -> None:
    summary = search(fake(), SearchConfig(10**6, 2 * 10**6, "sieve", 99_991))
    assert summary.count == count_sieve(10**6, 2 * 10**6)
    assert summary.known_pi is None
    assert summary.matches_known is None

    cluster = fake()
    empty = search(cluster, SearchConfig(5, 5, "naive"))
    assert (empty.count, empty.chunks_total, cluster.submitted) == (0, 0, [])


@pytest.mark.parametrize("method", ["naive", "sieve"])
def test_out_lists_the_primes_in_order(fake: Callable[..., FakeCluster], tmp_path: Path,
                                       method: str) -> None:
    out = tmp_path / "primes.txt"
    cluster = fake(workers=4)
    summary = search(cluster, SearchConfig(1_000, 60_000, method, 1_234, out=out))

    assert out.read_text().split("\n") == [*map(str, reference_primes(1_000, 60_000)), ""]
    assert summary.count == len(reference_primes(1_000, 60_000))
    assert summary.out == str(out)


# --- the window and failures ---------------------------------------------------------------


@pytest.mark.parametrize("out", [False, True])
def test_in_flight_never_exceeds_the_window(fake: Callable[..., FakeCluster], tmp_path: Path,
                                            out: bool) -> None:
    cluster = fake(workers=3)
    config = SearchConfig(0, 200_000, "naive", 1_000, per_worker=2,
                          out=tmp_path / "p.txt" if out else None)
    summary = search(cluster, config, workers=3)

    assert summary.count == 17_984
    assert cluster.max_in_flight <= 2 * 3
    assert len(cluster.submitted) == 200  # each chunk once


def test_window_follows_the_heads_worker_count(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(workers=5)
    summary = search(cluster, SearchConfig(0, 300_000, "naive", 1_000, per_worker=1),
                     workers=None)
    assert summary.workers == 5
    assert cluster.max_in_flight <= 5
    assert summary.count == KNOWN_PI[300_000]


def test_a_chunk_whose_workers_died_is_submitted_again(
        fake: Callable[..., FakeCluster], tmp_path: Path) -> None:
    cluster = fake(lose={0, 50_000, 99_000})
    summary = search(cluster, SearchConfig(0, 100_000, "naive", 1_000, out=tmp_path / "p"))

    assert summary.count == len(reference_primes(0, 100_000))
    assert (tmp_path / "p").read_text().split() == list(map(str, reference_primes(0, 100_000)))
    assert len(set(cluster.submitted)) == 100
    twice = sorted(c for c in set(cluster.submitted) if cluster.submitted.count(c) == 2)
    assert twice == [(0, 1_000), (50_000, 51_000), (99_000, 100_000)]
    assert len(cluster.submitted) == 103


def test_a_chunk_lost_again_and_again_stops_the_search(
        fake: Callable[..., FakeCluster]) -> None:
    config = SearchConfig(0, 100_000, "naive", 10_000)
    with pytest.raises(WorkerLost) as info:
        search(fake(lose={30_000}, always_lose=True), config)
    assert "while searching chunk [30000, 40000)" in "".join(info.value.__notes__)
    assert config.state_path().exists(), "the finished chunks stay for --resume"


def test_a_failing_task_stops_the_search_naming_its_chunk(
        fake: Callable[..., FakeCluster]) -> None:
    with pytest.raises(ValueError, match="blew up") as info:
        search(fake(fail={20_000}), SearchConfig(0, 100_000, "sieve", 10_000))
    assert "chunk [20000, 30000) with the sieve method" in "".join(info.value.__notes__)


# --- resuming ----------------------------------------------------------------------------


def interrupt_after(chunks: int) -> Callable[[Progress], None]:
    def stop(p: Progress) -> None:
        if p.chunks_done >= chunks:
            raise KeyboardInterrupt

    return stop


def test_interrupted_run_resumes_without_recomputing(fake: Callable[..., FakeCluster]) -> None:
    config = SearchConfig(0, 10**6, "naive", 10_000)
    first = fake()
    with pytest.raises(KeyboardInterrupt):
        search(first, config, on_progress=interrupt_after(20))
    finished = {(lo, hi) for _, lo, hi in state_rows(config.state_path())}
    assert 20 <= len(finished) < 100

    with pytest.raises(ConfigError, match="--resume"):
        check_state(config)
    with pytest.raises(ConfigError, match="--resume"):
        search(fake(), config)

    second = fake()
    summary = search(second, SearchConfig(0, 10**6, "naive", resume=True))

    assert summary.count == KNOWN_PI[10**6]
    assert summary.chunk == 10_000, "the resumed run keeps the state's chunk size"
    assert summary.chunks_resumed == len(finished)
    assert summary.as_dict()["computed_chunks"] == 100 - len(finished)
    assert finished.isdisjoint(second.submitted)
    assert len(second.submitted) == 100 - len(finished)
    assert sum(n.chunks for n in summary.nodes) == 100
    assert not config.state_path().exists()


def test_resume_cuts_a_partly_written_out_file_back(fake: Callable[..., FakeCluster],
                                                    tmp_path: Path) -> None:
    out = tmp_path / "primes.txt"
    config = SearchConfig(0, 200_000, "sieve", 3_000, out=out)
    with pytest.raises(KeyboardInterrupt):
        search(fake(), config, on_progress=interrupt_after(10))
    written = {idx for idx, _, _ in state_rows(config.state_path())}
    assert written == set(range(len(written))), "with --out, finished chunks are a prefix"
    with out.open("a") as f:
        f.write("999999937\n12")  # what a crash between write and commit leaves behind

    second = fake()
    summary = search(second, SearchConfig(0, 200_000, "sieve", out=out, resume=True))

    assert out.read_text().split() == list(map(str, reference_primes(0, 200_000)))
    assert summary.chunks_resumed == len(written)
    assert min(lo for lo, _ in second.submitted) == 3_000 * len(written)


def test_resume_with_nothing_to_resume_starts_afresh(fake: Callable[..., FakeCluster]) -> None:
    summary = search(fake(), SearchConfig(0, 300_000, "naive", resume=True))
    assert (summary.count, summary.chunks_resumed) == (KNOWN_PI[300_000], 0)


def test_state_of_another_search_is_refused(fake: Callable[..., FakeCluster],
                                            tmp_path: Path) -> None:
    state = tmp_path / "s.db"
    with pytest.raises(KeyboardInterrupt):
        search(fake(), SearchConfig(0, 10**6, "naive", 10_000, state=state),
               on_progress=interrupt_after(1))
    with pytest.raises(ConfigError, match="different search"):
        search(fake(), SearchConfig(0, 10**6, "naive", 20_000, state=state, resume=True))
    with pytest.raises(ConfigError, match="different search"):
        search(fake(), SearchConfig(0, 2 * 10**6, "naive", state=state, resume=True))

    junk = tmp_path / "junk.db"
    junk.write_text("not a database, but a lot of words " * 100)
    for resume in (False, True):
        with pytest.raises(ConfigError, match="not a prime-search state file"):
            search(fake(), SearchConfig(0, 100, "naive", state=junk, resume=resume))


def test_kept_state_answers_a_resume_and_is_replaced_by_a_new_run(
        fake: Callable[..., FakeCluster]) -> None:
    config = SearchConfig(0, 300_000, "naive", 10_000, keep_state=True)
    first = search(fake(), config)
    assert first.state == str(config.state_path())
    assert len(state_rows(config.state_path())) == 30

    idle = fake()
    again = search(idle, SearchConfig(0, 300_000, "naive", resume=True))
    assert (again.count, again.chunks_resumed, idle.submitted) == (KNOWN_PI[300_000], 30, [])

    fresh = fake()
    check_state(SearchConfig(0, 300_000, "naive"))  # a finished run's state is no obstacle
    assert search(fresh, SearchConfig(0, 300_000, "naive", 10_000)).chunks_resumed == 0
    assert len(fresh.submitted) == 30


# --- the state file's commits ---------------------------------------------------------------


def test_a_search_within_one_interval_writes_no_state_file(
        fake: Callable[..., FakeCluster]) -> None:
    config = SearchConfig(0, 300_000, "naive", 10_000)
    seen: list[bool] = []
    summary = PrimeSearch(cast(Cluster, fake()), config, workers=3).run(
        lambda p: seen.append(config.state_path().exists()), interval=60)

    assert summary.count == KNOWN_PI[300_000]
    assert seen
    assert not any(seen), "nothing committed before the first interval is over"


def test_a_failing_search_commits_every_finished_chunk(
        fake: Callable[..., FakeCluster]) -> None:
    config = SearchConfig(0, 100_000, "naive", 10_000, per_worker=1)  # one chunk at a time
    with pytest.raises(ValueError, match="blew up"):  # chunk 0 is handed out last
        PrimeSearch(cast(Cluster, fake(fail={0})), config, workers=1).run(interval=60)
    assert [idx for idx, _, _ in state_rows(config.state_path())] == list(range(1, 10))


def test_chunks_are_handed_out_last_first(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake()
    search(cluster, SearchConfig(0, 100_000, "naive", 10_000, per_worker=1), workers=1)
    assert [lo for lo, _ in cluster.submitted] == list(range(90_000, -1, -10_000))


def test_commits_wait_for_the_interval_or_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    params = {"start": "0", "end": "100", "method": "naive", "out": "", "chunk": "10"}
    log = _state.ChunkLog(path, params, False, check_chunk=True, commit_every=60)
    log.record([(0, 0, 10, 4, "h", 1, 0.1)], None)
    assert not path.exists()
    log.flush()
    log.record([(1, 10, 20, 4, "h", 1, 0.1)], None)
    assert state_rows(path) == [(0, 0, 10)]
    log.finish()
    assert state_rows(path) == [(0, 0, 10), (1, 10, 20)]
    log.close()

    every = _state.ChunkLog(tmp_path / "t.db", params, False, check_chunk=True)
    every.record([(0, 0, 10, 4, "h", 1, 0.1)], None)
    assert state_rows(tmp_path / "t.db") == [(0, 0, 10)], "commit_every=0: each record"
    every.close()


# --- warming the workers up ------------------------------------------------------------------


class WarmUpCluster:
    """Answers warm-up tasks as ``workers`` workers would; the first ``greedy`` rounds all
    land on one worker (a worker that pulls several tasks at once), and ``error`` fails them."""

    def __init__(self, workers: int, greedy: int = 0, error: Exception | None = None) -> None:
        self.workers = workers
        self.greedy = greedy
        self.error = error
        self.calls = 0

    def submit(self, fn: str, method: str) -> concurrent.futures.Future[Any]:
        assert (fn, method) == (_tasks.WARM_UP, "sieve")
        per_round = _coordinator._WARM_UPS_PER_WORKER * self.workers
        rnd, self.calls = self.calls // per_round, self.calls + 1
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self.error is not None:
            fut.set_exception(self.error)
        else:
            fut.set_result(f"h:{0 if rnd < self.greedy else self.calls % self.workers}")
        return fut

    @property
    def rounds(self) -> int:
        return -(-self.calls // (_coordinator._WARM_UPS_PER_WORKER * self.workers))


def test_warm_up_goes_on_until_every_worker_ran_one() -> None:
    for greedy, rounds in ((0, 1), (1, 2), (5, 3)):
        cluster = WarmUpCluster(3, greedy)
        warmed = PrimeSearch(cast(Cluster, cluster), SearchConfig(0, 10), workers=3).warm_up()
        assert (warmed, cluster.rounds) == (1 if greedy >= 3 else 3, rounds)


def test_warm_up_remembers_the_workers_it_reached() -> None:
    cluster = WarmUpCluster(3, greedy=1)
    search = PrimeSearch(cast(Cluster, cluster), SearchConfig(0, 10), workers=3)
    assert search.warm_up(rounds=1) == 1  # the only worker there yet took the round
    assert search.warm_up() == 3
    assert cluster.rounds == 2
    assert search.warm_up() == 3
    assert cluster.rounds == 2, "all reached: no more rounds"


def test_warm_up_leaves_failures_to_the_search() -> None:
    cluster = WarmUpCluster(2, error=ImportError("no numpy here"))
    assert PrimeSearch(cast(Cluster, cluster), SearchConfig(0, 10), workers=2).warm_up() == 0


def test_warm_up_task_loads_the_method() -> None:
    assert _tasks.warm_up("sieve") == f"{socket.gethostname()}:{os.getpid()}"
    assert "numpy" in sys.modules
    assert _tasks.warm_up("naive").endswith(f":{os.getpid()}")
    with pytest.raises(ValueError, match="unknown prime method"):
        _tasks.warm_up("fast")


# --- progress ------------------------------------------------------------------------------


def test_progress_reports(fake: Callable[..., FakeCluster]) -> None:
    seen: list[Progress] = []
    summary = search(fake(), SearchConfig(0, 300_000, "naive", 5_000), on_progress=seen.append)

    done = [p.numbers_done for p in seen]
    assert done == sorted(done)
    assert seen[-1].numbers_done == seen[-1].numbers_total == 300_000
    assert seen[-1].fraction == 1.0
    assert seen[-1].primes == summary.count
    assert summary.rate > 0
    report = summary.as_dict()
    assert report["count"] == KNOWN_PI[300_000]
    assert report["chunks"] == 60
    assert {"node", "host", "pid", "chunks", "numbers", "primes", "seconds", "share"} <= set(
        report["nodes"][0])


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"start": 10, "end": 5}, "below start"),
    ({"start": -1, "end": 5}, "start must be 0 or more"),
    ({"start": 0, "end": -5}, "end must be 0 or more"),
    ({"start": 0, "end": 2.5}, "whole number"),
    ({"start": 0, "end": 100, "method": "fast"}, "unknown method"),
    ({"start": 0, "end": 10**17}, "sieve method goes up to end=10\\*\\*16"),
    ({"start": 0, "end": 10**19, "method": "naive"}, "naive method goes up to"),
    ({"start": 0, "end": 100, "chunk": 0}, "a chunk holds 1 to"),
    ({"start": 0, "end": 100, "chunk": MAX_CHUNK + 1}, "a chunk holds 1 to 10\\*\\*10"),
    ({"start": 0, "end": 100, "chunk": MAX_OUT_CHUNK + 1, "out": Path("x")},
     "when writing the primes out"),
    ({"start": 0, "end": 10**12, "method": "naive", "chunk": 10}, "use larger chunks"),
    ({"start": 0, "end": 100, "per_worker": 0}, "per_worker"),
])
def test_bad_configuration(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SearchConfig(**kwargs)


def test_default_chunk_sizes() -> None:
    assert default_chunk("sieve", 0, 10**9, 2) == 10**9 // 16
    assert default_chunk("sieve", 0, 10**12, 2) == 10**8
    assert default_chunk("sieve", 0, 10**12, 2, out=True) == 10**7
    assert default_chunk("sieve", 0, 100, 2) == 10**6
    assert default_chunk("naive", 0, 300_000, 2) == 18_750
    assert default_chunk("naive", 2, 300_000, 2) == 18_750  # P1: 16 chunks
    assert default_chunk("naive", 0, 10**9, 8) == 20_000
    assert default_chunk("naive", 0, 100, 0) == 1_000


def test_default_state_file_depends_on_the_search(tmp_path: Path) -> None:
    a = SearchConfig(0, 10**6, "naive").state_path()
    assert a.parent == tmp_path
    assert a.name.startswith(".netlet-primes-")
    assert a == SearchConfig(0, 10**6, "naive", 777).state_path(), "not on the chunk size"
    assert a != SearchConfig(0, 10**6, "sieve").state_path()
    assert a != SearchConfig(1, 10**6, "naive").state_path()
    assert a != SearchConfig(0, 10**6, "naive", out=Path("p")).state_path()
    assert SearchConfig(0, 1, state=Path("s.db")).state_path() == Path("s.db")


# --- the task ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["naive", "sieve"])
def test_search_chunk(method: str) -> None:
    result = search_chunk(method, 100, 200)
    assert result["count"] == 21
    assert result["primes"] is None
    assert result["pid"] > 0
    assert result["host"]
    assert (result["start"], result["end"]) == (100, 200)
    listed = search_chunk(method, 100, 200, True)
    assert listed["primes"] == "".join(f"{p}\n" for p in reference_primes(100, 200)).encode()
    assert listed["count"] == 21
    assert search_chunk(method, 24, 29, True)["primes"] == b""


def test_search_chunk_refuses_an_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown prime method"):
        search_chunk("fast", 0, 10)


# --- the public surface --------------------------------------------------------------------


@pytest.mark.parametrize("module", [primes_pkg, _config, _coordinator, _state, _tasks])
def test_exports(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert names == sorted(names)
    for name in names:
        assert hasattr(module, name)
    assert module.__doc__


def test_package_reexports_the_coordinator() -> None:
    assert set(primes_pkg.__all__) == (set(_methods.__all__) | set(_chunks.__all__)
                                       | set(_coordinator.__all__))
