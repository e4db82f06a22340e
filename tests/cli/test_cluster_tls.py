"""``netlet head``/``worker``/``status`` under mutual TLS, and a worker in a key rotation.

Real commands on loopback with certificates of a private CA made by ``netlet
certs``: a head and a worker join and run tasks, an object placed on the
worker is called over TLS, and peers without a certificate of that CA (plain
TCP, or a CA of their own) are refused by the head and by the worker's own
listener. Then the worker side of a key rotation (``worker --old-key-file``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import netlet
from netlet.cluster import Cluster
from netlet.transport import TLSConfig, load_key
from tests.cluster.tasks import Counter, add
from tests.conftest import STEP
from tests.security._spawn import Server, Servers, servers

__all__ = ["servers"]  # the fixture, re-exported for pytest

pytestmark = [
    pytest.mark.timeout(90),
    # A node closing a TLS connection may leave its socket to the GC (see
    # tests/security/test_promises_tls.py); not what is tested here.
    pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning"),
]


@pytest.fixture(autouse=True)
def _collect() -> Iterator[None]:
    """Sockets a TLS close left to the GC are collected here, under this module's filter,
    not blamed on a later test."""
    yield
    gc.collect()


@dataclass(frozen=True)
class PKI:
    good: Path
    evil: Path

    def args(self, name: str) -> list[str]:
        """The TLS options of a command holding ``name``'s certificate of the good CA."""
        return ["--tls-cert", str(self.good / f"{name}.pem"),
                "--tls-key", str(self.good / f"{name}.key"), "--tls-ca", str(self.good / "ca.pem")]

    def config(self, name: str, *, evil: bool = False) -> TLSConfig:
        d = self.evil if evil else self.good
        return TLSConfig(str(d / f"{name}.pem"), str(d / f"{name}.key"), str(d / "ca.pem"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """Our CA (a head, a worker, a client) and an attacker's CA (a client), by ``netlet certs``."""
    pytest.importorskip("cryptography")
    made = Servers()
    good, evil = tmp_path_factory.mktemp("pki"), tmp_path_factory.mktemp("evil")
    for d, names in ((good, ("head", "worker", "client")), (evil, ("client",))):
        assert made.run("certs", "init", "--dir", d).returncode == 0
        for name in names:
            done = made.run("certs", "node", name, "--dir", d)
            assert done.returncode == 0, done.stderr
    return PKI(good, evil)


@pytest.fixture
def key_file(servers: Servers, tmp_path: Path) -> Path:
    path = tmp_path / "cluster.key"
    assert servers.run("keygen", path).returncode == 0
    return path


def _workers(cluster: Cluster) -> list[dict[str, object]]:
    return [n for n in cluster.status()["nodes"] if n["role"] == "worker" and n["alive"]]


def _joined(cluster: Cluster, count: int = 1) -> None:
    deadline = time.monotonic() + STEP * 4
    while len(_workers(cluster)) < count:
        assert time.monotonic() < deadline, "the worker did not join"
        time.sleep(0.05)  # polling a condition with a deadline


@pytest.fixture
def tls_cluster(servers: Servers, pki: PKI, key_file: Path) -> Iterator[tuple[Server, Cluster]]:
    key = ["--key-file", str(key_file)]
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0", *key, *pki.args("head"))
    servers.start("worker", "--join", head.address, "-n", "1", *key, *pki.args("worker"),
                  ready=None)
    node = netlet.Node(key=load_key(key_file), tls=pki.config("client"), call_timeout=20)
    cluster = Cluster(head.address, node=node)
    try:
        _joined(cluster)
        yield head, cluster
    finally:
        cluster.close()
        node.close()


def test_a_head_and_a_worker_under_mutual_tls_run_tasks_and_objects(
        tls_cluster: tuple[Server, Cluster], servers: Servers, pki: PKI, key_file: Path) -> None:
    head, cluster = tls_cluster
    assert list(cluster.map(add, range(20), range(20), timeout=30)) == [2 * i for i in range(20)]
    counter = cluster.spawn(Counter, 5)  # placed on the worker, called there directly
    worker_address = _workers(cluster)[0]["address"]
    assert counter.increment(2) == 7
    shown = servers.run("status", "--head", head.address, "--key-file", key_file, "--json",
                        *pki.args("client"))
    assert shown.returncode == 0, shown.stderr
    assert str(worker_address) in shown.stdout
    plain = servers.run("status", "--head", head.address, "--key-file", key_file, timeout=30)
    assert plain.returncode != 0
    assert "TLS" in plain.stderr, plain.stderr


def test_an_executor_and_a_dashboard_source_reach_a_tls_head_with_tls(
        tls_cluster: tuple[Server, Cluster], pki: PKI, key_file: Path) -> None:
    """``Executor(address, tls=...)`` and the remote dashboard's source take the same
    settings as the commands; without them the head refuses both."""
    pytest.importorskip("fastapi")
    from netlet.web import RemoteHead

    head, _ = tls_cluster
    with netlet.Executor(head.address, key_file=str(key_file),
                         tls=pki.config("client")) as ex:
        assert list(ex.map(add, range(5), range(5), timeout=30)) == [0, 2, 4, 6, 8]
    source = RemoteHead(head.address, key=load_key(key_file), tls=pki.config("client"))
    try:
        source.check()
    finally:
        source.close()
    plain = RemoteHead(head.address, key=load_key(key_file), timeout=5)
    try:
        with pytest.raises(netlet.NetletError):
            plain.check()
    finally:
        plain.close()
    with pytest.raises(netlet.ConfigError, match="remote head"):
        netlet.Executor(1, tls=pki.config("client"))


@pytest.mark.parametrize("how", ["plain TCP", "a certificate of another CA"])
def test_a_peer_without_a_certificate_of_the_ca_is_refused_by_head_and_worker(
        tls_cluster: tuple[Server, Cluster], pki: PKI, key_file: Path, how: str) -> None:
    _, cluster = tls_cluster
    worker_address = str(_workers(cluster)[0]["address"])
    tls = None if how == "plain TCP" else pki.config("client", evil=True)
    with netlet.Node(key=load_key(key_file), tls=tls, call_timeout=10) as stranger:
        for address, name in ((cluster.address, "netlet.head"), (worker_address, "netlet.worker")):
            with pytest.raises(netlet.NetletError) as refused:
                stranger.proxy(address, name, timeout=10).names()
            assert not isinstance(refused.value, (netlet.RemoteError, netlet.NoSuchObject,
                                                  netlet.NotExposed)), refused.value
    assert len(_workers(cluster)) == 1  # and the cluster goes on


def test_a_worker_without_tls_does_not_join_a_tls_head(
        servers: Servers, pki: PKI, key_file: Path) -> None:
    key = ["--key-file", str(key_file)]
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0", *key, *pki.args("head"))
    plain = servers.start("worker", "--join", head.address, "-n", "1", *key, ready=None)
    plain.stderr.wait_for("cannot join", STEP * 3)
    node = netlet.Node(key=load_key(key_file), tls=pki.config("client"), call_timeout=20)
    with node, Cluster(head.address, node=node) as cluster:
        assert _workers(cluster) == []


@pytest.mark.parametrize("command", [["head"], ["worker", "--join", "tcp://127.0.0.1:9"],
                                     ["status"]])
def test_a_certificate_without_its_ca_is_refused_by_every_command(
        servers: Servers, pki: PKI, key_file: Path, command: list[str]) -> None:
    done = servers.run(*command, "--key-file", key_file, "--tls-cert", pki.good / "head.pem",
                       "--tls-key", pki.good / "head.key", timeout=30)
    assert done.returncode != 0
    assert "--tls-cert needs --tls-ca" in done.stderr


@pytest.mark.parametrize("command", [["head"], ["worker"], ["status"], ["bank", "serve"],
                                     ["dashboard"]])
def test_every_server_command_lists_the_same_tls_options(
        servers: Servers, command: list[str]) -> None:
    shown = servers.run(*command, "--help").stdout
    for option in ("--tls-cert FILE", "--tls-key FILE", "--tls-ca FILE"):
        assert option in shown, (command, option)


def test_a_worker_moved_to_the_new_key_keeps_the_old_one_for_its_callers(
        servers: Servers, tmp_path: Path) -> None:
    """A worker started with --key-file NEW --old-key-file OLD joins a head still on
    OLD only (the head not restarted yet), and a client still on OLD calls an object
    placed on it directly; the same worker without --old-key-file refuses that client."""
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    for path in (old, new):
        assert servers.run("keygen", path).returncode == 0
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0", "--key-file", old)
    with Cluster(head.address, key=load_key(old)) as client:
        moving = servers.start("worker", "--join", head.address, "-n", "1", "--key-file", new,
                               "--old-key-file", old, ready=None)
        _joined(client)
        counter = client.spawn(Counter, 1)
        assert counter.increment() == 2  # the old key, straight to the moved worker
        moving.proc.terminate()
        moving.proc.wait(STEP)
        deadline = time.monotonic() + STEP * 2
        while _workers(client):
            assert time.monotonic() < deadline, "the worker did not leave"
            time.sleep(0.05)
        moved = servers.start("head", "--listen", "tcp://127.0.0.1:0", "--key-file", new,
                              "--old-key-file", old)  # the head's turn, then a worker on NEW only
        servers.start("worker", "--join", moved.address, "-n", "1", "--key-file", new,
                      ready=None)
    with Cluster(moved.address, key=load_key(old)) as client:
        _joined(client)
        counter = client.spawn(Counter, 1)  # placed through the head, which holds both keys
        with pytest.raises(netlet.AuthenticationError):
            counter.increment()  # the worker holds only NEW: the old-key client is refused


def test_old_key_file_needs_the_new_key(servers: Servers, tmp_path: Path) -> None:
    old = tmp_path / "old.key"
    assert servers.run("keygen", old).returncode == 0
    done = servers.run("worker", "--join", "tcp://127.0.0.1:9", "--old-key-file", old)
    assert done.returncode != 0
    assert "--old-key-file needs --key-file" in done.stderr


def test_a_worker_whose_certificate_the_head_refuses_is_told_why(
        servers: Servers, pki: PKI, key_file: Path) -> None:
    """Under TLS 1.3 the head checks the worker's certificate after the worker's side
    of the TLS handshake is done: the worker then sees only a close, and says what
    that most likely means instead of a bare EOF."""
    key = ["--key-file", str(key_file)]
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0", *key, *pki.args("head"))
    stranger = servers.start(
        "worker", "--join", head.address, "-n", "1", *key, "--tls-cert", pki.evil / "client.pem",
        "--tls-key", pki.evil / "client.key", "--tls-ca", pki.good / "ca.pem", ready=None)
    line = stranger.stderr.wait_for("cannot join", STEP * 3).string
    assert "refused our certificate" in line, line
