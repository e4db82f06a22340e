"""The embedded cluster (``netlet.Executor()`` with no address) looking after its workers.

Its worker processes belong to the program: one that dies is replaced (and
its task rerun), Ctrl-C in a terminal is the program's to handle, and closing
a client never leaves a future pending for ever.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import netlet
from netlet.errors import NodeClosed
from tests.cluster import tasks
from tests.cluster.conftest import REPO, STEP, ClusterKit, child_env, wait_until


@pytest.fixture(autouse=True)
def _importable_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # embedded workers import tests.cluster.tasks


def test_a_killed_worker_is_replaced_and_its_task_reruns(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    with netlet.Executor(max_workers=1) as ex:
        future = ex.submit(tasks.sleep_and_record, str(trace), 0.3, "value")
        first = wait_until(lambda: tasks.read_trace(trace), STEP, "the task starting")
        victim = int(first[0][0])
        os.kill(victim, signal.SIGKILL)

        assert future.result(STEP) == "value"  # run again, by the replacement
        runs = tasks.read_trace(trace)
        assert [w[1] for w in runs] == ["started", "started", "finished"]
        replacement = int(runs[-1][0])
        assert replacement != victim
        assert ex.submit(tasks.pid_after).result(STEP) == replacement


def test_closing_a_client_fails_running_futures_and_drops_queued_tasks(
        cluster_kit: ClusterKit, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    _, _, cluster = cluster_kit.start(workers=1)
    running = cluster.submit(tasks.square_and_record, str(trace), 100, 0.5)
    # Running for the client too: its side effect can show before the worker's started
    # notice arrives, and until then close() cancels it as queued (README: cancel()).
    wait_until(lambda: tasks.read_trace(trace) and running.running(), STEP,
               "the first task starting")
    queued = [cluster.submit(tasks.square_and_record, str(trace), x) for x in range(5)]

    cluster.close()

    with pytest.raises(NodeClosed):
        running.result(STEP)  # its result can no longer reach us: never pending for ever
    assert all(f.done() for f in queued)
    observer = cluster_kit.client(cluster.address)
    wait_until(lambda: observer.status()["running"] == 0, STEP, "the running task ending")
    assert observer.status()["queued"] == 0
    # The worker moves on to new work, and ran at most what it had already taken.
    assert observer.submit(tasks.square_and_record, str(trace), 7).result(STEP) == 49
    ran = [int(w[2]) for w in tasks.read_trace(trace)]
    assert ran[0] == 100
    assert ran[-1] == 7
    assert len(ran) <= 4  # 100, what the worker held beyond it (its credit), then 7


PROGRAM = textwrap.dedent("""
    import sys, netlet
    from tests.cluster import tasks
    with netlet.Executor(max_workers=2) as ex:
        futures = [ex.submit(tasks.sleep_and_record, sys.argv[1], 1.0, i) for i in range(2)]
        print("submitted", flush=True)
        try:
            print("results", [f.result() for f in futures], flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
""")


def test_ctrl_c_is_the_programs_to_handle(tmp_path: Path) -> None:
    """SIGINT to the whole process group (a terminal's Ctrl-C): the workers finish
    their tasks, the program's ``with`` block waits for them, everything exits."""
    trace = tmp_path / "trace"
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, str(trace)], cwd=REPO,
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        wait_until(lambda: len(tasks.read_trace(trace)) == 2, STEP, "both tasks starting")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=STEP)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "interrupted" in out
    assert "KeyboardInterrupt" in err
    assert "Fatal Python error" not in err
    runs = tasks.read_trace(trace)
    assert sorted(w[1] for w in runs) == ["finished", "finished", "started", "started"]
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no process of the group is left


def test_an_executor_future_is_never_left_pending_by_shutdown() -> None:
    ex = netlet.Executor(max_workers=1)
    future = ex.submit(tasks.slow_square, 3, 0.2)
    ex.shutdown(wait=True, cancel_futures=True)
    assert future.done()
    assert future.cancelled() or future.result() == 9
    assert isinstance(future, concurrent.futures.Future)


