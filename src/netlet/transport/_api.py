"""Open connections and listeners for any address; run the handshake on each."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import ssl
import stat
from collections.abc import Callable, Coroutine
from typing import Any

from netlet.errors import (
    ConfigError,
    HandshakeError,
    InsecureListenError,
    NetletError,
    PeerUnreachable,
)
from netlet.transport._address import Address, parse_address
from netlet.transport._base import Connection, PeerInfo, log
from netlet.transport._config import TLSConfig, TransportConfig
from netlet.transport._handshake import client_handshake, server_handshake
from netlet.transport._mem import MemConnection, mem_connect, mem_listen, mem_unlisten
from netlet.transport._socket import SocketConnection
from netlet.transport._tls import StreamConnection

__all__ = ["Accepted", "Listener", "connect", "listen"]

Accepted = Callable[[Connection, PeerInfo], None]


@functools.lru_cache(maxsize=16)
def _tls_context(tls: TLSConfig, *, server: bool) -> ssl.SSLContext:
    """Built once per configuration: reading certificates per connection would block the loop."""
    try:
        return tls.server_context() if server else tls.client_context()
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load TLS certificates: {e}") from None


def _max_buffers(config: TransportConfig) -> int:
    return config.limits.max_buffers


async def _open(addr: Address, config: TransportConfig) -> Connection:
    loop = asyncio.get_running_loop()
    hs_max = config.limits.handshake_max
    if addr.scheme == "mem":
        return await mem_connect(addr.path)
    if addr.scheme == "tcp" and config.tls is not None:
        conn = StreamConnection(loop, str(addr), hs_max)
        await loop.create_connection(
            lambda: conn, addr.host, addr.port, ssl=_tls_context(config.tls, server=False),
            server_hostname=addr.host if config.tls.check_hostname else "",
        )
        return conn
    if addr.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = addr.path
    else:
        infos = await loop.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM)
        family, _, _, _, target = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, target)  # type: ignore[arg-type]
    except BaseException:
        sock.close()
        raise
    return SocketConnection(loop, sock, str(addr), hs_max)


async def connect(
    address: str, config: TransportConfig, node: str, listen_address: str = "",
    role: str = "link", link_token: bytes = b"",
) -> tuple[Connection, PeerInfo]:
    """Connect and authenticate; raises ``PeerUnreachable`` or a ``HandshakeError``."""
    addr = parse_address(address)
    try:
        async with asyncio.timeout(config.connect_timeout):
            conn = await _open(addr, config)
    except (OSError, TimeoutError) as e:
        why = str(e) or ("timed out" if isinstance(e, TimeoutError) else type(e).__name__)
        raise PeerUnreachable(f"cannot connect to {addr}: {why}") from None
    try:
        peer = await client_handshake(conn, config, node, listen_address, role, link_token)
    except TimeoutError:
        conn.close()
        raise HandshakeError(f"{addr} did not complete the handshake in time") from None
    except BaseException:
        conn.close()
        raise
    conn.set_max_frame(config.limits.max_frame, _max_buffers(config))
    return conn, peer


class Listener:
    """Accepts connections on one address and hands authenticated ones to a callback."""

    def __init__(self, addr: Address, config: TransportConfig, node: str,
                 on_connection: Accepted) -> None:
        self.bound = addr
        self.config = config
        self.node = node
        self.on_connection = on_connection
        self._sock: socket.socket | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()

    @property
    def address(self) -> str:
        return str(self.bound)

    async def start(self) -> None:
        addr, cfg = self.bound, self.config
        if cfg.tls is not None:
            _tls_context(cfg.tls, server=True)  # bad certificate paths fail here, not per peer
        if not addr.is_loopback and cfg.key is None:
            if not cfg.insecure:
                raise InsecureListenError(
                    f"refusing to listen on {addr} without a cluster key: anyone who can reach "
                    "it could call your objects. Give a key (netlet keygen) or pass insecure."
                )
            log.warning("INSECURE: listening on %s with no cluster key; anyone who can reach "
                        "this address can call every exposed object", addr)
        if addr.scheme == "mem":
            mem_listen(addr.path, self._loop, self._accept_mem)
            return
        if addr.scheme == "unix":
            _remove_stale_unix_socket(addr.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(addr.path)
        else:
            family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((addr.host, addr.port))
            except OSError:
                sock.close()
                raise
            self.bound = Address("tcp", host=addr.host, port=sock.getsockname()[1])
        sock.listen(512)
        sock.setblocking(False)
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_accept)

    def _on_accept(self) -> None:
        assert self._sock is not None
        for _ in range(64):
            try:
                csock, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors, etc.
                log.error("accept on %s failed: %s", self.bound, e)
                return
            remote = f"{self.bound.scheme}://{peer[0]}:{peer[1]}" if peer else str(self.bound)
            self._track(self._accept_socket(csock, remote))

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _accept_socket(self, csock: socket.socket, remote: str) -> None:
        hs_max = self.config.limits.handshake_max
        conn: Connection
        if self.config.tls is not None:
            sconn = StreamConnection(self._loop, remote, hs_max)
            try:
                async with asyncio.timeout(self.config.handshake_timeout):
                    await self._loop.connect_accepted_socket(
                        lambda: sconn, csock, ssl=_tls_context(self.config.tls, server=True))
            except (OSError, TimeoutError) as e:
                log.warning("TLS handshake with %s failed: %s", remote, e)
                csock.close()
                return
            conn = sconn
        else:
            conn = SocketConnection(self._loop, csock, remote, hs_max)
        await self._handshake(conn)

    async def _accept_mem(self, conn: MemConnection) -> None:
        await self._handshake(conn)

    async def _handshake(self, conn: Connection) -> None:
        try:
            peer = await server_handshake(conn, self.config, self.node, self.address)
        except (NetletError, OSError) as e:
            log.warning("refused connection from %s: %s", conn.remote, e)
            await conn.drain_and_close(0.2)
            return
        conn.set_max_frame(self.config.limits.max_frame, _max_buffers(self.config))
        self.on_connection(conn, peer)

    async def close(self) -> None:
        if self.bound.scheme == "mem":
            mem_unlisten(self.bound.path)
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            if self.bound.scheme == "unix":
                with contextlib.suppress(OSError):
                    os.unlink(self.bound.path)
        for task in list(self._handshakes):
            task.cancel()
        if self._handshakes:
            await asyncio.wait(self._handshakes, timeout=1)


def _remove_stale_unix_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody answers: a leftover from a dead process
    else:
        raise OSError(f"{path} is in use by another process")
    finally:
        probe.close()


async def listen(address: str, config: TransportConfig, node: str,
                 on_connection: Accepted) -> Listener:
    """Listen on ``address``; refuses non-loopback without a key unless insecure."""
    listener = Listener(parse_address(address), config, node, on_connection)
    await listener.start()
    return listener
