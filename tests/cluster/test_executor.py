"""``netlet.Executor`` against ``concurrent.futures.ProcessPoolExecutor``: one suite, both run it.

Every test body runs twice, on a ``ProcessPoolExecutor`` and on an embedded
``netlet`` Executor (a head in this process, worker processes beside it), and
both must pass the same assertions. Where netlet's documented semantics differ,
the :class:`Flavour` says so and the test asserts each side's behaviour:

* ``cancels_running`` / ``reports_running``: both executors mark a future
  RUNNING when a worker takes its task, so ``cancel()`` of a running task
  returns False and its result is delivered (kept as flags so a flavour whose
  semantics differ can say so).
* Exception types of the program's own arrive as themselves under both; netlet
  pickles them only because the embedded cluster's ends share a key and agreed
  to pickle (``test_remote_futures`` covers peers that did not).
* ``runs_lambdas``: the embedded cluster shares a key with its workers, so
  lambdas and closures travel by value (cloudpickle); ProcessPoolExecutor
  cannot pickle them.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import netlet
import netlet.cluster
import netlet.errors
from tests.cluster import tasks
from tests.cluster.conftest import REPO, STEP, ClusterKit, wait_until

Executor = concurrent.futures.Executor


def process_pool(workers: int) -> Executor:
    # spawn, not fork: the test process runs netlet nodes' threads.
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))


def netlet_embedded(workers: int) -> Executor:
    return netlet.cluster.Executor(max_workers=workers)


@dataclass(frozen=True)
class Flavour:
    name: str
    make: Callable[[int], Executor]
    cancels_running: bool
    reports_running: bool
    runs_lambdas: bool


FLAVOURS = [
    Flavour("process-pool", process_pool, cancels_running=False, reports_running=True,
            runs_lambdas=False),
    Flavour("netlet", netlet_embedded, cancels_running=False, reports_running=True,
            runs_lambdas=True),
]


@pytest.fixture(params=FLAVOURS, ids=lambda f: f.name)
def flavour(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Flavour:
    # The embedded workers are child processes: let them import tests.cluster.tasks.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_executor(flavour: Flavour) -> Iterator[Callable[..., Executor]]:
    """``make_executor(workers=2)``; every executor made is shut down afterwards."""
    made: list[Executor] = []

    def make(workers: int = 2) -> Executor:
        executor = flavour.make(workers)
        made.append(executor)
        return executor

    try:
        yield make
    finally:
        for executor in made:
            executor.shutdown(wait=True, cancel_futures=True)
        # A shutdown(wait=False) finishes in a thread: let it end within the test.
        for thread in threading.enumerate():
            if thread.name == "netlet-executor-shutdown":
                thread.join(STEP)


def squares(n: int) -> list[int]:
    return [x * x for x in range(n)]


def ran(trace: Path) -> list[int]:
    """The arguments ``square_and_record`` ran with, in the order they started."""
    return [int(words[2]) for words in tasks.read_trace(trace)]


# -- submit and exceptions -----------------------------------------------------------------


def test_submit_returns_results(make_executor: Callable[..., Executor]) -> None:
    executor = make_executor()
    assert executor.submit(tasks.add, 2, 3).result(STEP) == 5
    assert executor.submit(tasks.slow_square, x=4).result(STEP) == 16
    value = {"a": [1, 2.5, None], "b": (1, "x"), "c": b"\x00\xff"}
    assert executor.submit(tasks.identity, value).result(STEP) == value
    futures = [executor.submit(tasks.slow_square, x, 0.01) for x in range(8)]
    _, not_done = concurrent.futures.wait(futures, timeout=STEP)
    assert not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == squares(8)
    assert all(f.done() and not f.cancelled() and f.exception() is None for f in futures)


@pytest.mark.parametrize(("kind", "exc_type"), [
    ("ValueError", ValueError), ("KeyError", KeyError), ("ZeroDivisionError", ZeroDivisionError),
])
def test_task_exception_keeps_type_and_message(
        make_executor: Callable[..., Executor], kind: str, exc_type: type[Exception]) -> None:
    executor = make_executor(1)
    future = executor.submit(tasks.raise_error, kind, "it went wrong")

    with pytest.raises(exc_type) as raised:
        future.result(STEP)
    assert type(raised.value) is exc_type
    assert str(raised.value) == str(exc_type("it went wrong"))
    assert raised.value.args == ("it went wrong",)
    assert future.done()
    assert not future.cancelled()
    assert isinstance(future.exception(), exc_type)
    # The executor carries on after a task failed.
    assert executor.submit(tasks.add, 1, 1).result(STEP) == 2


def test_exception_of_the_programs_own_type(make_executor: Callable[..., Executor]) -> None:
    future = make_executor(1).submit(tasks.raise_error, "CustomError", "mine")
    with pytest.raises(tasks.CustomError, match="mine"):
        future.result(STEP)


def test_lambda(make_executor: Callable[..., Executor], flavour: Flavour) -> None:
    executor = make_executor(1)
    offset = 10
    if flavour.runs_lambdas:
        assert executor.submit(lambda x: x + offset, 1).result(STEP) == 11
    else:
        with pytest.raises(Exception, match=r"(?i)pickle"):
            executor.submit(lambda x: x + offset, 1).result(STEP)


def test_max_workers_must_be_positive(flavour: Flavour) -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        flavour.make(0)


# -- map ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 2, 5])
def test_map(make_executor: Callable[..., Executor], chunksize: int) -> None:
    executor = make_executor()
    assert list(executor.map(tasks.slow_square, range(11), chunksize=chunksize)) == squares(11)
    # In input order even when later items finish first.
    delays = [0.25, 0.2, 0.15, 0.1, 0.05, 0.0]
    assert list(executor.map(tasks.slow_square, range(6), delays, chunksize=chunksize)) == \
        squares(6)
    # Several iterables stop at the shortest, like zip.
    assert list(executor.map(tasks.add, range(10), range(100, 104), chunksize=chunksize)) == \
        [100, 102, 104, 106]
    assert list(executor.map(tasks.add, [], [], chunksize=chunksize)) == []

    # An exception surfaces when iteration reaches its item (its whole chunk fails).
    results = executor.map(tasks.reciprocal, [1, 2, 0, 4], chunksize=chunksize)
    before = 2 // chunksize * chunksize  # the items in chunks before the failing one
    assert list(itertools.islice(results, before)) == [1.0, 0.5][:before]
    with pytest.raises(ZeroDivisionError):
        next(results)

    with pytest.raises(ValueError, match="chunksize must be >= 1"):
        executor.map(tasks.identity, [1], chunksize=0)


def test_map_timeout(make_executor: Callable[..., Executor]) -> None:
    executor = make_executor(1)
    results = executor.map(tasks.slow_square, [2, 3], [0.6, 0.0], timeout=0.1)
    with pytest.raises(TimeoutError):
        next(results)


# -- cancel -------------------------------------------------------------------------------


def test_cancel_a_queued_future(make_executor: Callable[..., Executor], tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    executor = make_executor(1)
    blocker = executor.submit(tasks.square_and_record, str(trace), 100, 0.5)
    wait_until(lambda: ran(trace), STEP, "the blocker starting")
    queued = [executor.submit(tasks.square_and_record, str(trace), x) for x in range(5)]
    victim = queued[-1]

    assert victim.cancel()
    assert victim.cancelled()
    assert victim.done()
    assert victim.cancel()  # again: still True
    with pytest.raises(concurrent.futures.CancelledError):
        victim.result()

    assert blocker.result(STEP) == 100 * 100
    assert [f.result(STEP) for f in queued[:-1]] == squares(4)
    # One worker runs in order: had the victim not been dropped, it would run before this.
    assert executor.submit(tasks.square_and_record, str(trace), 7).result(STEP) == 49
    assert ran(trace) == [100, 0, 1, 2, 3, 7]


def test_cancel_a_running_future(make_executor: Callable[..., Executor], flavour: Flavour,
                                 tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    executor = make_executor(1)
    future = executor.submit(tasks.sleep_and_record, str(trace), 0.5, "value")
    wait_until(lambda: tasks.read_trace(trace), STEP, "the task starting")

    assert future.running() is flavour.reports_running
    assert future.cancel() is flavour.cancels_running
    if flavour.cancels_running:  # netlet: the result is discarded when it comes
        assert future.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(STEP)
    else:
        assert not future.cancelled()
        assert future.result(STEP) == "value"
    # Either way the worker was not interrupted: the task ran to its end, and the
    # executor carries on.
    assert executor.submit(tasks.identity, "next").result(STEP) == "next"
    assert [words[1] for words in tasks.read_trace(trace)] == ["started", "finished"]


# -- shutdown -------------------------------------------------------------------------------


def test_shutdown_wait_true_finishes_submitted_work(
        make_executor: Callable[..., Executor]) -> None:
    executor = make_executor()
    futures = [executor.submit(tasks.slow_square, x, 0.1) for x in range(6)]

    executor.shutdown(wait=True)

    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == squares(6)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(tasks.identity, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.map(tasks.identity, [1])
    executor.shutdown()  # a second shutdown is harmless


def test_shutdown_wait_false_returns_at_once_and_work_completes(
        make_executor: Callable[..., Executor]) -> None:
    executor = make_executor()
    futures = [executor.submit(tasks.slow_square, x, 0.3) for x in range(4)]

    executor.shutdown(wait=False)

    assert not futures[-1].done()  # it did not wait...
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(tasks.identity, 1)
    assert [f.result(STEP) for f in futures] == squares(4)  # ...and the work still completes


def test_shutdown_cancel_futures(make_executor: Callable[..., Executor], flavour: Flavour,
                                 tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    executor = make_executor(2)
    futures = [executor.submit(tasks.square_and_record, str(trace), x, 0.7) for x in range(12)]
    started = set(wait_until(lambda: len(ran(trace)) >= 2 and ran(trace), STEP,
                             "both workers starting a task"))

    executor.shutdown(wait=True, cancel_futures=True)

    assert all(f.done() for f in futures)
    cancelled = {i for i, f in enumerate(futures) if f.cancelled()}
    assert set(range(6, 12)) <= cancelled  # far beyond what the workers had taken
    assert all(f.result() == i * i for i, f in enumerate(futures) if i not in cancelled)
    assert not set(ran(trace)) & set(range(6, 12))  # never ran
    if flavour.cancels_running:  # netlet: running futures are cancelled too
        assert started <= cancelled
    else:
        assert not started & cancelled


def test_with_block_shuts_down_and_waits(make_executor: Callable[..., Executor]) -> None:
    with make_executor() as executor:
        futures = [executor.submit(tasks.slow_square, x, 0.1) for x in range(4)]
    assert [f.result(0) for f in futures] == squares(4)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(tasks.identity, 1)

    submitted: list[concurrent.futures.Future[int]] = []

    def fail_inside() -> None:
        with make_executor() as executor:
            submitted.append(executor.submit(tasks.slow_square, 3, 0.1))
            raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        fail_inside()
    assert submitted[0].result(0) == 9


# -- netlet only -----------------------------------------------------------------------------


def test_executor_on_a_running_cluster(cluster_kit: ClusterKit) -> None:
    """``Executor(address)`` uses a cluster it does not own: shutdown leaves it running."""
    head, workers, cluster = cluster_kit.start(workers=2)
    with netlet.cluster.Executor(head.address) as executor:
        assert list(executor.map(tasks.slow_square, range(10), chunksize=3)) == squares(10)
        pids = set(executor.map(tasks.pid_after, [0.1] * 6))
    assert pids <= {w.pid for w in workers}
    assert all(w.alive() for w in workers)
    assert len(cluster_kit.alive_workers(cluster)) == 2


def test_cancelled_right_after_submit_never_runs(cluster_kit: ClusterKit,
                                                 tmp_path: Path) -> None:
    """A future cancelled at once is dropped even if its submit is still on its way."""
    trace = tmp_path / "trace"
    head = cluster_kit.head()
    cluster = cluster_kit.client(head.address)
    futures = []
    for x in range(10):
        futures.append(cluster.submit(tasks.square_and_record, str(trace), x))
        if x % 2 == 0:
            assert futures[-1].cancel()

    cluster_kit.worker(head.address)  # no worker could take anything before this
    assert [f.result(STEP) for f in futures[1::2]] == [1, 9, 25, 49, 81]
    # One worker runs in order: a cancelled task still queued would run before this.
    assert cluster.submit(tasks.square_and_record, str(trace), 100).result(STEP) == 10000
    assert ran(trace) == [1, 3, 5, 7, 9, 100]


@pytest.mark.slow
@pytest.mark.parametrize("credit", ["1", "auto"])
def test_idle_workers_share_a_burst(cluster_kit: ClusterKit, credit: str) -> None:
    """Pull-based scheduling: two equal workers each run about half of a burst of tasks.

    ``credit="auto"`` is what the embedded cluster (``Executor()``) uses.
    """
    head = cluster_kit.head()
    workers = cluster_kit.workers(head.address, 2, credit=credit)
    cluster = cluster_kit.client(head.address)
    cluster_kit.wait_workers(cluster, 2)
    time.sleep(0.5)  # the scenario, not a synchronisation: the workers wait idle for work

    pids = list(cluster.map(tasks.pid_after, [0.1] * 20))

    shares = sorted(pids.count(w.pid) for w in workers)
    assert shares[0] >= 6, f"one worker ran {shares[1]} of 20 equal tasks, the other {shares[0]}"


def test_public_names() -> None:
    """The issue's API: ``netlet.Executor``, ``netlet.Cluster``, ``netlet.WorkerLost``."""
    assert getattr(netlet, "Executor", None) is netlet.cluster.Executor
    assert getattr(netlet, "Cluster", None) is netlet.cluster.Cluster
    assert getattr(netlet, "WorkerLost", None) is netlet.errors.WorkerLost
