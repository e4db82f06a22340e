"""Fallacy 4, "the network is secure": an attacker host on the same bridge.

A head, a worker and a bank run keyed on their hosts; another host on the same
segment attacks all three across the network. First as a netlet client would
(a wrong key, no key), then with issue 10's whole handshake attack set, the
code the loopback suite runs (``tests/security/_attacks.py``): a replayed
handshake and proof, reflected proofs, pickle markers, calls before the hello
and before the proof, oversized frames, bad hellos and slowloris. Nothing is
accepted, no pickle runs, and the cluster and the bank are unchanged (no member
or account appears); an honest handshake from the same host is the control.

The same again with the head, the worker and the bank under mutual TLS
(``--tls-cert --tls-key --tls-ca``): plain TCP and certificates of the
attacker's own CA do not get past TLS, even with the key; with a certificate
of the right CA but no key (an insider) the whole set is refused by the key.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netlet.transport import TLSConfig
from tests.chaos.cluster import Observer, start_head, start_worker, worker_nodes
from tests.chaos.hosts import NETLET, Host, Network, Proc


def _tls_args(pki: Path | None, name: str) -> list[str | Path]:
    if pki is None:
        return []
    return ["--tls-cert", pki / f"{name}.pem", "--tls-key", pki / f"{name}.key",
            "--tls-ca", pki / "ca.pem"]


def _certs(tmp_path: Path) -> tuple[Path, Path]:
    """Our CA (head, worker, bank, client) and the attacker's own (a client), by `netlet certs`."""
    pytest.importorskip("cryptography")
    good, evil = tmp_path / "pki", tmp_path / "evil"
    for d, names in ((good, ("head", "worker", "bank", "client")), (evil, ("client",))):
        for args in (["init"], *(["node", name] for name in names)):
            made = netlet_cli("certs", *args, "--dir", d)
            assert made.returncode == 0, made.stderr
    return good, evil


class _Targets:
    """A head, a worker and a bank on three hosts, keyed, and under TLS if ``pki`` is given."""

    def __init__(self, net: Network, key_file: Path, tmp_path: Path, pki: Path | None) -> None:
        self.key_file, self.pki = key_file, pki
        self.bank_host = net.add_host("bank")
        head_host, worker_host = net.add_host("head"), net.add_host("w1")
        self.head, self.address = start_head(head_host, key_file, *_tls_args(pki, "head"))
        self.worker = start_worker(worker_host, self.address, key_file, 1,
                                   *map(str, _tls_args(pki, "worker")))
        self.bank = self.bank_host.netlet(
            "bank", "serve", "--listen", "tcp://0.0.0.0:7350", "--db", tmp_path / "bank.db",
            "--key-file", key_file, *_tls_args(pki, "bank"))
        self.bank_address = self.bank.stdout.wait_for(r"^tcp://", timeout=20).string.strip()
        tls = None if pki is None else TLSConfig(str(pki / "client.pem"),
                                                 str(pki / "client.key"), str(pki / "ca.pem"))
        self.observer = Observer(self.address, key_file, tls)
        self.observer.wait("the worker joined",
                           lambda s: bool(worker_nodes(s, self.worker.children())))
        self.worker_address = str(worker_nodes(self.observer.status(),
                                               self.worker.children())[0]["address"])
        assert self.worker_address.startswith(f"tcp://{worker_host.ip}:")

    def all(self) -> tuple[str, str, str]:
        return self.address, self.worker_address, self.bank_address

    def state(self) -> tuple[list[str], str]:
        """The cluster's workers and the bank's accounts, as operators see them."""
        status: dict[str, Any] = self.observer.status()
        members = sorted(n["node"] for n in status["nodes"] if n["role"] == "worker")
        listing = self.bank_host.netlet("bank", "list", "--bank", self.bank_address,
                                        "--key-file", self.key_file,
                                        *_tls_args(self.pki, "client"))
        assert listing.wait(30) == 0, listing.output()
        return members, listing.stdout.text()

    def alive(self) -> bool:
        return self.head.alive() and self.bank.alive() and self.worker.alive()


