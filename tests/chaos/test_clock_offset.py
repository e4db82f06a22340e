"""Clocks that disagree: workers and a client whose clocks are far off the head's.

One worker host runs in a time namespace whose monotonic clock is 10^6 s
(11.6 days) ahead, with its wall clock faked a day ahead; another's wall clock
is a day behind; the client's wall clock is an hour ahead. netlet's leases,
heartbeats, keepalive and timeouts are measured on each process's own
monotonic clock and never compared across hosts, so nothing notices: both
workers take tasks, every result is exact, and the client's ``map`` timeout
still fires after the time it asked for.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.cluster import Observer, start_head
from tests.chaos.hosts import ROOT, Network

CLOCK = Path(__file__).parent / "clock"
DAY = 86_400


def _skewed(offset: float) -> dict[str, str]:
    return {"PYTHONPATH": f"{CLOCK}:{ROOT}", "NETLET_CHAOS_CLOCK_OFFSET": str(offset)}


@pytest.mark.timeout(60)
def test_hosts_whose_clocks_disagree_run_tasks_exactly(
        network: Callable[..., Network], key_file: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare for a time namespace")
    net = network()
    head_host, w1, w2, cli = (net.add_host("head"), net.add_host("w1"), net.add_host("w2"),
                              net.add_host("cli"))
    clocks = w1.run("unshare", "--time", "--monotonic", "1000000", sys.executable, "-c",
                    "import time; print(time.time(), time.monotonic())", env=_skewed(DAY))
    wall, mono = map(float, clocks.stdout.split())
    assert wall - time.time() > DAY - 60, clocks  # the fakes really are in place
    assert mono - time.monotonic() > 1_000_000 - 60, clocks
    head, address = start_head(head_host, key_file)
    worker_args = ("-c", "from netlet.cli import main; main(prog_name='netlet')", "worker",
                   "--join", address, "--key-file", key_file, "-n", "1")
    w1.spawn("unshare", "--time", "--monotonic", "1000000", sys.executable, *worker_args,
             env=_skewed(DAY))
    w2.spawn(sys.executable, *worker_args, env=_skewed(-DAY))
    with Observer(address, key_file) as obs:
        obs.wait("both workers joined", lambda s: sum(
            n["role"] == "worker" and n["alive"] for n in s["nodes"]) == 2, timeout=20)
        client = cli.spawn(sys.executable, "-m", "tests.chaos._peers", "pipeline", key_file,
                           address, "400", env=_skewed(3600))
        assert client.wait(40) == 0, client.output()
        status: dict[str, Any] = obs.status()
    figures = json.loads(client.stdout.text().splitlines()[-1])
    assert figures["task_value"] == 9
    assert 1.5 <= figures["map_timeout_after"] <= 2.5, figures
    done = sorted(n["done"] for n in status["nodes"] if n["role"] == "worker")
    assert len(done) == 2, status
    assert done[0] > 0, f"a skewed worker took no task: {done}"
    ages = [n["heartbeat_age"] for n in status["nodes"] if n["role"] == "worker"]
    assert max(ages) < 2.0, ages
    print(f"\nFIGURES clock offset: tasks per worker {done} (clocks +1 day/+10^6 s monotonic "
          f"and -1 day); map(timeout=1.5) raised after {figures['map_timeout_after']:.2f} s on "
          f"a client an hour ahead; heartbeat ages {[round(a, 2) for a in ages]} s")
    assert head.alive()
