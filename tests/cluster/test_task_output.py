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
from netlet.transport import generate_key
from tests.cluster.conftest import STEP, ClusterKit


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
def test_a_task_that_prints_a_lot_is_cut_at_the_cap(capsys: pytest.CaptureFixture[str]) -> None:
    with netlet.Executor(1) as ex:
        assert ex.submit(shout, "x" * 1000, 5000).result(STEP) == 5000
    out, err = capsys.readouterr()
    assert 4 << 20 <= len(out) + 5000 and len(out) <= 4 << 20
    assert "output past 4194304 characters is dropped" in err
