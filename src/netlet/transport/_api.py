"""Open connections and listeners for any address; run the handshake on each."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import ssl
import stat
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack

from netlet.clock import Backoff, Timer
from netlet.errors import (
    ConfigError,
    ConnectionLost,
    InsecureListenError,
    NetletError,
    PeerUnreachable,
)
from netlet.transport._address import Address, parse_address
from netlet.transport._base import Connection, PeerInfo, RateLimitedLog, log
from netlet.transport._budget import Budget
from netlet.transport._config import TLSConfig, TransportConfig, warn_insecure
from netlet.transport._handshake import client_handshake, server_handshake
from netlet.transport._mem import MemConnection, mem_connect, mem_listen, mem_unlisten
from netlet.transport._socket import SocketConnection
from netlet.transport._tls import StreamConnection

__all__ = ["Accepted", "Listener", "connect", "listen"]

Accepted = Callable[[Connection, PeerInfo], None]

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
"""While accept fails for want of descriptors or memory, stop watching the socket and
retry after a pause doubling from 50 ms to 1 s (asyncio's own servers retry at once
and spin; trio sleeps). Waiting clients stay in the kernel's backlog meanwhile."""


@functools.lru_cache(maxsize=16)
def _tls_context(tls: TLSConfig, *, server: bool) -> ssl.SSLContext:
    """Built once per configuration: reading certificates per connection would block the loop."""
    try:
        return tls.server_context() if server else tls.client_context()
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load TLS certificates: {e}") from None


def _max_buffers(config: TransportConfig) -> int:
    return config.limits.max_buffers


async def _open(addr: Address, config: TransportConfig, budget: Budget | None) -> Connection:
    loop = asyncio.get_running_loop()
    hs_max = config.limits.handshake_max
    if addr.scheme == "mem":
        return await mem_connect(addr.path)
    if addr.scheme == "tcp" and config.tls is not None:
        conn = StreamConnection(loop, str(addr), hs_max,
                                account=budget.account() if budget is not None else None)
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
    return SocketConnection(loop, sock, str(addr), hs_max,
                            account=budget.account() if budget is not None else None)


