"""``netlet head``, ``netlet worker`` and ``netlet status`` run as real commands."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
import pytest

from netlet.cli import main
from netlet.errors import NetletError
from netlet.transport import write_key
from tests.cluster import tasks
from tests.cluster.conftest import (
    STEP,
    ClusterKit,
    child_env,
    free_port,
    netlet_command,
    wait_until,
)

T = TypeVar("T")

COMMANDS = main.list_commands(click.Context(main))


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help(cluster_kit: ClusterKit, command: str) -> None:
    result = cluster_kit.run(*filter(None, [command, "--help"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: netlet {command}".rstrip())
    assert result.stderr == ""
    if not command:
        for name in ("head", "worker", "status"):
            assert name in result.stdout


def test_head_on_a_port_in_use_exits_with_a_clear_message(cluster_kit: ClusterKit) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cluster_kit.run("head", "--listen", f"tcp://127.0.0.1:{port}", timeout=STEP)
    assert result.returncode != 0
    assert f"cannot listen on tcp://127.0.0.1:{port}" in result.stderr
    assert "in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_against_a_dead_address_exits_non_zero(cluster_kit: ClusterKit) -> None:
    port = free_port()
    result = cluster_kit.run("status", "--head", f"tcp://127.0.0.1:{port}", timeout=STEP)
    assert result.returncode != 0
    assert f"cannot reach the head at tcp://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_status_lists_workers_and_names(cluster_kit: ClusterKit) -> None:
    head, workers, cluster = cluster_kit.start(workers=2)
    cluster.spawn(tasks.Counter, name="counter")
    addresses = {n["address"] for n in cluster_kit.alive_workers(cluster)}

    result = cluster_kit.run("status", "--head", head.address, "--json")

    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    listed = [n for n in info["nodes"] if n["role"] == "worker" and n["alive"]]
    assert {n["address"] for n in listed} == addresses
    assert len(listed) == len(workers)
    assert "counter" in info["names"]
    assert {"queued", "running", "head"} <= set(info)

    table = cluster_kit.run("status", "--head", head.address)
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("worker") >= 2
    assert "counter" in table.stdout


def test_status_with_a_key_file(cluster_kit: ClusterKit, tmp_path: Path) -> None:
    key_file = tmp_path / "cluster.key"
    key = write_key(key_file)
    head = cluster_kit.head(key_file=key_file)
    cluster_kit.worker(head.address, key=key)
    cluster = cluster_kit.client(head.address, key=key)
    cluster_kit.wait_workers(cluster, 1)

    refused = cluster_kit.run("status", "--head", head.address)
    assert refused.returncode != 0
    assert "cannot reach the head" in refused.stderr
    assert "Traceback" not in refused.stderr

    result = cluster_kit.run("status", "--head", head.address, "--key-file", str(key_file),
                             "--json")
    assert result.returncode == 0, result.stderr
    assert [n["role"] for n in json.loads(result.stdout)["nodes"]
            if n["role"] == "worker" and n["alive"]] == ["worker"]


def test_worker_command_runs_and_restarts_workers(cluster_kit: ClusterKit) -> None:
    head = cluster_kit.head()
    supervisor = cluster_kit.spawn([*netlet_command(), "worker", "--join", head.address,
                                    "-n", "2"], name="netlet worker")
    cluster = cluster_kit.client(head.address)
    cluster_kit.wait_workers(cluster, 2)
    pids = set(cluster.map(tasks.pid_after, [0.1] * 6))
    assert pids <= set(supervisor.descendants())

    victim = pids.pop()
    os.kill(victim, signal.SIGKILL)
    supervisor.stderr.wait_for(rf"worker {victim} exited with -9; starting another")
    cluster_kit.wait_workers(cluster, 2)
    assert victim not in set(cluster.map(tasks.pid_after, [0.1] * 6))

    children = supervisor.descendants()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    assert "Traceback" not in supervisor.stderr.text()
    wait_until(lambda: not cluster_kit.alive_workers(cluster), STEP, "the workers leaving")
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()
                and "zombie" not in Path(f"/proc/{pid}/status").read_text()]


def test_head_stops_cleanly_on_sigterm(cluster_kit: ClusterKit) -> None:
    head, _, cluster = cluster_kit.start(workers=1)
    assert cluster.submit(tasks.add, 1, 2).result(STEP) == 3

    head.signal(signal.SIGTERM)

    assert head.wait() == 0
    assert "Traceback" not in head.stderr.text()



def test_head_survives_its_log_reader_going_away(cluster_kit: ClusterKit) -> None:
    """``netlet head 2>&1 | tee log`` and tee dies: the head must keep serving."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([*netlet_command(), "head", "--listen", "tcp://127.0.0.1:0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=write_end,
                            text=True, env=child_env())
    os.close(write_end)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://127.0.0.1:")
        worker = cluster_kit.worker(address)
        cluster = cluster_kit.client(address)
        cluster_kit.wait_workers(cluster, 1)

        os.close(read_end)  # nobody reads the head's log any more
        read_end = -1
        worker.kill()  # the head logs a warning about it

        def still_serving(call: Callable[[], T]) -> T:
            try:
                return call()
            except NetletError as e:
                pytest.fail(f"the head stopped serving once its stderr went away: {e!r}")

        wait_until(lambda: not [n for n in still_serving(cluster.status)["nodes"]
                                if n["role"] == "worker" and n["alive"]],
                   STEP, "the head noticing the dead worker")
        # A new connection: its handshake runs on the head's event loop.
        newcomer = still_serving(lambda: cluster_kit.client(address))
        cluster_kit.worker(address)
        cluster_kit.wait_workers(newcomer, 1)
        assert newcomer.submit(tasks.add, 2, 2).result(STEP) == 4
        assert proc.poll() is None
    finally:
        if read_end >= 0:
            os.close(read_end)
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
