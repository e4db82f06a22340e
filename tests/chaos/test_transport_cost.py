"""Fallacy 7, "transport cost is zero": what each task, call and channel value costs on the wire.

The client's host has a link of its own, so its interface counters (packets
and bytes, each way; read in its namespace from ``/sys/class/net/eth0``) count
exactly what it exchanged with the head and a served node, TCP headers and
acknowledgements included. In steady state, with the Executor's batching, a
task costs at most one packet each way (tasks submitted in one turn travel as
one message; results come back batched). A blocking call and a remote
channel send each pay a round trip: about one packet each way, plus a bare
ACK at times.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.cluster import start_head, start_worker
from tests.chaos.hosts import Network

N = 2000


@pytest.mark.timeout(90)
def test_packets_and_bytes_per_task_call_and_channel_value(
        network: Callable[..., Network], key_file: Path) -> None:
    net = network()
    head_host, worker_host, server_host, cli = (net.add_host("head"), net.add_host("w1"),
                                                net.add_host("srv"), net.add_host("cli"))
    head, address = start_head(head_host, key_file)
    start_worker(worker_host, address, key_file, 2)
    server = server_host.spawn(sys.executable, "-m", "tests.chaos._peers", "serve", key_file,
                               "7400")
    served = server.stdout.wait_for(r"^tcp://", timeout=20).string.strip()
    client = cli.spawn(sys.executable, "-m", "tests.chaos._peers", "cost", key_file, address,
                       served, str(N))
    assert client.wait(60) == 0, client.output()
    figures = json.loads(client.stdout.text().splitlines()[-1])
    tx_packets, _, rx_packets, _ = figures["task"]
    assert tx_packets <= 1.0, figures
    assert rx_packets <= 1.0, figures
    for what in ("call", "channel value"):
        out, _, back, _ = figures[what]
        assert out <= 2.0, figures
        assert back <= 2.0, figures
    print("\nFIGURES transport cost (per item, out/back): " + "; ".join(
        f"{what}: {p_out:.2f}/{p_back:.2f} packets, {b_out:.0f}/{b_back:.0f} bytes"
        for what, (p_out, b_out, p_back, b_back) in figures.items()))
    assert head.alive()
