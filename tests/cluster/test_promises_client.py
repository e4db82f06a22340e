"""The ``Cluster`` methods docs/cluster.md promises, attacked across real processes.

``cancel_queued()`` says how many it cancelled and those never run;
``wait_pending()`` returns only once every task finished or was cancelled;
``unregister()`` says whether the name existed and takes a spawned actor's
restart policy with it; a task cancelled while a head with ``--state`` is down
stays cancelled when that head comes back. A real head, real workers; each
test takes a few seconds.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

import netlet
from netlet.cluster import Cluster, Head
from netlet.errors import ConfigError, EncodeError
from netlet.node import Node
from netlet.transport import generate_key
from tests.cluster import tasks
from tests.cluster.conftest import STEP, ClusterKit, free_port, wait_until


@pytest.mark.timeout(60)
def test_cancel_queued_counts_what_it_cancelled_and_those_never_run(
        cluster_kit: ClusterKit, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    head = cluster_kit.head()
    cluster = cluster_kit.client(head.address)
    # No worker yet: every task is queued, none can have started.
    queued = [cluster.submit(tasks.square_and_record, str(trace), x) for x in range(5)]

    assert cluster.cancel_queued() == 5
    assert all(f.cancelled() for f in queued)
    assert cluster.cancel_queued() == 0  # nothing left to cancel

    cluster_kit.worker(head.address)
    cluster_kit.wait_workers(cluster, 1)
    after = cluster.submit(tasks.square_and_record, str(trace), 7)
    assert after.result(STEP) == 49
    # One worker runs in queue order: a cancelled task would have run before this one.
    assert [int(x) for _, _, x in tasks.read_trace(trace)] == [7]
    assert cluster.status()["queued"] == 0


@pytest.mark.timeout(60)
def test_wait_pending_returns_once_every_task_finished_or_was_cancelled(
        cluster_kit: ClusterKit) -> None:
    _, _, cluster = cluster_kit.start(workers=1)
    running = cluster.submit(tasks.slow_square, 3, 0.5)
    queued = [cluster.submit(tasks.slow_square, x, 0.3) for x in range(3)]
    wait_until(running.running, STEP, "the first task starting")
    assert queued[-1].cancel()

    cluster.wait_pending()

    assert all(f.done() for f in [running, *queued])
    assert running.result() == 9
    assert [f.result() for f in queued[:-1]] == [0, 1]
    assert queued[-1].cancelled()


@pytest.mark.timeout(60)
def test_unregister_says_whether_the_name_existed_and_drops_the_restart_policy(
        cluster_kit: ClusterKit) -> None:
    head = cluster_kit.head()
    first = cluster_kit.worker(head.address)
    cluster = cluster_kit.client(head.address)
    cluster_kit.wait_workers(cluster, 1)
    # Both actors on the one worker; "control" keeps its policy, "gone" loses it.
    gone = cluster.spawn(tasks.Counter, 1, name="gone", restart="on-failure")
    control = cluster.spawn(tasks.Counter, 2, name="control", restart="on-failure")
    assert gone.pid() == control.pid() == first.pid

    assert cluster.unregister("gone") is True
    assert cluster.unregister("gone") is False
    assert cluster.unregister("never-registered") is False
    assert cluster.lookup("gone") is None

    second = cluster_kit.worker(head.address)
    cluster_kit.wait_workers(cluster, 2)
    first.kill()
    # The control is placed again on the other worker; "gone" must not come back.
    wait_until(lambda: cluster.lookup("control") is not None
               and cluster.actor("control").pid() == second.pid, STEP, "control moving")
    head.stderr.wait_for(r"restarted control")
    assert cluster.lookup("gone") is None
    assert "gone" not in cluster.names()
    assert "restarted gone" not in head.stderr.text()


@pytest.mark.timeout(60)
def test_a_task_cancelled_while_a_stateful_head_is_down_stays_cancelled(
        cluster_kit: ClusterKit, tmp_path: Path) -> None:
    """The head keeps queued tasks in --state; a cancel said while it was away must
    reach it when it is back, or the task runs though ``cancel()`` returned True."""
    trace, state, port = tmp_path / "trace", tmp_path / "head.db", free_port()
    head = cluster_kit.head(port, state=state)
    cluster = cluster_kit.client(head.address)
    by_hand = cluster.submit(tasks.square_and_record, str(trace), 1)
    by_queue = cluster.submit(tasks.square_and_record, str(trace), 2)
    wait_until(lambda: cluster.status()["queued"] == 2, STEP, "both tasks at the head")

    head.kill()
    assert by_hand.cancel()
    assert cluster.cancel_queued() == 1
    assert by_queue.cancelled()

    head = cluster_kit.head(port, state=state)
    head.stderr.wait_for(r"head restored 2 tasks")
    # The client rejoins by itself and must take both tasks back before any worker comes.
    wait_until(lambda: cluster.status()["queued"] == 0, STEP, "the cancels reaching the head")
    cluster_kit.worker(head.address)
    cluster_kit.wait_workers(cluster, 1)
    assert cluster.submit(tasks.square_and_record, str(trace), 3).result(STEP) == 9
    assert [int(x) for _, _, x in tasks.read_trace(trace)] == [3]
    done, _ = concurrent.futures.wait([by_hand, by_queue], timeout=0)
    assert len(done) == 2


@pytest.mark.timeout(60)
def test_spawn_places_an_actor_on_the_least_busy_worker(cluster_kit: ClusterKit) -> None:
    _, workers, cluster = cluster_kit.start(workers=2)
    # Both idle: the one hosting fewer actors.
    first = cluster.spawn(tasks.Counter, name="a").pid()
    assert cluster.spawn(tasks.Counter, name="b").pid() != first

    busy_task = cluster.submit(tasks.pid_after, 5.0)  # the test ends long before it does
    wait_until(busy_task.running, STEP, "the task starting")
    busy = next(w["pid"] for w in cluster_kit.alive_workers(cluster) if w["running"])
    idle = ({w.pid for w in workers} - {busy}).pop()
    # One actor each: not the one running a task.
    assert cluster.spawn(tasks.Counter, name="c").pid() == idle


@pytest.mark.timeout(60)
def test_a_task_too_large_for_a_frame_fails_and_the_client_goes_on(
        cluster_kit: ClusterKit) -> None:
    """PROTOCOL.md: a value larger than max_frame (64 MiB) is an EncodeError when sending.
    A task whose arguments pass it must fail with that error, not be retried as if the
    head were away (the future would never end) nor hold up the tasks behind it."""
    _, _, cluster = cluster_kit.start(workers=1)
    limit = cluster.node.config.transport.limits.max_frame
    with pytest.raises(EncodeError, match="exceeds the limit"):
        cluster.submit(tasks.identity, b"x" * (limit + 1)).result(STEP)
    assert cluster.submit(tasks.add, 1, 2).result(STEP) == 3
    assert cluster.map(tasks.add, [1, 2], [3, 4]) is not None
    assert list(cluster.map(tasks.add, [1, 2], [3, 4])) == [4, 6]


@pytest.mark.timeout(60)
def test_a_head_restarted_without_state_gets_every_task_again_whatever_their_size(
        cluster_kit: ClusterKit) -> None:
    """docs: "the head restarts, without --state: clients reconnect and resubmit every
    task they still wait for". Tasks that together pass one frame (64 MiB) too."""
    port = free_port()
    head = cluster_kit.head(port)
    cluster = cluster_kit.client(head.address)
    limit = cluster.node.config.transport.limits.max_frame
    arg = b"x" * (4 << 20)
    n = limit // len(arg) + 4  # more than one frame's worth, each one far below it
    futures = [cluster.submit("builtins:len", arg) for _ in range(n)]
    wait_until(lambda: cluster.status()["queued"] == n, STEP, f"{n} tasks at the head")

    head.kill()
    cluster_kit.head(port)  # knows nothing: the client must send them all again
    cluster_kit.worker(head.address)
    done, not_done = concurrent.futures.wait(futures, timeout=STEP * 2)
    assert not not_done, f"{len(not_done)} of {n} tasks never came back"
    assert {f.result() for f in done} == {len(arg)}


