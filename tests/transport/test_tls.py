"""TLS on the tcp transport, with certificates made by the real ``netlet certs`` command.

Two private CAs: ``good`` issues the server's and the honest client's
certificates, ``evil`` issues a certificate for a client the server must not
trust. Every round trip runs on 127.0.0.1 through ``listen``/``connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest

import netlet
from netlet.codec import Buffer
from netlet.errors import (
    AuthenticationError,
    HandshakeError,
    NetletConnectionError,
)
from netlet.transport import (
    PROTOCOL_VERSION,
    Connection,
    PeerInfo,
    TLSConfig,
    TransportConfig,
    connect,
    frame_parts,
    generate_key,
    listen,
)
from tests._support import STEP


def netlet_exe() -> str:
    """The console script installed beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "netlet"
    found = str(beside) if beside.exists() else shutil.which("netlet")
    if found is None:
        pytest.fail("the netlet console script is not installed (pip install -e '.[dev]')")
    return found


def run_netlet(*args: str | Path) -> None:
    subprocess.run(
        [netlet_exe(), *map(str, args)], check=True, timeout=60, capture_output=True
    )


@dataclass(frozen=True)
class PKI:
    good: Path
    evil: Path

    def tls(self, ca_dir: Path, name: str, *, trust: Path | None = None,
            check_hostname: bool = False) -> TLSConfig:
        """``name``'s certificate from ``ca_dir``, trusting the CA in ``trust`` (default: same)."""
        trust = ca_dir if trust is None else trust
        return TLSConfig(certfile=str(ca_dir / f"{name}.pem"), keyfile=str(ca_dir / f"{name}.key"),
                         cafile=str(trust / "ca.pem"), check_hostname=check_hostname)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    root = tmp_path_factory.mktemp("pki")
    good, evil = root / "good", root / "evil"
    run_netlet("certs", "init", "--dir", good)
    run_netlet("certs", "node", "server", "--dir", good)
    run_netlet("certs", "node", "client", "--dir", good)
    run_netlet("certs", "node", "elsewhere", "--dir", good, "--host", "node.example.invalid")
    run_netlet("certs", "init", "--dir", evil)
    run_netlet("certs", "node", "mallory", "--dir", evil)
    return PKI(good, evil)


# -- an echo server and a client, both closing cleanly ---------------------


