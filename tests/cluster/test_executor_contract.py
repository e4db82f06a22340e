"""What ``netlet.Executor`` promises as a ``concurrent.futures.Executor``, each a defect once.

* Functions are taken as they are at each submit (a bound method after its
  object changed, a closure over a list that grew), and the client keeps no
  reference to a callable, nor its pickled bytes, once its futures are done.
* A future cancelled by hand is notified: ``wait`` and ``as_completed`` return it.
* ``map`` holds no result it already yielded, chunked or not.
* The interpreter waits for pending futures at exit (after ``shutdown(wait=False)``
  too), ``submit`` from an atexit hook raises RuntimeError, and no
  ``netlet-*`` directory stays in the temporary directory.
* Clear errors: a lambda without cloudpickle says to install ``netlet[pickle]``;
  a function of the user's script says what to do; a task that kills its
  worker runs 1 + ``max_retries`` times, then fails with ``netlet.WorkerLost``.

Everything runs on real worker processes; the exit tests run real scripts.
"""

from __future__ import annotations

import concurrent.futures
import gc
import os
import subprocess
import sys
import textwrap
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import netlet
from netlet.errors import WorkerLost
from netlet.transport import generate_key
from tests.cluster import tasks
from tests.cluster.conftest import STEP, ClusterKit, child_env, wait_until


class Box:
    """A plain object whose bound method travels by value (its class by import path)."""

    def __init__(self, x: int) -> None:
        self.x = x

    def get(self) -> int:
        return self.x


class Blob:
    """An object a test watches die (weak references)."""

    def __init__(self, n: int = 0) -> None:
        self.n = n


def make_blob(n: int) -> Blob:
    return Blob(n)


def exit_and_record(path: str) -> None:
    """Record the run, then end the worker process at once (``os._exit``)."""
    tasks.record(path, "ran")
    os._exit(3)


@pytest.fixture(scope="module")
def executor() -> Iterator[netlet.Executor]:
    """One embedded executor with 2 workers, shared by the tests that do not shut it down."""
    with pytest.MonkeyPatch.context() as mp:
        # The workers import this module's functions.
        mp.setenv("PYTHONPATH", child_env()["PYTHONPATH"])
        ex = netlet.Executor(2)  # ProcessPoolExecutor's positional max_workers
        try:
            yield ex
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


# -- 1. stale functions ------------------------------------------------------------------


def test_bound_method_and_closure_are_taken_at_each_submit(executor: netlet.Executor) -> None:
    box = Box(1)
    assert executor.submit(box.get).result(STEP) == 1
    box.x = 2
    assert executor.submit(box.get).result(STEP) == 2
    data = [1, 2]

    def total() -> int:
        return sum(data)

    assert executor.submit(total).result(STEP) == 3
    data.append(3)
    assert executor.submit(total).result(STEP) == 6
    assert list(executor.map(lambda k: k + data[-1], [1, 2])) == [4, 5]


def test_no_reference_to_the_callable_once_done(executor: netlet.Executor) -> None:
    closures = []
    for i in range(20):
        blob = Blob(i)
        payload = bytes(1 << 20)  # 1 MB each, captured by the closure

        def task(blob: Blob = blob, payload: bytes = payload) -> int:
            return blob.n + len(payload)

        closures.append((weakref.ref(blob), task))
        del blob, payload
    futures = [executor.submit(task) for _, task in closures]
    assert [f.result(STEP) for f in futures] == [i + (1 << 20) for i in range(20)]
    refs = [ref for ref, _ in closures]
    del closures, task, futures
    gc.collect()
    assert [r() for r in refs] == [None] * 20
    assert len(executor.cluster._fns) == 0  # no pickled bytes held for finished tasks


# -- 4. cancel -------------------------------------------------------------------------------


def test_a_future_cancelled_by_hand_is_notified(executor: netlet.Executor) -> None:
    blockers = [executor.submit(tasks.slow_square, 1, 1.5) for _ in range(2)]
    wait_until(lambda: all(b.running() for b in blockers), what="both workers busy")
    # Workers prefetch up to 64 tasks each (they count as running): the 200th waits.
    queued = [executor.submit(tasks.slow_square, 2) for _ in range(200)][-1]
    assert queued.cancel()
    done, not_done = concurrent.futures.wait([queued], timeout=STEP)
    assert done == {queued}
    assert not not_done
    assert list(concurrent.futures.as_completed([queued], timeout=STEP)) == [queued]
    assert [b.result(STEP) for b in blockers] == [1, 1]


# -- 5. map frees results -----------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_holds_no_result_it_yielded(executor: netlet.Executor, chunksize: int) -> None:
    seen = 0
    for blob in executor.map(make_blob, range(7), chunksize=chunksize, timeout=STEP):
        ref = weakref.ref(blob)
        del blob
        gc.collect()
        assert ref() is None, f"result {seen} is still alive inside map"
        seen += 1
    assert seen == 7


# -- 7. clear errors ------------------------------------------------------------------------