@pytest.mark.timeout(60)
def test_more_waiting_tasks_than_one_message_holds_ids_for_are_sent_cancelled_and_resumed(
        tmp_path: Path) -> None:
    """A message holds at most ``max_array`` items in a list (1 Mi by default): a million
    tasks waiting in a ``map`` must still be submitted, cancelled with ``cancel_queued()``
    and resumed after a restart of the head. The same, at a small ``max_array``."""
    limits = netlet.Limits(max_array=400)
    key = generate_key()
    port = free_port()

    def start_head() -> Node:
        node = Node(f"tcp://127.0.0.1:{port}", key=key, limits=limits)
        node.serve(Head(node), "netlet.head")
        return node

    head = start_head()
    client = Node(key=key, limits=limits)
    cluster = Cluster(f"tcp://127.0.0.1:{port}", node=client)
    try:
        n = 1000  # no worker: they all wait at the head
        futures = [cluster.submit("builtins:len", "x") for _ in range(n)]
        wait_until(lambda: cluster.status()["queued"] == n, STEP, f"{n} tasks at the head")

        head.close()
        head = start_head()  # knows nothing: the client resumes and resubmits them all
        wait_until(lambda: cluster.status()["queued"] == n, STEP, f"{n} tasks at the new head")

        assert cluster.cancel_queued() == n
        assert cluster.status()["queued"] == 0
        assert all(f.cancelled() for f in futures)
    finally:
        cluster.close()
        client.close()
        head.close()


@pytest.mark.timeout(60)
def test_a_result_too_large_for_a_frame_fails_its_task_and_the_worker_goes_on(
        cluster_kit: ClusterKit) -> None:
    """PROTOCOL.md: "EncodeError: the result cannot be encoded, or is larger than
    max_frame". A task returning more than a frame must fail with it, not wedge its worker
    (which took the refused report for a lost head, rejoined and sent it again, forever)."""
    _, workers, cluster = cluster_kit.start(workers=1)
    limit = cluster.node.config.transport.limits.max_frame
    with pytest.raises(EncodeError, match="cannot be sent"):
        cluster.submit("builtins:bytes", limit).result(STEP)
    assert cluster.submit(tasks.add, 1, 2).result(STEP) == 3  # the same, only worker
    assert workers[0].alive()


@pytest.mark.parametrize("bad", [None, "3", 2.5, -1, True])
def test_max_retries_that_is_not_a_count_is_refused_at_once(bad: object) -> None:
    """docs: max_retries is "how many times a task ... runs again". Given None, the head
    refused every submit and the client, taking that for a lost head, retried forever."""
    with pytest.raises(ConfigError, match="max_retries"):
        Cluster("tcp://127.0.0.1:1", key=generate_key(), max_retries=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_retries"):
        netlet.Executor("tcp://127.0.0.1:1", max_retries=bad)  # type: ignore[arg-type]
