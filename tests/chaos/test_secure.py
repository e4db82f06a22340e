"""Fallacy 4, "the network is secure": an attacker host on the same bridge.

A head, a worker and a bank run keyed on their hosts. Another host on the
same segment dials each of them across the network, with a wrong key and with
no key: every handshake is refused, before any call is decoded, and the
cluster and the bank are unchanged (no member or account appears).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.cluster import Observer, start_head, start_worker, worker_nodes
from tests.chaos.hosts import Network


@pytest.mark.timeout(90)
def test_an_attacker_on_the_bridge_is_refused_by_head_worker_and_bank(
        network: Callable[..., Network], key_file: Path, tmp_path: Path) -> None:
    net = network()
    head_host, worker_host, bank_host, attacker = (
        net.add_host("head"), net.add_host("w1"), net.add_host("bank"), net.add_host("evil"))
    head, address = start_head(head_host, key_file)
    worker = start_worker(worker_host, address, key_file)
    bank = bank_host.netlet("bank", "serve", "--listen", "tcp://0.0.0.0:7350",
                            "--db", tmp_path / "bank.db", "--key-file", key_file)
    bank_address = bank.stdout.wait_for(r"^tcp://", timeout=20).string.strip()
    with Observer(address, key_file) as obs:
        obs.wait("the worker joined", lambda s: bool(worker_nodes(s, worker.children())))
        before = obs.status()
        worker_address = worker_nodes(before, worker.children())[0]["address"]
        assert worker_address.startswith(f"tcp://{worker_host.ip}:")
        probe = attacker.spawn(sys.executable, "-m", "tests.chaos._peers", "attack",
                               key_file, address, worker_address, bank_address)
        assert probe.wait(60) == 0, probe.output()
        after = obs.status()
    *lines, control = probe.stdout.text().splitlines()
    assert len(lines) == 6, probe.output()
    assert all(line.startswith("refused ") for line in lines), probe.output()
    assert control.startswith("ACCEPTED "), probe.output()  # the probe can see a way in
    members = sorted(n["node"] for n in before["nodes"] if n["role"] == "worker")
    assert sorted(n["node"] for n in after["nodes"] if n["role"] == "worker") == members
    listing = bank_host.netlet("bank", "list", "--bank", bank_address, "--key-file", key_file)
    assert listing.wait(30) == 0, listing.output()
    print("\nFIGURES secure: " + "; ".join(line.split(" ", 2)[2] for line in lines))
    assert head.alive()
    assert bank.alive()
