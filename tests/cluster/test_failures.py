"""What a cluster does when its parts fail: real head and worker processes on loopback.

Workers are SIGKILLed mid-map, join mid-job, are paused (SIGSTOP) long enough
to be declared dead and then resumed; the head is SIGKILLed and restarted on
the same port, with and without ``--state``; a task raises; a task kills its
own worker; a worker shows the wrong key.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import signal
from pathlib import Path

import pytest

from netlet.errors import WorkerLost
from netlet.transport import generate_key, write_key
from tests.cluster import tasks
from tests.cluster.conftest import STEP, ClusterKit, free_port, wait_until


def pids_in(trace: Path) -> set[int]:
    return {int(line[0]) for line in tasks.read_trace(trace)}


# -- workers dying and joining ----------------------------------------------------------


@pytest.mark.slow
def test_map_survives_a_worker_killed_midway(cluster_kit: ClusterKit, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    _, workers, cluster = cluster_kit.start(workers=3)
    n = 30
    results = cluster.map(tasks.square_and_record, itertools.repeat(str(trace)), range(n),
                          itertools.repeat(0.1), timeout=STEP * 2)
    got = [next(results) for _ in range(5)]
    ran = pids_in(trace)
    victim = next(w for w in workers if w.pid in ran)  # one that is mid-job
    victim.kill()
    got += list(results)

    assert got == [x * x for x in range(n)]  # every result, once, in order
    runs = tasks.read_trace(trace)
    assert {int(x) for _, _, x in runs} == set(range(n))
    assert victim.pid in {int(p) for p, _, _ in runs}
    survivors = {w.pid for w in workers if w is not victim}
    assert {int(p) for p, _, _ in runs} - {victim.pid} <= survivors
    assert len(cluster_kit.alive_workers(cluster)) == 2


@pytest.mark.slow
def test_worker_joining_midjob_gets_work(cluster_kit: ClusterKit) -> None:
    head, (first,), cluster = cluster_kit.start(workers=1)
    futures = [cluster.submit(tasks.pid_after, 0.2) for _ in range(20)]
    assert futures[0].result(STEP) == first.pid  # the job is under way on one worker
    late = cluster_kit.worker(head.address)

    pids = [f.result(STEP) for f in futures]

    assert set(pids) == {first.pid, late.pid}
    assert pids.count(late.pid) >= 2


# -- the head dying -----------------------------------------------------------------------


def test_head_restarted_workers_rejoin_and_new_jobs_run(cluster_kit: ClusterKit) -> None:
    port = free_port()
    head, workers, cluster = cluster_kit.start(workers=2, port=port)
    assert list(cluster.map(tasks.slow_square, range(4))) == [0, 1, 4, 9]
    before = [cluster.submit(tasks.slow_square, x, 0.2) for x in range(8)]
    assert before[0].result(STEP) == 0

    head.kill()
    head = cluster_kit.head(port)

    # Nobody restarts or tells the workers: they notice and rejoin by themselves.
    cluster_kit.wait_workers(cluster, 2)
    # With no --state the new head knows nothing: the client resubmits what it waits for.
    assert [f.result(STEP) for f in before] == [x * x for x in range(8)]
    pids = set(cluster.map(tasks.pid_after, [0.1] * 8))
    assert pids <= {w.pid for w in workers}
    assert all(w.alive() for w in workers)
    assert list(cluster.map(tasks.slow_square, range(4))) == [0, 1, 4, 9]


@pytest.mark.slow
def test_head_restarted_with_state_loses_no_submitted_task(
        cluster_kit: ClusterKit, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="netlet.cluster")
    state, trace = tmp_path / "head.db", tmp_path / "trace"
    port = free_port()
    head, _, cluster = cluster_kit.start(workers=2, port=port, state=state)
    n = 12
    futures = [cluster.submit(tasks.square_and_record, str(trace), x, 0.3) for x in range(n)]
    wait_until(lambda: sum(f.done() for f in futures) >= 2, STEP, "two results")

    head.kill()
    open_at_kill = sum(not f.done() for f in futures)
    assert open_at_kill > 0, "the job finished before the head was killed"
    head = cluster_kit.head(port, state=state)

    restored = int(head.stderr.wait_for(r"head restored (\d+) tasks").group(1))
    assert restored >= open_at_kill
    # The client does nothing: its futures resolve once the head runs the restored queue.
    _, not_done = concurrent.futures.wait(futures, timeout=STEP * 1.5)
    assert not not_done
    assert [f.result() for f in futures] == [x * x for x in range(n)]
    assert {int(x) for _, _, x in tasks.read_trace(trace)} == set(range(n))
    # ...and they came back from the head's state, not from the client resubmitting them.
    assert not [r for r in caplog.records if "resubmitted" in r.getMessage()]


# -- task failures and retries --------------------------------------------------------------


def test_task_exception_is_returned_not_retried(cluster_kit: ClusterKit, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    _, _, cluster = cluster_kit.start(workers=1)
    future = cluster.submit(tasks.fail_and_record, str(trace), "bad input 42")

    with pytest.raises(ValueError, match="bad input 42") as raised:
        future.result(STEP)
    assert raised.value.args == ("bad input 42",)
    # One worker runs tasks in order: had the failure been retried, it would run before this.
    assert cluster.submit(tasks.identity, "after").result(STEP) == "after"
    assert len(tasks.read_trace(trace)) == 1
    (worker,) = cluster_kit.alive_workers(cluster)
    assert worker["failed"] == 1


def test_worker_death_is_retried_then_worker_lost(cluster_kit: ClusterKit, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    head, workers, _ = cluster_kit.start(workers=3)
    cluster = cluster_kit.client(head.address, max_retries=2)
    future = cluster.submit(tasks.die_and_record, str(trace))

    with pytest.raises(WorkerLost, match="died"):
        future.result(STEP * 1.5)
    runs = tasks.read_trace(trace)
    assert len(runs) == 3  # the first run and max_retries=2 more
    assert pids_in(trace) == {w.pid for w in workers}  # each on another worker
    assert [w.wait() for w in workers] == [-signal.SIGKILL] * 3


@pytest.mark.slow
def test_late_result_from_a_worker_declared_dead_counts_once(
        cluster_kit: ClusterKit, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    head, (paused,), cluster = cluster_kit.start(workers=1)
    calls: list[concurrent.futures.Future[object]] = []
    future = cluster.submit(tasks.sleep_and_record, str(trace), 1.0, "value")
    future.add_done_callback(calls.append)
    wait_until(lambda: tasks.read_trace(trace), STEP, "the task starting")

    paused.signal(signal.SIGSTOP)  # alive, connected, but silent: a partition
    try:
        other = cluster_kit.worker(head.address)
        head.stderr.wait_for(r"worker \w+ is gone \(silent for")
        assert future.result(STEP) == "value"  # re-run on the other worker
    finally:
        paused.signal(signal.SIGCONT)

    # The paused worker finishes the task, reports it late and rejoins; once it runs
    # new work, its late report (sent earlier on the same connection) was handled.
    def paused_runs_again() -> bool:
        return paused.pid in set(cluster.map(tasks.pid_after, [0.05] * 6))

    wait_until(paused_runs_again, STEP, "the paused worker running tasks again")
    runs = tasks.read_trace(trace)
    assert sorted((int(p), what) for p, what in runs) == sorted(
        [(paused.pid, "started"), (paused.pid, "finished"),
         (other.pid, "started"), (other.pid, "finished")])
    assert future.result() == "value"
    assert future.exception() is None
    assert calls == [future]
    assert all(n["failed"] == 0 for n in cluster.status()["nodes"])
    assert "Traceback" not in head.stderr.text()


# -- security -------------------------------------------------------------------------------------


@pytest.mark.parametrize("worker_key", ["wrong", "none"])
def test_worker_with_wrong_key_is_refused(cluster_kit: ClusterKit, tmp_path: Path,
                                          worker_key: str) -> None:
    key_file = tmp_path / "cluster.key"
    key = write_key(key_file)
    head = cluster_kit.head(key_file=key_file)
    intruder = cluster_kit.worker(head.address,
                                  key=generate_key() if worker_key == "wrong" else None)

    assert intruder.wait() != 0
    if worker_key == "wrong":
        intruder.stderr.wait_for(r"^the head refused this worker: .*key")
        head.stderr.wait_for(r"refused connection from tcp://127\.0\.0\.1:\d+")
    else:  # a worker never runs keyless: the head's per-user key is not there (--key-file)
        intruder.stderr.wait_for(r"no cluster key for the head")
    assert "Traceback" not in intruder.stderr.text()

    # The head keeps serving those who hold the key.
    member = cluster_kit.worker(head.address, key=key)
    cluster = cluster_kit.client(head.address, key=key)
    cluster_kit.wait_workers(cluster, 1)
    assert cluster.submit(tasks.pid_after).result(STEP) == member.pid


def test_client_with_key_file_uses_the_key(cluster_kit: ClusterKit, tmp_path: Path) -> None:
    """``Cluster(address, key_file=...)``, as ``netlet status --key-file`` uses it."""
    key_file = tmp_path / "cluster.key"
    key = write_key(key_file)
    head = cluster_kit.head(key_file=key_file)
    member = cluster_kit.worker(head.address, key=key)

    cluster = cluster_kit.client(head.address, key_file=str(key_file))

    cluster_kit.wait_workers(cluster, 1)
    assert cluster.submit(tasks.pid_after).result(STEP) == member.pid