def test_a_task_that_kills_its_worker_ends_as_worker_lost(executor: netlet.Executor,
                                                          tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    future = executor.submit(exit_and_record, str(trace))
    with pytest.raises(WorkerLost, match="died"):
        future.result(60)
    assert len(tasks.read_trace(trace)) == 1 + 3  # the first run and max_retries=3 reruns
    assert executor.submit(tasks.add, 1, 2).result(60) == 3  # the pool is not broken


def run_script(body: str, tmp_path: Path, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``body`` as a script in a fresh interpreter, its temp dir in ``tmp_path/tmp``.

    ``tmp_path`` must be short (``short_tmp``): the embedded cluster's sockets live there.
    """
    (tmp_path / "tmp").mkdir(exist_ok=True)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path,
                          env=child_env(TMPDIR=str(tmp_path / "tmp"), **(env or {})))


NO_CLOUDPICKLE = """
        import sys
        sys.modules["cloudpickle"] = None  # as if it were not installed
"""


def test_without_cloudpickle_a_lambda_says_what_to_install(short_tmp: Path) -> None:
    done = run_script(NO_CLOUDPICKLE + """
        import netlet
        from netlet.errors import ConfigError
        with netlet.Executor(1) as ex:
            try:
                ex.submit(lambda: 1)
            except ConfigError as e:
                print("error:", e)
    """, short_tmp)
    assert done.returncode == 0, done.stderr
    assert "error:" in done.stdout
    assert "install netlet[pickle]" in done.stdout


def test_a_function_of_the_script_says_what_to_do(short_tmp: Path) -> None:
    done = run_script(NO_CLOUDPICKLE + """
        import netlet
        from netlet.errors import ConfigError

        def double(x):
            return 2 * x

        class Point:
            pass

        if __name__ == "__main__":
            with netlet.Executor(1) as ex:
                try:
                    ex.submit(double, 2)
                except ConfigError as e:
                    print("function:", e)
                try:
                    ex.submit(id, Point()).result(30)
                except Exception as e:  # the worker cannot decode the argument
                    print("argument:", type(e).__name__, getattr(e, "__notes__", [""])[-1])
    """, short_tmp)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
    for kind in ("function", "argument"):
        assert "defined in your script (__main__)" in lines[kind], done.stdout
        assert "importable module" in lines[kind]


def test_executor_n_is_max_workers() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        netlet.Executor(0)
    with pytest.raises(TypeError, match="max_workers"):
        netlet.Executor(2, 3)


# -- 6. exit --------------------------------------------------------------------------------

EXIT_SCRIPT = """
    import atexit, os, sys
    import netlet
    from tests.cluster import tasks

    trace = sys.argv[0] + ".trace"

    def late():
        try:
            ex.submit(tasks.add, 1, 2)
        except RuntimeError as e:
            print("atexit:", e, flush=True)

    atexit.register(late)
    address = os.environ.get("NETLET_TEST_HEAD")
    if address:
        ex = netlet.Executor(address, key_file=os.environ["NETLET_TEST_KEY_FILE"])
    else:
        ex = netlet.Executor(1)
    ex.submit(tasks.sleep_and_record, trace, 1.0, 7)
    if {shutdown!r}:
        ex.shutdown(wait=False)
    print("main done", flush=True)
"""


@pytest.fixture(params=["embedded", "remote"])
def exit_env(request: pytest.FixtureRequest, cluster_kit: ClusterKit,
             tmp_path: Path) -> dict[str, str]:
    if request.param == "embedded":
        return {}
    key = generate_key()
    key_file = tmp_path / "cluster.key"
    key_file.write_text(key.hex() + "\n")
    key_file.chmod(0o600)
    head = cluster_kit.head(key_file=key_file)
    cluster_kit.worker(head.address, key=key)
    cluster_kit.wait_workers(cluster_kit.client(head.address, key_file=str(key_file)), 1)
    return {"NETLET_TEST_HEAD": head.address, "NETLET_TEST_KEY_FILE": str(key_file)}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shutdown", [False, True], ids=["no-shutdown", "shutdown-nowait"])
def test_exit_waits_for_pending_tasks(short_tmp: Path, exit_env: dict[str, str],
                                      shutdown: bool) -> None:
    tmp_path = short_tmp
    done = run_script(EXIT_SCRIPT.format(shutdown=shutdown), tmp_path, exit_env)
    assert done.returncode == 0, done.stderr
    assert "main done" in done.stdout
    trace = [words[1] for words in tasks.read_trace(tmp_path / "script.py.trace")]
    assert trace == ["started", "finished"], "the pending task did not run to its end"
    assert "atexit: cannot schedule new futures after" in done.stdout
    assert not list((tmp_path / "tmp").glob("netlet-*")), "a netlet-* directory stayed"
    assert "Traceback" not in done.stderr, done.stderr



@pytest.mark.timeout(30)
def test_max_workers_with_an_address_is_only_checked() -> None:
    """docs/cluster.md: with an address, max_workers is checked and the running cluster's
    workers do the work (the doc said it always asked for an embedded cluster)."""
    with pytest.raises(ValueError, match="max_workers"):
        netlet.Executor("tcp://127.0.0.1:1", max_workers=0)
    with pytest.raises(netlet.PeerUnreachable):  # it went to the address, started nothing
        netlet.Executor("tcp://127.0.0.1:1", max_workers=2)
