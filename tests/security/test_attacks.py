"""The handshake attack set (``_attacks.py``) against a keyed node on loopback, plain and TLS.

Replay, reflection, wrong and missing keys, pickle markers, frames before
authentication, oversized frames, bad hellos and slowloris: every one is
refused, no pickle runs, and the control (the key, then a call) is answered.
Under mutual TLS the attacker holds a certificate of the node's own CA (an
insider without the key): the same set is refused by the key; without such a
certificate it does not get past TLS. The chaos suite runs the same set from
another host (``tests/chaos/test_secure.py``).
"""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import netlet
from netlet.transport import TLSConfig, generate_key
from tests.security._attacks import dialer, no_key, run_all, tls_refused

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")]

NodeFactory = Callable[..., netlet.Node]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Our CA (a server and a client certificate) and an attacker's own CA, by ``netlet certs``."""
    pytest.importorskip("cryptography")
    exe = Path(sys.executable).parent / "netlet"
    cmd = [str(exe)] if exe.exists() else [shutil.which("netlet") or "netlet"]
    good, evil = tmp_path_factory.mktemp("pki"), tmp_path_factory.mktemp("evil")
    for d in (good, evil):
        for args in (["init"], ["node", "server"], ["node", "client"]):
            subprocess.run([*cmd, "certs", *args, "--dir", str(d)], check=True, timeout=60,
                           capture_output=True)
    return good, evil


def _tls(d: Path, name: str, *, verify: bool = True) -> TLSConfig:
    return TLSConfig(str(d / f"{name}.pem"), str(d / f"{name}.key"),
                     str(d / "ca.pem") if verify else None, verify=verify)


@pytest.fixture(autouse=True)
def _collect() -> Iterator[None]:
    yield
    gc.collect()  # TLS sockets left to the GC, under this module's filter


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls-insider"])
def test_every_attack_is_refused_and_the_control_gets_in(
        node_factory: NodeFactory, pki: tuple[Path, Path], tmp_path: Path,
        use_tls: bool) -> None:
    key = generate_key()
    server_tls = _tls(pki[0], "server") if use_tls else None
    node = node_factory("tcp://127.0.0.1:0", key=key, tls=server_tls, allow_pickle=True,
                        handshake_timeout=1.0)
    assert node.address is not None
    marker = tmp_path / "unpickled"
    results = run_all(dialer(node.address, _tls(pki[0], "client") if use_tls else None),
                      key, marker, handshake_timeout=1.0)
    *attacks, control = results
    assert len(attacks) >= 25
    accepted = [r.line(node.address) for r in attacks if r.accepted]
    assert accepted == []
    assert control.accepted, control
    assert not marker.exists()


def test_without_a_certificate_of_the_ca_nothing_gets_past_tls(
        node_factory: NodeFactory, pki: tuple[Path, Path]) -> None:
    good, evil = pki
    node = node_factory("tcp://127.0.0.1:0", key=generate_key(), tls=_tls(good, "server"))
    assert node.address is not None
    tries = {"plain TCP": dialer(node.address),
             "a certificate of another CA": dialer(node.address, _tls(evil, "client",
                                                                      verify=False))}
    for how, dial in tries.items():
        result = tls_refused(dial, how)
        assert not result.accepted, result


def test_the_attacker_sees_a_way_in_where_there_is_one_control(
        node_factory: NodeFactory) -> None:
    """A keyless node on loopback takes a call without a key: the attack reports it."""
    node = node_factory("tcp://127.0.0.1:0")
    assert node.address is not None
    (result,) = no_key(dialer(node.address), 0.5)
    assert result.accepted, result