def test_tasks_submitted_just_before_close_leave_with_the_client(
        cluster_kit: ClusterKit) -> None:
    """CI once found a task queued after its client left: the submit was still on
    its way when ``close`` sent the leave, so the head queued it for nobody."""
    head = cluster_kit.head()  # no workers: whatever is queued stays queued
    observer = cluster_kit.client(head.address)
    for _ in range(100):
        cluster = cluster_kit.client(head.address)
        for x in range(50):
            cluster.submit(tasks.square_and_record, "/nonexistent", x)
        cluster.close()
        assert observer.status()["queued"] == 0


@pytest.mark.timeout(60)
def test_wait_workers_is_told_by_the_head_as_each_joins_and_leaves() -> None:
    """What ``Executor(...)`` waits on before it returns (no status polling): ~1 s."""
    from netlet.cluster import EmbeddedCluster

    emb = EmbeddedCluster(1)
    try:
        assert emb.wait_workers(1, STEP)
        assert not emb.wait_workers(2, 0.05)  # only one was started
        emb.add_worker()
        assert emb.wait_workers(2, STEP)
        emb.procs[0].kill()  # it leaves: counted out (its replacement starts 0.1 s later)
        wait_until(lambda: not emb.wait_workers(2, 0), STEP, "the killed worker counted out")
        assert emb.wait_workers(2, STEP)  # and the replacement in
    finally:
        emb.close()


@pytest.mark.timeout(60)
def test_a_client_closed_after_its_shared_node_does_not_raise() -> None:
    """`netlet demo --part primes --time-limit 0.05` on a loaded machine ended in a
    'RuntimeError: Event loop is closed' traceback: the part's embedded cluster (and the
    node the client shares with it) was closed before the tour closed the client."""
    from netlet.cluster import EmbeddedCluster

    emb = EmbeddedCluster(1)
    cluster = netlet.Cluster(emb.address, node=emb.node)
    emb.close()
    cluster.close()  # nothing to drain on a closed loop: it returns quietly


@pytest.mark.timeout(60)
@pytest.mark.parametrize("length", [70, 96])
def test_an_executor_works_under_a_long_temporary_directory(
        monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    # A unix socket's path holds at most 107 bytes. A long TMPDIR (a CI's, a
    # container's) left room for the head's socket but not for the workers' (70),
    # which then failed to listen and were started again for ever, or for neither
    # (96), and the Executor could not start.
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # tmp_path may be longer than `length`
    try:
        deep = base / ("t" * (length - len(str(base)) - 1))
        deep.mkdir()
        monkeypatch.setattr("tempfile.tempdir", str(deep))
        with netlet.Executor(max_workers=1) as ex:
            assert ex.submit(tasks.add, 2, 3).result(STEP) == 5
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(60)
def test_the_default_worker_count_is_the_cpus_the_process_may_use() -> None:
    # As ProcessPoolExecutor from Python 3.13: a process limited to one CPU (taskset,
    # a container's cpuset) starts one worker, not one per CPU of the machine.
    script = textwrap.dedent("""
        import os, netlet
        from netlet.cluster import usable_cpus
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        with netlet.Executor() as ex:
            print(usable_cpus(), len(ex._embedded.procs))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=50, env=child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


@pytest.mark.timeout(60)
def test_terminate_workers_stops_a_running_task_at_once(tmp_path: Path) -> None:
    # As ProcessPoolExecutor.terminate_workers (Python 3.14): no waiting for a task
    # that would run for a minute; the running future fails, the queued one is
    # cancelled, the worker process is gone, and the executor takes no more work.
    trace = tmp_path / "trace"
    ex = netlet.Executor(max_workers=1)
    running = ex.submit(tasks.sleep_and_record, str(trace), 60, "late")
    queued = ex.submit(tasks.add, 1, 2)
    first = wait_until(lambda: tasks.read_trace(trace), STEP, "the task starting")
    worker = int(first[0][0])
    ex.terminate_workers()
    assert queued.cancelled()
    with pytest.raises(NodeClosed):
        running.result(STEP)
    wait_until(lambda: not Path(f"/proc/{worker}").exists()
               or "Z" in Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0],
               STEP, "the worker process to end")
    with pytest.raises(RuntimeError):
        ex.submit(tasks.add, 1, 2)
    ex.shutdown()  # after terminate_workers: nothing left to wait for