def _tls_failure(e: BaseException, cafile: str | None) -> str | None:
    """What a failed TLS connect means, in words (None: not a TLS failure)."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return (f"TLS: the server's certificate is not trusted by our CA ({cafile}): "
                f"{e.verify_message}. Both sides need certificates from the same "
                "`netlet certs init` directory")
    if isinstance(e, ssl.SSLError):
        reason = e.reason or str(e)
        if "CERTIFICATE" in reason.upper():
            return (f"TLS: the server refused our certificate ({reason}): it is not signed "
                    "by the server's CA, or we sent none")
        return (f"TLS handshake failed ({reason}): does the server use TLS? (a plain "
                "netlet server does not speak it)")
    if isinstance(e, (ConnectionResetError, BrokenPipeError, EOFError)):
        return ("TLS: the server closed the connection during the TLS handshake: it does not "
                "use TLS (give it tls= too, or drop ours), or it refused our certificate")
    return None


async def connect(
    address: str, config: TransportConfig, node: str, listen_address: str = "",
    role: str = "link", budget: Budget | None = None, link_token: bytes = b"",
) -> tuple[Connection, PeerInfo]:
    """Connect and authenticate; raises ``PeerUnreachable`` (also for a peer that never
    answers the handshake) or a ``HandshakeError`` (one that answered wrong).

    With a ``budget``, what the connection holds is charged to it.
    """
    addr = parse_address(address)
    try:
        async with config.clock.timeout(config.connect_timeout):
            conn = await _open(addr, config, budget)
    except (OSError, TimeoutError) as e:
        why = str(e) or ("timed out" if isinstance(e, TimeoutError) else type(e).__name__)
        if config.tls is not None and addr.scheme == "tcp":
            why = _tls_failure(e, config.tls.cafile) or why
        raise PeerUnreachable(f"cannot connect to {addr}: {why}") from None
    try:
        peer = await client_handshake(conn, config, node, listen_address, role, link_token)
    except TimeoutError:
        # It took the connection and said nothing (frozen, overloaded, not netlet): that
        # is a peer out of reach, not one that sent something we refuse.
        conn.close()
        raise PeerUnreachable(f"{addr} accepted the connection but did not complete the "
                              f"handshake in {config.handshake_timeout:g} s") from None
    except ConnectionLost as e:
        conn.close()
        if config.tls is None and addr.scheme == "tcp":
            raise ConnectionLost(
                f"{e}; it answered nothing: does {addr} expect TLS? (this side has no tls=; "
                "give the same `netlet certs` CA to both sides, or to neither)") from None
        if config.tls is not None and addr.scheme == "tcp":
            # Under TLS 1.3 a server checks our certificate after our side of the TLS
            # handshake is done: its refusal reaches us as this close.
            raise ConnectionLost(
                f"{e}; over TLS, a server that refused our certificate (not signed by its "
                "CA) closes like this") from None
        raise
    except BaseException:
        conn.close()
        raise
    conn.set_max_frame(config.limits.max_frame, _max_buffers(config))
    if peer.shm is not None:
        conn.enable_shm(peer.shm)
    return conn, peer


class Listener:
    """Accepts connections on one address and hands authenticated ones to a callback.

    At most ``max_connections`` accepted sockets are open at once (0: no cap),
    counting those still in the handshake and direct connections handed to a
    thread; one more is told ``{"error": "busy"}`` and closed. What each
    connection holds is charged to ``budget``.
    """

    def __init__(self, addr: Address, config: TransportConfig, node: str,
                 on_connection: Accepted, budget: Budget | None = None,
                 max_connections: int = 0) -> None:
        self.bound = addr
        self.config = config
        self.node = node
        self.on_connection = on_connection
        self.budget = budget
        self.max_connections = max_connections
        self._sock: socket.socket | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._open = 0
        self._open_lock = threading.Lock()
        self._backoff = Backoff(_BACKOFF_FIRST, _BACKOFF_MAX)
        self._paused_for = 0.0  # seconds of the current pause (0: accepting)
        self._retry: Timer | None = None
        self._log_accept = RateLimitedLog()
        self._log_busy = RateLimitedLog()
        self._log_refused = RateLimitedLog(burst=50)  # also what accepted peers do wrong
        self.handshake_failures = 0
        """Connections refused in the handshake or its TLS layer (for statistics)."""

    @property
    def open_connections(self) -> int:
        """Accepted sockets still open (in the handshake, linked, or served directly)."""
        return self._open

    @property
    def address(self) -> str:
        return str(self.bound)

    def _bind(self, addr: Address) -> socket.socket:
        if addr.scheme == "unix":
            _remove_stale_unix_socket(addr.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(addr.path)
            except OSError:
                sock.close()
                raise
            return sock
        family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((addr.host, addr.port))
        except OSError:
            sock.close()
            raise
        self.bound = Address("tcp", host=addr.host, port=sock.getsockname()[1])
        return sock

    async def start(self) -> None:
        addr, cfg = self.bound, self.config
        if cfg.tls is not None:
            _tls_context(cfg.tls, server=True)  # bad certificate paths fail here, not per peer
        if not addr.is_loopback and cfg.key is None:
            if not cfg.insecure:
                raise InsecureListenError(
                    f"refusing to listen on {addr} without a cluster key: anyone who can reach "
                    "it could call your objects. Give a key (netlet keygen, then key_file= or "
                    "--key-file) or, on a closed network, pass insecure=True (--insecure)."
                )
            log.warning("INSECURE: listening on %s with no cluster key; anyone who can reach "
                        "this address can call every exposed object", addr)
            warn_insecure(f"INSECURE: listening on {addr} with no cluster key; anyone who "
                          "can reach this address can call every exposed object")
        if addr.scheme == "mem":
            mem_listen(addr.path, self._loop, self._accept_mem)
            return
        try:
            sock = self._bind(addr)
        except OSError as e:
            # Name the address: a bare "[Errno 98] Address already in use" does not.
            why = e.strerror or str(e)
            if e.errno == errno.EADDRINUSE:
                why += " (another process listens there: stop it, or choose another port)"
            raise OSError(e.errno, f"cannot listen on {addr}: {why}") from None
        sock.listen(512)
        sock.setblocking(False)
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_accept)

    def _on_accept(self) -> None:
        if self._sock is None:
            return
        for _ in range(64):
            try:
                csock, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _OUT_OF_RESOURCES:
                    self._pause_accepting(e)
                else:
                    self._log_accept(logging.ERROR, "accept on %s failed: %s", self.bound, e)
                return
            if self._paused_for:
                log.warning("accepting on %s again", self.bound)
                self._paused_for = 0.0
                self._backoff.reset()
            remote = f"{self.bound.scheme}://{peer[0]}:{peer[1]}" if peer else str(self.bound)
            if self.max_connections and self._open >= self.max_connections:
                self._refuse_busy(csock, remote)
                continue
            with self._open_lock:
                self._open += 1
            self._track(self._accept_socket(csock, remote), on_cancel=csock.close)

    def _pause_accepting(self, error: OSError) -> None:
        """Out of descriptors (or memory): stop watching the socket for a while."""
        assert self._sock is not None
        self._paused_for = self._backoff.next()
        self._log_accept(logging.ERROR, "accept on %s failed: %s; pausing accepts (%d open "
                         "connections; raise the descriptor limit with ulimit -n, or lower "
                         "max_connections)", self.bound, error, self._open)
        self._loop.remove_reader(self._sock.fileno())
        self._retry = self.config.clock.call_later(self._loop, self._paused_for,
                                                   self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._retry = None
        if self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._on_accept)
            self._on_accept()

    def _refuse_busy(self, csock: socket.socket, remote: str) -> None:
        """Over the connection cap: say why in the handshake's error form, then close."""
        self._log_busy(logging.WARNING, "refused connection from %s: %d connections open "
                       "(max_connections)", remote, self._open)
        msg = msgpack.packb({"error": "busy", "message":
                             f"the node has {self._open} connections open, its limit; "
                             "try again later"})
        if self.config.tls is None:  # over TLS the frame could not be read: just close
            with contextlib.suppress(OSError):
                csock.setblocking(False)
                csock.send(len(msg).to_bytes(4, "big") + bytes(4) + msg)
        csock.close()

    def _release_slot(self) -> None:
        with self._open_lock:
            self._open -= 1

    def _track(self, coro: Coroutine[Any, Any, None],
               on_cancel: Callable[[], None] | None = None) -> None:
        task = self._loop.create_task(coro)
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)
        if on_cancel is not None:  # a task cancelled before its first step ran no cleanup
            task.add_done_callback(lambda t: on_cancel() if t.cancelled() else None)

    async def _accept_socket(self, csock: socket.socket, remote: str) -> None:
        hs_max = self.config.limits.handshake_max
        account = self.budget.account() if self.budget is not None else None
        conn: Connection | None = None
        try:
            if self.config.tls is not None:
                sconn = conn = StreamConnection(self._loop, remote, hs_max, account=account)
                sconn.slot = self._release_slot
                sconn.warn = self._log_refused
                try:
                    async with self.config.clock.timeout(self.config.handshake_timeout):
                        await self._loop.connect_accepted_socket(
                            lambda: sconn, csock, ssl=_tls_context(self.config.tls, server=True))
                except (OSError, TimeoutError) as e:
                    self.handshake_failures += 1
                    self._log_refused(logging.WARNING, "TLS handshake with %s failed: %s",
                                      remote, e)
                    csock.close()
                    sconn.close()
                    return
                conn = sconn
            else:
                conn = SocketConnection(self._loop, csock, remote, hs_max, account=account)
                conn.slot = self._release_slot
                conn.warn = self._log_refused
        except BaseException:
            csock.close()
            if conn is None:
                self._release_slot()
            raise
        await self._handshake(conn)

    async def _accept_mem(self, conn: MemConnection) -> None:
        await self._handshake(conn)

    async def _handshake(self, conn: Connection) -> None:
        try:
            peer = await server_handshake(conn, self.config, self.node, self.address)
        except (NetletError, OSError) as e:
            self.handshake_failures += 1
            self._log_refused(logging.WARNING, "refused connection from %s: %s", conn.remote, e)
            await conn.drain_and_close(0.2)
            return
        except BaseException:
            conn.close()  # cancelled (the listener is closing): free the socket now
            raise
        conn.set_max_frame(self.config.limits.max_frame, _max_buffers(self.config))
        if peer.shm is not None:
            conn.enable_shm(peer.shm)
        self.on_connection(conn, peer)

    async def close(self) -> None:
        if self.bound.scheme == "mem":
            mem_unlisten(self.bound.path)
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
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
                 on_connection: Accepted, budget: Budget | None = None,
                 max_connections: int = 0) -> Listener:
    """Listen on ``address``; refuses non-loopback without a key unless insecure."""
    listener = Listener(parse_address(address), config, node, on_connection, budget,
                        max_connections)
    await listener.start()
    return listener
