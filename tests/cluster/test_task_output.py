"""What a task prints reaches the client that submitted it (``log_to_driver``), and only it.

The embedded ``Executor`` does it by default, unprefixed (as a process pool's
children print); a remote one when asked, each line behind the worker's name.
The tasks below are imported by the workers from this module.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

import netlet
from netlet.cluster import Cluster, Head
from netlet.cluster._member_messages import JoinInfo, TaskOutput
from netlet.node import Node
from netlet.transport import generate_key
from tests.cluster import tasks
from tests.cluster.conftest import STEP, ClusterKit, wait_until


def shout(text: str, lines: int = 1, err: str = "") -> int:
    for i in range(lines):
        print(f"{text} {i}")
    if err:
        print(err, file=sys.stderr)
    return lines


@pytest.mark.timeout(60)
def test_embedded_output_reaches_the_clients_sys_stdout(
        capsys: pytest.CaptureFixture[str]) -> None:
    # capsys sees sys.stdout, not file descriptor 1: a worker printing on the
    # descriptor it inherited would not show here (nor in a notebook).
    with netlet.Executor(2) as ex:
        assert ex.submit(shout, "apple", 2, "pear").result(STEP) == 2
    out, err = capsys.readouterr()
    assert out == "apple 0\napple 1\n"
    assert err == "pear\n"


@pytest.mark.timeout(60)
def test_remote_output_is_prefixed_with_the_worker_and_opt_in(
        cluster_kit: ClusterKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = generate_key()
    key_file = tmp_path / "cluster.key"
    key_file.write_text(key.hex() + "\n")
    key_file.chmod(0o600)
    head = cluster_kit.head(key_file=key_file)
    worker = cluster_kit.worker(head.address, key=key)
    cluster_kit.wait_workers(cluster_kit.client(head.address, key_file=str(key_file)), 1)

    with netlet.Executor(head.address, key_file=str(key_file)) as quiet:
        assert quiet.submit(shout, "quiet").result(STEP) == 1
    worker.stdout.wait_for(r"^quiet 0$")  # not asked for: it stays on the worker
    assert capsys.readouterr() == ("", "")

    with netlet.Executor(head.address, key_file=str(key_file), log_to_driver=True) as loud:
        futures = [loud.submit(shout, f"line{i}", 3, "oops") for i in range(4)]
        assert [f.result(STEP) for f in futures] == [3] * 4
    out, err = capsys.readouterr()
    name = f"({socket.gethostname()}-{worker.pid}) "  # the worker's name: host-pid
    assert sorted(out.splitlines()) == sorted(
        f"{name}line{i} {j}" for i in range(4) for j in range(3))
    assert err.splitlines() == [f"{name}oops"] * 4


@pytest.mark.timeout(60)
def test_the_head_logs_each_failed_task(cluster_kit: ClusterKit) -> None:
    head, workers, cluster = cluster_kit.start(workers=1)
    future = cluster.submit(tasks.raise_error, "KeyError", "nope")
    with pytest.raises(KeyError):
        future.result(STEP)
    line = head.stderr.wait_for(r"task \S+ failed: .*").group(0).strip()
    assert future.task_id in line  # type: ignore[attr-defined]
    assert "function tests.cluster.tasks:raise_error" in line
    assert f"worker {socket.gethostname()}-{workers[0].pid} (" in line
    assert line.endswith("KeyError")


@pytest.mark.timeout(60)
def test_a_task_that_prints_a_lot_is_cut_at_the_cap(capsys: pytest.CaptureFixture[str]) -> None:
    with netlet.Executor(1) as ex:
        assert ex.submit(shout, "x" * 1000, 5000).result(STEP) == 5000
    out, err = capsys.readouterr()
    assert len(out) > (4 << 20) - 2000  # up to the cap, less a line cut short
    assert len(out) <= 4 << 20
    assert "output past 4194304 characters is dropped" in err


def test_only_the_worker_holding_a_task_prints_for_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    key = generate_key()
    head_node = Node(listen="tcp://127.0.0.1:0", key=key)
    nodes = [head_node]
    try:
        head_node.serve(Head(head_node), "netlet.head")
        assert head_node.address is not None
        client = Cluster(head_node.address, key=key, log_to_driver=True, log_prefix="")
        future = client.submit(shout, "never runs")
        holder, other = (Node(key=key) for _ in range(2))
        nodes += [holder, other]
        heads, epochs = [], []
        for n in (holder, other):
            proxy = n.proxy(head_node.address, "netlet.head")
            epochs.append(proxy.join(n.id, "worker", JoinInfo(n.id[:8], "", 1, "", 1), None).epoch)
            heads.append(proxy)
        batch = wait_until(lambda: list(heads[0].pull(holder.id, epochs[0], 1).rows()), STEP,
                           "the task handed out")
        tid, lease = batch[0][0], batch[0][3]
        assert tid == future.task_id  # type: ignore[attr-defined]

        heads[1].task_output(other.id, TaskOutput([tid], [lease], [1], ["stolen lease\n"]))
        heads[0].task_output(holder.id, TaskOutput([tid], ["0" * 24], [1], ["wrong lease\n"]))
        with pytest.raises(PermissionError):  # and nobody speaks for another node
            heads[1].task_output(holder.id, TaskOutput([tid], [lease], [1], ["as the holder\n"]))
        heads[0].task_output(holder.id, TaskOutput([tid], [lease], [1], ["the holder\n"]))
        out = wait_until(lambda: capsys.readouterr().out, STEP, "the holder's line")
        assert out == "the holder\n"
        client.close()
    finally:
        for n in nodes:
            n.close()
