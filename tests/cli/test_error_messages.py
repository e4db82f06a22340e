"""Errors say what is wrong and where: a busy port names its address, a missing object
names the node it is missing on, a remote traceback has one header, a TLS mismatch says
it is one. Real sockets, real processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netlet import Node, expose
from netlet.errors import NetletError, NoSuchObject
from netlet.transport import TLSConfig, generate_key
from tests._support import STEP, Proc

NETLET = str(Path(sys.executable).parent / "netlet")


@expose
class Service:
    def boom(self) -> None:
        raise ValueError("boom")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NETLET, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_node_on_a_busy_port_names_the_address(busy_port: int) -> None:
    with pytest.raises(OSError, match=rf"cannot listen on tcp://127\.0\.0\.1:{busy_port}: "
                                      r".*in use"):
        Node(listen=f"tcp://127.0.0.1:{busy_port}", key=generate_key())


@pytest.mark.timeout(60)
def test_bank_serve_on_a_busy_port(busy_port: int, tmp_path: Path) -> None:
    result = _run("bank", "serve", "--listen", f"tcp://127.0.0.1:{busy_port}", "--db",
                  str(tmp_path / "bank.db"), "--create")
    assert result.returncode != 0
    assert f"cannot listen on tcp://127.0.0.1:{busy_port}" in result.stderr
    assert "in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_worker_on_a_busy_port_stops(busy_port: int, tmp_path: Path) -> None:
    head = subprocess.Popen([NETLET, "head", "--listen", "tcp://127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        result = _run("worker", "--join", address, "-n", "2", "--listen",
                      f"tcp://127.0.0.1:{busy_port}")
    finally:
        head.terminate()
        head.wait(10)
        if head.stdout is not None:
            head.stdout.close()
    assert result.returncode != 0
    assert f"cannot listen on tcp://127.0.0.1:{busy_port}" in result.stderr
    assert "starting another" not in result.stderr  # no restart loop
    assert "Traceback" not in result.stderr


def test_no_such_object_names_the_remote_node(node_factory: Callable[..., Any]) -> None:
    key = generate_key()
    server = node_factory("tcp://127.0.0.1:0", key=key)
    client = node_factory(key=key, call_timeout=10)
    with pytest.raises(NoSuchObject) as caught:
        client.proxy(server.address, "nothing-here").boom()
    assert f"on node {server.address}" in str(caught.value)
    assert "this node" not in str(caught.value)


def test_remote_traceback_has_one_header(node_factory: Callable[..., Any]) -> None:
    key = generate_key()
    server = node_factory("tcp://127.0.0.1:0", key=key)
    server.serve(Service(), "svc")
    client = node_factory(key=key, call_timeout=10)
    with pytest.raises(ValueError, match="boom") as caught:
        client.proxy(server.address, "svc").boom()
    text = "".join(traceback.format_exception(caught.value))
    assert text.count("Remote traceback (most recent call last):") == 1
    assert text.count("Traceback (most recent call last):") == 1  # ours; the remote one once
    assert "in boom" in text


# -- TLS mismatches -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    for args in (["init", "--dir", "good"], ["node", "server", "--dir", "good"],
                 ["node", "client", "--dir", "good"], ["init", "--dir", "evil"],
                 ["node", "mallory", "--dir", "evil"]):
        subprocess.run([NETLET, "certs", *args[:-1], str(root / args[-1])], check=True,
                       capture_output=True, timeout=60)
    return root


def _tls(certs: Path, ca: str, name: str) -> TLSConfig:
    d = certs / ca
    return TLSConfig(certfile=str(d / f"{name}.pem"), keyfile=str(d / f"{name}.key"),
                     cafile=str(d / "ca.pem"))


def _failure(client: Node, address: str) -> str:
    with pytest.raises(NetletError) as caught:
        client.proxy(address, "svc").boom()
    return str(caught.value)


def test_plain_client_to_a_tls_server(node_factory: Callable[..., Any], certs: Path) -> None:
    key = generate_key()
    server = node_factory("tcp://127.0.0.1:0", key=key, tls=_tls(certs, "good", "server"))
    message = _failure(node_factory(key=key, call_timeout=10), server.address)
    assert "expect TLS" in message


def test_tls_client_to_a_plain_server(node_factory: Callable[..., Any], certs: Path) -> None:
    key = generate_key()
    server = node_factory("tcp://127.0.0.1:0", key=key)
    client = node_factory(key=key, call_timeout=10, tls=_tls(certs, "good", "client"))
    message = _failure(client, server.address)
    assert "TLS" in message
    assert "does not use TLS" in message


def test_tls_with_the_wrong_ca(node_factory: Callable[..., Any], certs: Path) -> None:
    key = generate_key()
    server = node_factory("tcp://127.0.0.1:0", key=key, tls=_tls(certs, "good", "server"))
    client = node_factory(key=key, call_timeout=10, tls=_tls(certs, "evil", "mallory"))
    message = _failure(client, server.address)
    assert "not trusted by our CA" in message



@pytest.mark.timeout(40)
def test_a_worker_waits_for_a_head_that_took_the_connection_but_does_not_answer(
        busy_port: int, tmp_path: Path) -> None:
    """A frozen or overloaded head (the kernel takes the connection, nothing answers) is
    out of reach, not a refusal: the worker keeps trying. It used to exit at once with
    "wrong cluster key" (the handshake's timeout was a HandshakeError)."""
    key = tmp_path / "k.key"
    assert _run("keygen", str(key)).returncode == 0
    worker = Proc.spawn([NETLET, "worker", "--join", f"tcp://127.0.0.1:{busy_port}",
                         "--key-file", key, "-n", "1"])
    try:
        worker.stderr.wait_for(r"cannot join .* did not complete the handshake in 5 s\); "
                               r"retrying", timeout=STEP * 2)
        assert worker.alive()
        assert "wrong cluster key" not in worker.stderr.text()
    finally:
        worker.kill()