@dataclass
class Peer:
    """One end of a connection: collects frames and learns when it closes."""

    conn: Connection
    info: PeerInfo
    frames: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    closed: asyncio.Future[BaseException | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def start(self, on_frame: Callable[[bytes], None] | None = None) -> None:
        def on_message(body: memoryview, buffers: list[Buffer]) -> None:
            data = bytes(body)  # the body is valid only during the call
            if on_frame is not None:
                on_frame(data)
            self.frames.put_nowait(data)

        def on_close(reason: BaseException | None) -> None:
            if not self.closed.done():
                self.closed.set_result(reason)

        self.conn.set_handlers(on_message, on_close)

    async def request(self, body: bytes) -> bytes:
        self.conn.send(body)
        async with asyncio.timeout(STEP):
            return await self.frames.get()

    async def aclose(self) -> None:
        self.conn.close()
        async with asyncio.timeout(STEP):
            await self.closed


@dataclass
class EchoServer:
    address: str = ""
    peers: list[Peer] = field(default_factory=list)

    def on_connection(self, conn: Connection, info: PeerInfo) -> None:
        peer = Peer(conn, info)
        peer.start(lambda data: conn.send(b"echo:" + data))
        self.peers.append(peer)

    @property
    def accepted(self) -> list[str]:
        return [p.info.node for p in self.peers]


@contextlib.asynccontextmanager
async def open_echo_server(config: TransportConfig) -> AsyncIterator[EchoServer]:
    server = EchoServer()
    listener = await listen("tcp://127.0.0.1:0", config, "server", server.on_connection)
    server.address = listener.address
    try:
        yield server
    finally:
        for peer in server.peers:
            await peer.aclose()
        await listener.close()


@contextlib.asynccontextmanager
async def open_client(address: str, config: TransportConfig, node: str) -> AsyncIterator[Peer]:
    async with asyncio.timeout(STEP):
        conn, info = await connect(address, config, node)
    client = Peer(conn, info)
    client.start()
    try:
        yield client
    finally:
        await client.aclose()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await coro()

    asyncio.run(main())


# -- the tests -------------------------------------------------------------


def test_mutual_tls_round_trip(pki: PKI) -> None:
    async def main() -> None:
        server_cfg = TransportConfig(tls=pki.tls(pki.good, "server"))
        async with open_echo_server(server_cfg) as server:
            client_cfg = TransportConfig(tls=pki.tls(pki.good, "client"))
            async with open_client(server.address, client_cfg, "client") as client:
                assert client.info.node == "server"
                assert not client.info.authenticated  # no cluster key: TLS alone
                assert await client.request(b"hello") == b"echo:hello"
                big = bytes(range(256)) * 4096  # 1 MiB: many TLS records
                assert await client.request(big) == b"echo:" + big
            assert server.accepted == ["client"]

    run(main)


def test_mutual_tls_with_cluster_key(pki: PKI) -> None:
    key = generate_key()

    async def main() -> None:
        server_cfg = TransportConfig(key=key, tls=pki.tls(pki.good, "server"))
        async with open_echo_server(server_cfg) as server:
            client_cfg = TransportConfig(key=key, tls=pki.tls(pki.good, "client"))
            async with open_client(server.address, client_cfg, "client") as client:
                assert client.info.authenticated
                assert await client.request(b"with key") == b"echo:with key"
            assert [p.info.authenticated for p in server.peers] == [True]

            # Good certificates do not stand in for the key, in either direction.
            wrong = TransportConfig(key=generate_key(), tls=pki.tls(pki.good, "client"))
            with pytest.raises(AuthenticationError):
                await connect(server.address, wrong, "wrong-key")
            keyless = TransportConfig(tls=pki.tls(pki.good, "client"))
            with pytest.raises(AuthenticationError):
                await connect(server.address, keyless, "no-key")

            async with open_client(server.address, client_cfg, "again") as client:
                assert await client.request(b"still") == b"echo:still"
            assert server.accepted == ["client", "again"]

    run(main)


def test_client_certificate_from_another_ca_is_refused(
    pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="netlet.transport")

    async def main() -> None:
        server_cfg = TransportConfig(tls=pki.tls(pki.good, "server"))
        async with open_echo_server(server_cfg) as server:
            # Mallory trusts the server's CA, but her own certificate is from another.
            mallory = TransportConfig(tls=pki.tls(pki.evil, "mallory", trust=pki.good))
            # With TLS 1.3 the client finishes its side of the TLS handshake before
            # the server checks the client certificate, so the refusal shows up as
            # the connection closing during the netlet handshake.
            with pytest.raises((NetletConnectionError, HandshakeError)):
                async with asyncio.timeout(STEP):
                    await connect(server.address, mallory, "mallory")

            client_cfg = TransportConfig(tls=pki.tls(pki.good, "client"))
            async with open_client(server.address, client_cfg, "client") as client:
                assert await client.request(b"after") == b"echo:after"
            assert server.accepted == ["client"]

    run(main)
    assert any("TLS handshake" in r.getMessage() for r in caplog.records)


def test_client_without_certificate_is_refused(pki: PKI) -> None:
    async def main() -> None:
        server_cfg = TransportConfig(tls=pki.tls(pki.good, "server"))
        async with open_echo_server(server_cfg) as server:
            host, port = server.address.removeprefix("tcp://").rsplit(":", 1)
            ctx = ssl.create_default_context(cafile=str(pki.good / "ca.pem"))
            ctx.check_hostname = False  # verifies the server, presents no certificate
            async with asyncio.timeout(STEP):
                reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
                try:
                    # A well-formed hello: were the TLS refusal missing, the keyless
                    # server would answer it and accept the connection.
                    writer.writelines(frame_parts(msgpack.packb(
                        {"netlet": PROTOCOL_VERSION, "node": "anonymous", "address": "",
                         "nonce": bytes(32), "auth": None, "pickle": False})))
                    with contextlib.suppress(ssl.SSLError, ConnectionError):
                        assert await reader.read(1) == b""  # the server hangs up
                finally:
                    writer.close()
                    with contextlib.suppress(ssl.SSLError, ConnectionError):
                        await writer.wait_closed()
            assert server.accepted == []

    run(main)


def test_server_certificate_from_another_ca_is_refused(pki: PKI) -> None:
    async def main() -> None:
        server_cfg = TransportConfig(tls=pki.tls(pki.good, "server"))
        async with open_echo_server(server_cfg) as server:
            # Mallory's client trusts only her own CA: the server is a stranger to it.
            wary = TransportConfig(tls=pki.tls(pki.evil, "mallory"))
            with pytest.raises((NetletConnectionError, HandshakeError)):
                async with asyncio.timeout(STEP):
                    await connect(server.address, wary, "wary")
            assert server.accepted == []

    run(main)


def test_plain_client_fails_cleanly_and_listener_keeps_serving(
    pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="netlet.transport")

    async def main() -> None:
        server_cfg = TransportConfig(tls=pki.tls(pki.good, "server"))
        async with open_echo_server(server_cfg) as server:
            for n in range(3):
                with pytest.raises((NetletConnectionError, HandshakeError)):
                    async with asyncio.timeout(STEP):
                        await connect(server.address, TransportConfig(), f"plain-{n}")
            client_cfg = TransportConfig(tls=pki.tls(pki.good, "client"))
            async with open_client(server.address, client_cfg, "client") as client:
                assert await client.request(b"served") == b"echo:served"
            assert server.accepted == ["client"]

    run(main)
    assert any("TLS handshake" in r.getMessage() for r in caplog.records)


def test_hostname_is_checked_against_subject_alt_names(pki: PKI) -> None:
    async def main() -> None:
        # The default node certificate names 127.0.0.1 and localhost.
        async with open_echo_server(TransportConfig(tls=pki.tls(pki.good, "server"))) as server:
            strict = TransportConfig(tls=pki.tls(pki.good, "client", check_hostname=True))
            async with open_client(server.address, strict, "strict") as client:
                assert await client.request(b"named") == b"echo:named"

        # This one names only node.example.invalid, so 127.0.0.1 does not match.
        other = TransportConfig(tls=pki.tls(pki.good, "elsewhere"))
        async with open_echo_server(other) as server:
            with pytest.raises((NetletConnectionError, HandshakeError)):
                async with asyncio.timeout(STEP):
                    await connect(server.address, strict, "strict")
            assert server.accepted == []

    run(main)


# -- closing leaves no socket behind -----------------------------------------------


def _sockets_on(port: int) -> set[str]:
    """This process's open TCP sockets with ``port`` at either end (their inodes)."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            mine.add(os.readlink(f"/proc/self/fd/{fd}"))
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                ends = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16))
                if port in ends and f"socket:[{cols[9]}]" in mine:
                    found.add(cols[9])
    return found


@netlet.expose
class _One:
    def one(self) -> int:
        return 1


@pytest.mark.timeout(60)
def test_closed_tls_nodes_leave_no_socket_open(pki: PKI) -> None:
    # A polite TLS close waits for the peer's close_notify; a node that stopped
    # its loop meanwhile left the socket open until garbage collection (an fd
    # leak, and a ResourceWarning that a parallel run blamed on another test).
    key = generate_key()
    gc.collect()
    gc.disable()  # what is left open stays open: nothing collects it behind our back
    try:
        for _ in range(20):
            server = netlet.Node("tcp://127.0.0.1:0", key=key, tls=pki.tls(pki.good, "server"))
            port = int((server.address or "").rsplit(":", 1)[1])
            client = netlet.Node(key=key, tls=pki.tls(pki.good, "client"))
            server.serve(_One(), "one")
            assert client.proxy(server.address or "", "one").one() == 1
            assert _sockets_on(port)
            client.close()
            server.close()
            assert _sockets_on(port) == set()
    finally:
        gc.enable()
