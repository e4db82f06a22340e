"""Fallacy 2, "latency is zero": 50 ms each way between the client and the head.

The client's host reaches the head only through :mod:`tests.chaos.relay`,
which holds every byte 50 ms in each direction (a 100 ms round trip on top of
the link). The Executor must still pipeline: submitting costs no round trip
and tasks submitted in one turn travel as one message, so tiny tasks go far
faster than one per round trip. Timeouts keep their meaning: ``map(...,
timeout=1.5)`` raises ``TimeoutError`` about 1.5 s after the call (not 1.5 s
plus round trips), and a 2 s task takes 2 s plus about one round trip.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.cluster import HEAD_PORT, start_head, start_worker
from tests.chaos.hosts import Network

DELAY = 0.05
TASKS = 2000


@pytest.mark.timeout(90)
def test_the_executor_pipelines_across_a_100_ms_round_trip(
        network: Callable[..., Network], key_file: Path) -> None:
    net = network()
    head_host, worker_host, client_host = (net.add_host("head"), net.add_host("w1"),
                                           net.add_host("cli"))
    head, address = start_head(head_host, key_file)
    start_worker(worker_host, address, key_file, 2)
    relay = client_host.spawn(sys.executable, "-m", "tests.chaos.relay", "127.0.0.1:0",
                              head_host.ip,
                              str(HEAD_PORT), str(DELAY))
    via = relay.stdout.wait_for(r"^tcp://", timeout=20).string.strip()
    client = client_host.spawn(sys.executable, "-m", "tests.chaos._peers", "pipeline",
                               key_file, via, str(TASKS))
    assert client.wait(60) == 0, client.output()
    figures = json.loads(client.stdout.text().splitlines()[-1])
    rtt, rate = figures["rtt"], figures["tasks"] / figures["seconds"]
    assert rtt >= 2 * DELAY, figures  # the relay really delays
    assert rate >= 10 / rtt, f"{rate:.0f} tasks/s: no better than one per round trip x 10"
    assert figures["map_timeout_after"] is not None, figures
    assert 1.5 <= figures["map_timeout_after"] <= 1.5 + 1.0, figures
    assert figures["task_value"] == 9
    assert 2.0 <= figures["task_seconds"] <= 2.0 + 4 * rtt + 1.0, figures
    print(f"\nFIGURES latency: round trip {rtt * 1000:.0f} ms, {TASKS} tasks in "
          f"{figures['seconds']:.2f} s = {rate:.0f} tasks/s (one per round trip would be "
          f"{1 / rtt:.0f}/s); map(timeout=1.5) raised after {figures['map_timeout_after']:.2f} s;"
          f" a 2 s task took {figures['task_seconds']:.2f} s")
    assert head.alive()
