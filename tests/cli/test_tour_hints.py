"""The tour's closing hints ("the same on several machines") work as printed.

Each printed command runs for real on this machine, with the host ``A``
replaced by 127.0.0.1, the head's port by a free one, the key file by its
path in a temporary directory, and the prime search's end made small; nothing
else changes.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from netlet.apps.tour._cli import _ELSEWHERE
from tests.cluster.conftest import (  # the fixture, too
    ClusterKit,
    child_env,
    cluster_kit,  # noqa: F401
    free_port,
    netlet_command,
)

pytestmark = pytest.mark.timeout(120)


def _words(command: str, port: int, where: Path) -> list[str]:
    command = command.split("  #")[0].replace("tcp://A:7340", f"tcp://127.0.0.1:{port}")
    command = command.replace("cluster.key", str(where / "cluster.key"))
    command = command.replace(":7340", f":{port}").replace("10**10", "10**5")
    words = shlex.split(command)
    assert words[0] == "netlet", command
    return [*netlet_command(), *words[1:]]


def test_cluster_and_primes_hints_run_as_printed(cluster_kit: ClusterKit,  # noqa: F811
                                                 tmp_path: Path) -> None:
    port = free_port()
    steps = _ELSEWHERE["cluster"] + _ELSEWHERE["primes"]
    hosts = {host for host, _ in steps}
    assert hosts <= {"A", "B,C", "any"}
    shell = [(h, c) for h, c in steps if c.startswith("netlet ")]
    python = [c for _, c in steps if not c.startswith("netlet ")]

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path,
                              env=child_env(), timeout=60, check=False)

    keygen, head, worker, primes = shell
    assert run(_words(keygen[1], port, tmp_path)).returncode == 0
    assert (tmp_path / "cluster.key").exists()
    head_proc = cluster_kit.spawn(_words(head[1], port, tmp_path), name="head")
    head_proc.stdout.wait_for(rf"^tcp://\S+:{port}$")
    cluster_kit.spawn(_words(worker[1], port, tmp_path), name="worker")

    # The Python hint, as printed, with A replaced.
    (line,) = python
    expression = line.replace("tcp://A:7340", f"tcp://127.0.0.1:{port}").replace(
        '"cluster.key"', repr(str(tmp_path / "cluster.key")))
    script = (f"import netlet, operator\nex = {expression}\n"
              "print(ex.submit(operator.mul, 6, 7).result(60))\nex.shutdown()\n")
    done = run([sys.executable, "-c", script])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"

    out = run([*_words(primes[1], port, tmp_path), "--json"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["count"] == 9592  # pi(10^5)


def test_tour_says_how_to_get_netlet_on_path() -> None:
    source = Path(__file__).resolve().parents[2] / "src/netlet/apps/tour/_cli.py"
    assert re.search(r"source .*activate", source.read_text())
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "source .venv/bin/activate" in readme
    assert "pip install ." in readme
