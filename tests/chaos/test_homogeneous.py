"""Fallacy 8, "the network is homogeneous": hosts that speak IPv6 only.

The network has no IPv4 at all (``fd13:213:0:N::/64``, no v4 address on any
host). A head, a worker and a client on three of its hosts: the head
advertises its IPv6 address, the worker joins and serves on its own IPv6
address (it used to probe its route with an IPv4 socket and crash, restarted
for ever by ``netlet worker``), tasks run and their results come back.

And workers on two Python versions (this one and another, e.g. 3.11 and 3.12,
found or provisioned by :mod:`tests.chaos.pythons`) join the same head and both
take tasks.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from netlet.cluster import Cluster
from tests.chaos.cluster import Observer, start_head, start_worker, worker_nodes
from tests.chaos.hosts import ROOT, Network
from tests.chaos.pythons import other_python
from tests.chaos.tasks import python_version_after
from tests.cluster.tasks import slow_square


@pytest.mark.timeout(60)
def test_a_cluster_on_ipv6_only_hosts(network: Callable[..., Network], key_file: Path) -> None:
    net = network(6)
    head_host, worker_host, cli = net.add_host("head"), net.add_host("w1"), net.add_host("cli")
    assert "inet " not in head_host.ipcmd("addr", "show", "eth0").stdout  # no IPv4 here
    head, address = start_head(head_host, key_file)
    assert address == head_host.url(7340), address
    # What the head and the worker say on stderr names the address whole (rich markup
    # once took "[fd13:...]" for a style tag and printed "tcp://:7340").
    head.stderr.wait_for(rf"listening on {re.escape(address)}", timeout=10)
    worker = start_worker(worker_host, address, key_file)
    worker.stderr.wait_for(rf"joining {re.escape(address)}", timeout=20)
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


@pytest.mark.timeout(360)  # the first run on a machine makes a venv (pip install)
def test_workers_on_two_python_versions_join_one_head(
        network: Callable[..., Network], key_file: Path) -> None:
    other, why = other_python()
    if other is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no other Python version could be found or made: {why}")
        pytest.skip(f"no other Python version could be found or made ({why}); set "
                    "NETLET_CHAOS_PYTHONS=/path/to/python3.12 to name one")
    net = network()
    head_host, w1, w2 = net.add_host("head"), net.add_host("w1"), net.add_host("w2")
    head, address = start_head(head_host, key_file)
    start_worker(w1, address, key_file)
    w2.spawn(other, "-c", "from netlet.cli import main; main(prog_name='netlet')", "worker",
             "--join", address, "--key-file", key_file, "-n", "1",
             env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"})
    with Observer(address, key_file) as obs, Cluster(address, key_file=str(key_file)) as c:
        obs.wait("both workers joined", lambda s: sum(
            n["role"] == "worker" and n["alive"] for n in s["nodes"]) == 2, timeout=20)
        versions = set(c.map(python_version_after, [0.02] * 100))
        results = list(c.map(slow_square, range(100)))
    assert results == [i * i for i in range(100)]
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert mine in versions, versions
    assert len(versions) == 2, f"only {versions} ran tasks"
    print(f"\nFIGURES homogeneous/python: workers on Python {sorted(versions)} took tasks from "
          f"one head")
    assert head.alive()
