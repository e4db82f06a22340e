"""Fallacy 4, "the network is secure": an attacker host on the same bridge.

A head, a worker and a bank run keyed on their hosts. Another host on the
same segment dials each of them across the network, with a wrong key and with
no key: every handshake is refused, before any call is decoded, and the
cluster and the bank are unchanged (no member or account appears). The same
against a bank under mutual TLS (heads and workers take no certificates on
the command line), with certificates of the attacker's own CA, plain TCP and
a wrong key.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.cluster import Observer, start_head, start_worker, worker_nodes
from tests.chaos.hosts import NETLET, Network


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


@pytest.mark.timeout(90)
def test_an_attacker_on_the_bridge_is_refused_by_a_bank_under_mutual_tls(
        network: Callable[..., Network], key_file: Path, tmp_path: Path) -> None:
    """The bank with TLS (certificates of a private CA, both ends verified) and a key:
    the attacker's certificates from a CA of its own, plain TCP, and the right
    certificate with a wrong key are all refused; the right pair is the control."""
    pytest.importorskip("cryptography")
    good, evil = tmp_path / "pki", tmp_path / "evil"
    for d in (good, evil):
        for args in (["init"], ["node", "bank"], ["node", "client"]):
            made = netlet_cli("certs", *args, "--dir", d)
            assert made.returncode == 0, made.stderr
    net = network()
    bank_host, attacker = net.add_host("bank"), net.add_host("evil")
    bank = bank_host.netlet("bank", "serve", "--listen", "tcp://0.0.0.0:7350",
                            "--db", tmp_path / "bank.db", "--key-file", key_file,
                            "--tls-cert", good / "bank.pem", "--tls-key", good / "bank.key",
                            "--tls-ca", good / "ca.pem")
    address = bank.stdout.wait_for(r"^tcp://", timeout=20).string.strip()
    probe = attacker.spawn(sys.executable, "-m", "tests.chaos._peers", "attack_tls", key_file,
                           good, evil, address)
    assert probe.wait(60) == 0, probe.output()
    *lines, control = probe.stdout.text().splitlines()
    assert len(lines) == 4, probe.output()
    assert all(line.startswith("refused ") for line in lines), probe.output()
    assert control.startswith("ACCEPTED right-cert+right-key"), probe.output()
    print("\nFIGURES secure/tls: " + "; ".join(line.split(" ", 1)[1] for line in lines))
    assert bank.alive()


def netlet_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NETLET, *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)
