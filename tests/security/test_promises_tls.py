"""SECURITY.md: TLS "traffic is encrypted and integrity-protected". A wiretap tries to break it.

A byte relay sits between a client and a node (a man in the middle on the
path: it sees and can change every TCP byte). It records what passes and can
flip one byte of what the server sends. Over TLS the call's distinctive
payload never appears on the wire, and a flipped byte fails the call instead
of handing the client a changed value. The controls run the same calls
without TLS: the payload is then in plain sight and the flipped byte arrives
as a changed value, so the relay really sees and changes the traffic.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import netlet
from netlet.errors import NetletError
from netlet.transport import TLSConfig

pytestmark = [
    pytest.mark.timeout(60),
    # A node closing a TLS connection starts the TLS shutdown and may stop its loop
    # before the peer's close_notify: the socket under it is then left to the GC
    # (reported as a defect; not the promise tested here). Collected in teardown.
    pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning"),
]


@netlet.expose
class Echo:
    def echo(self, value: Any) -> Any:
        return value


class ByteRelay:
    """Forwards TCP connections to ``upstream`` byte for byte, keeping a copy of every byte.

    ``tamper(chunk)``, when set, may return a changed server -> client chunk.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("tcp://").rpartition(":")
        self.upstream = (host, int(port))
        self.seen = bytearray()
        self.tamper: Callable[[bytes], bytes] | None = None
        self.tampered = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, name="byte-relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._server.accept()
                up = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                return
            up.settimeout(None)
            with self._lock:
                self._socks += [down, up]
            threading.Thread(target=self._pump, args=(down, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while chunk := src.recv(65536):
                with self._lock:
                    self.seen += chunk
                    tamper = self.tamper if from_server else None
                if tamper is not None:
                    changed = tamper(chunk)
                    if changed != chunk:
                        with self._lock:
                            self.tampered += 1
                            self.tamper = None  # one change is enough
                        chunk = changed
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def saw(self, needle: bytes) -> bool:
        with self._lock:
            return needle in self.seen

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for s in self._socks:
                s.close()


@dataclass(frozen=True)
class PKI:
    server: TLSConfig
    client: TLSConfig


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A private CA and two node certificates, made by the real ``netlet certs`` command."""
    pytest.importorskip("cryptography")
    d = tmp_path_factory.mktemp("pki")
    exe = Path(sys.executable).parent / "netlet"
    cmd = [str(exe)] if exe.exists() else [shutil.which("netlet") or "netlet"]
    for args in (["init"], ["node", "server"], ["node", "client"]):
        subprocess.run([*cmd, "certs", *args, "--dir", str(d)], check=True, timeout=60,
                       capture_output=True)

    def tls(name: str) -> TLSConfig:
        return TLSConfig(certfile=str(d / f"{name}.pem"), keyfile=str(d / f"{name}.key"),
                         cafile=str(d / "ca.pem"))

    return PKI(tls("server"), tls("client"))


Through = Callable[[TLSConfig | None, TLSConfig | None], tuple[ByteRelay, Any]]


@pytest.fixture
def through() -> Iterator[Through]:
    """``through(server_tls, client_tls)``: a relay in front of an echo node, and a proxy via it.

    Closed client first, then server, then relay, so every TLS session ends cleanly.
    """
    made: list[tuple[netlet.Node, netlet.Node, ByteRelay]] = []

    def make(server_tls: TLSConfig | None,
             client_tls: TLSConfig | None) -> tuple[ByteRelay, Any]:
        server = netlet.Node("tcp://127.0.0.1:0", tls=server_tls)
        server.serve(Echo(), "echo")
        assert server.address is not None
        relay = ByteRelay(server.address)
        client = netlet.Node(tls=client_tls, call_timeout=5)
        made.append((client, server, relay))
        return relay, client.proxy(relay.address, "echo")

    yield make
    for client, server, relay in made:
        client.close()
        server.close()
        relay.close()
    gc.collect()  # under this module's filter, not blamed on a later test


def _secret() -> bytes:
    return b"SECRET-PAYLOAD-" + os.urandom(16).hex().encode() + b"-END"


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain-control", "tls"])
def test_a_wiretap_sees_the_payload_only_without_tls(
        pki: PKI, through: Through, use_tls: bool) -> None:
    relay, echo = through(pki.server if use_tls else None, pki.client if use_tls else None)
    sent, text = _secret(), "TEXT-" + os.urandom(16).hex()
    assert echo.echo(sent) == sent                  # a blocking call
    assert echo.echo.future(text).result(10) == text  # and one on the main link
    assert len(relay.seen) > 2 * len(sent)  # both calls went through the relay
    if use_tls:
        assert not relay.saw(sent)
        assert not relay.saw(text.encode())
        assert not relay.saw(b"netlet")  # not even the hello's keys are readable
    else:
        assert relay.saw(sent)
        assert relay.saw(text.encode())
        assert relay.saw(b"netlet")


def _flip_in_secret(secret: bytes) -> Callable[[bytes], bytes]:
    def tamper(chunk: bytes) -> bytes:
        at = chunk.find(secret)
        if at < 0:
            return chunk
        i = at + len(secret) // 2
        return chunk[:i] + bytes([chunk[i] ^ 0x01]) + chunk[i + 1:]
    return tamper


def _flip_in_big_record(chunk: bytes) -> bytes:
    """Flip a byte in the middle of a chunk big enough to be the encrypted reply."""
    if len(chunk) < 2000:
        return chunk
    i = len(chunk) // 2
    return chunk[:i] + bytes([chunk[i] ^ 0x01]) + chunk[i + 1:]


def test_a_flipped_byte_changes_a_plain_reply_control(through: Through) -> None:
    relay, echo = through(None, None)
    assert echo.echo(b"warm up") == b"warm up"
    sent = _secret() * 100
    relay.tamper = _flip_in_secret(sent)
    got = echo.echo(sent)
    assert relay.tampered == 1
    assert got != sent
    assert len(got) == len(sent)


def test_a_flipped_byte_under_tls_fails_the_call_instead_of_changing_the_value(
        pki: PKI, through: Through) -> None:
    relay, echo = through(pki.server, pki.client)
    assert echo.echo(b"warm up") == b"warm up"
    sent = _secret() * 100
    relay.tamper = _flip_in_big_record
    outcome: Any
    try:
        outcome = echo.echo(sent)
    except NetletError as e:
        outcome = e
    assert relay.tampered == 1, "the relay never saw the reply pass"
    assert isinstance(outcome, NetletError), f"a tampered TLS record was accepted: {outcome!r}"
    # The client recovers on a fresh connection.
    assert echo.echo(b"after") == b"after"
