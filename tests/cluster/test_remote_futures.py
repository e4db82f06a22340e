"""Futures of a client whose head is another process: RUNNING, cancel and results.

With a remote head the client learns that a task started from a message the
head sends when it hands the task to a worker, so these states arrive a
moment after the fact; the tests wait for them as events, never sleep.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from netlet.errors import RemoteError
from tests.cluster import tasks
from tests.cluster.conftest import STEP, ClusterKit, wait_until


def test_a_running_task_reports_running_and_cannot_be_cancelled(
        cluster_kit: ClusterKit, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    _, _, cluster = cluster_kit.start(workers=1)
    future = cluster.submit(tasks.sleep_and_record, str(trace), 0.5, "value")
    wait_until(lambda: tasks.read_trace(trace), STEP, "the task starting")
    wait_until(future.running, STEP, "the future turning RUNNING")

    assert future.cancel() is False
    assert future.result(STEP) == "value"
    assert [words[1] for words in tasks.read_trace(trace)] == ["started", "finished"]


def test_a_queued_task_cancels_and_never_runs(cluster_kit: ClusterKit, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    _, _, cluster = cluster_kit.start(workers=1)
    blocker = cluster.submit(tasks.square_and_record, str(trace), 100, 0.6)
    wait_until(lambda: tasks.read_trace(trace), STEP, "the blocker starting")
    # The worker holds at most its credit beyond the running task: the last of
    # these is still queued at the head.
    queued = [cluster.submit(tasks.square_and_record, str(trace), x) for x in range(4)]
    victim = queued[-1]
    assert not victim.running()

    assert victim.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        victim.result()
    assert blocker.result(STEP) == 100 * 100
    assert [f.result(STEP) for f in queued[:-1]] == [0, 1, 4]
    assert cluster.submit(tasks.square_and_record, str(trace), 7).result(STEP) == 49
    assert [int(words[2]) for words in tasks.read_trace(trace)] == [100, 0, 1, 2, 7]


def test_own_exception_types_arrive_as_remote_error_without_pickle(
        cluster_kit: ClusterKit) -> None:
    # No key, no pickle agreed: the client never unpickles what a worker sends.
    _, _, cluster = cluster_kit.start(workers=1)
    future = cluster.submit(tasks.raise_error, "CustomError", "mine")
    with pytest.raises(RemoteError) as raised:
        future.result(STEP)
    assert raised.value.remote_type == "tests.cluster.tasks.CustomError"
    assert raised.value.message == "mine"
    assert "raise exc_type(message)" in raised.value.remote_traceback