def _lines(probe: Proc, timeout: float = 60) -> list[str]:
    assert probe.wait(timeout) == 0, probe.output()
    return probe.stdout.text().splitlines()


def _attack_all(attacker: Host, targets: _Targets, marker: Path, tls: str) -> list[str]:
    """Run the attack set from ``attacker``; checks it and returns the refusal lines."""
    marker.mkdir()
    probe = attacker.spawn(sys.executable, "-m", "tests.chaos._peers", "attack_all",
                           targets.key_file, marker, tls, *targets.all())
    *lines, seconds = _lines(probe)
    controls = [line for line in lines if " control: " in line]
    refusals = [line for line in lines if " control: " not in line]
    assert len(controls) == 3, probe.output()
    assert all(line.startswith("ACCEPTED ") for line in controls), probe.output()
    assert len(refusals) >= 3 * 25, probe.output()
    assert [line for line in refusals if not line.startswith("refused ")] == [], probe.output()
    assert list(marker.iterdir()) == [], "a pickle ran on a target"
    assert seconds.startswith("seconds "), probe.output()
    loris = [line.split(": ", 1)[1] for line in refusals if " slowloris " in line]
    print(f"\nFIGURES {len(refusals) // 3} attacks x 3 targets{' over TLS' if tls != '-' else ''}"
          f", all refused, in {seconds.split()[1]} s; slowloris: {'; '.join(loris)}")
    return refusals


@pytest.mark.timeout(90)
def test_an_attacker_on_the_bridge_is_refused_by_head_worker_and_bank(
        network: Callable[..., Network], key_file: Path, tmp_path: Path) -> None:
    net = network()
    targets = _Targets(net, key_file, tmp_path, None)
    attacker = net.add_host("evil")
    with targets.observer:
        before = targets.state()
        probe = attacker.spawn(sys.executable, "-m", "tests.chaos._peers", "attack",
                               key_file, *targets.all())
        *lines, control = _lines(probe)
        assert len(lines) == 6, probe.output()
        assert all(line.startswith("refused ") for line in lines), probe.output()
        assert control.startswith("ACCEPTED "), probe.output()  # the probe can see a way in
        print("\nFIGURES secure: " + "; ".join(line.split(" ", 2)[2] for line in lines))
        _attack_all(attacker, targets, tmp_path / "marker", "-")
        assert targets.state() == before
    assert targets.alive()


@pytest.mark.timeout(120)
def test_an_attacker_on_the_bridge_is_refused_by_head_worker_and_bank_under_mutual_tls(
        network: Callable[..., Network], key_file: Path, tmp_path: Path) -> None:
    """Certificates of a private CA, both ends verified, and the key: the attacker's
    certificates from a CA of its own, plain TCP, and the right certificate with a
    wrong key (or none) are all refused; the right pair is the control."""
    good, evil = _certs(tmp_path)
    net = network()
    targets = _Targets(net, key_file, tmp_path, good)
    attacker = net.add_host("evil")
    with targets.observer:
        before = targets.state()
        probe = attacker.spawn(sys.executable, "-m", "tests.chaos._peers", "attack_tls",
                               key_file, good, evil, *targets.all())
        lines = _lines(probe)
        assert len(lines) == 3 * 5, probe.output()
        controls = [line for line in lines if line.startswith(("ACCEPTED ", "refused "))
                    and line.split()[1] == "right-cert+right-key"]
        assert len(controls) == 3, probe.output()
        assert all(line.startswith("ACCEPTED ") for line in controls), probe.output()
        refusals = [line for line in lines if line not in controls]
        assert all(line.startswith("refused ") for line in refusals), probe.output()
        print("\nFIGURES secure/tls: " + "; ".join(line.split(" ", 1)[1] for line in refusals))
        _attack_all(attacker, targets, tmp_path / "marker", f"{good}:{evil}")
        assert targets.state() == before
    assert targets.alive()


def netlet_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NETLET, *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)
