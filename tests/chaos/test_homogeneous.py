"""Fallacy 8, "the network is homogeneous": hosts that speak IPv6 only.

The network has no IPv4 at all (``fd13:213:0:N::/64``, no v4 address on any
host). A head, a worker and a client on three of its hosts: the head
advertises its IPv6 address, the worker joins and serves on its own IPv6
address (it used to probe its route with an IPv4 socket and crash, restarted
for ever by ``netlet worker``), tasks run and their results come back.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.cluster import Observer, start_head, start_worker, worker_nodes
from tests.chaos.hosts import Network


@pytest.mark.timeout(60)
def test_a_cluster_on_ipv6_only_hosts(network: Callable[..., Network], key_file: Path) -> None:
    net = network(6)
    head_host, worker_host, cli = net.add_host("head"), net.add_host("w1"), net.add_host("cli")
    assert "inet " not in head_host.ipcmd("addr", "show", "eth0").stdout  # no IPv4 here
    head, address = start_head(head_host, key_file)
    assert address == head_host.url(7340), address
    worker = start_worker(worker_host, address, key_file)
    with Observer(address, key_file) as obs:  # from the bridge's own IPv6 address
        obs.wait("the worker joined", lambda s: bool(worker_nodes(s, worker.children())),
                 timeout=20)
        [entry] = worker_nodes(obs.status(), worker.children())
    assert entry["address"].startswith(f"tcp://[{worker_host.ip}]:"), entry
    client = cli.spawn(sys.executable, "-m", "tests.chaos._peers", "pipeline", key_file,
                       address, "500")
    assert client.wait(60) == 0, client.output()
    figures = json.loads(client.stdout.text().splitlines()[-1])
    assert figures["task_value"] == 9
    print(f"\nFIGURES homogeneous/ipv6: head at {address}; 500 tasks in "
          f"{figures['seconds']:.2f} s")
    assert head.alive()
