"""A node's settings, and the keyword shortcuts ``Node(...)`` folds into them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

from netlet.clock import REAL_CLOCK, Clock
from netlet.codec import Limits
from netlet.errors import ConfigError
from netlet.transport import Connection, TLSConfig, TransportConfig, load_key

__all__ = ["NodeConfig", "NodeOptions", "make_config"]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node needs to know; passed explicitly, never read from the environment."""

    transport: TransportConfig = field(default_factory=TransportConfig)
    call_timeout: float | None = 30.0
    """Default seconds a call waits for its reply (``None``: forever)."""
    max_threads: int = 32
    """Threads for the plain methods of concurrent objects."""
    wrap_connection: Callable[[Connection], Connection] | None = None
    """Hook applied to every connection after its handshake (fault injection in tests)."""
    keepalive: float | None = 2.0
    """Ping a peer we are waiting on after this many silent seconds; after three such
    intervals with no word from it, close the link so waiters fail instead of hanging."""
    max_inflight: int = 1024
    """Incoming calls (oneway ones too) running or queued at once per connection;
    beyond it the connection is not read (TCP then slows the sender). Their size is
    bounded by ``max_connection_memory``."""
    max_memory: int = 256 * 1024 * 1024
    """Bytes (256 MiB) the node holds for all its peers together: frames being received,
    calls queued or running (their frames), replies not yet read, and large receive
    buffers kept for reuse (at most half; dropped first when room is needed). Past it, a connection
    that sends a call is not read until the total is back under 3/4, and a large frame
    waits (unread) until its announced size fits. Fits a machine with 1 GiB of memory
    and still lets two 64 MiB values (``Limits.max_frame``) travel each way at once."""
    max_connection_memory: int = 128 * 1024 * 1024
    """Bytes (128 MiB, one largest frame each way) one connection's frames and calls may
    hold. Past it the connection is not read until it is back under half. A peer with
    more replies unread than this has its new calls held (not run) until it has read
    down to half; one whose unread replies would pass twice this is disconnected, as is
    one we stopped reading or hold calls from that reads nothing we send for 10 s. A
    connection still in the handshake holds at most 32 KiB (none until its first byte)."""
    max_connections: int = 1024
    """Accepted connections open at once (handshaking, linked or direct); one more is
    answered ``{"error": "busy"}`` and closed. Below the usual 1024-descriptor limit's
    reach of harm: when descriptors still run out, accepting pauses and resumes."""
    max_direct_threads: int = 64
    """Threads serving direct connections (one each). Past it a new direct connection
    is served on the event loop like a main link: slower, but no more threads."""
    direct_calls: bool = True
    """Blocking calls over TCP/unix use a side connection per calling thread (no thread
    hops); turn off to send everything over the one main connection."""
    clock: Clock = REAL_CLOCK
    """Where every timer of the node (and of a head, worker or bank built on it) reads
    the time: keepalives, call deadlines, heartbeats, leases, retries, backoff, session
    TTLs, group-commit waits. ``netlet.testing.VirtualClock`` makes them move by hand."""
    advertise: str | None = None
    """Host name or IP that peers should dial to reach this node, put in its handles
    and handshakes. Default: the listen host, or for a wildcard listen (0.0.0.0, ::)
    this machine's outward address."""

    def __post_init__(self) -> None:
        if self.call_timeout is not None and self.call_timeout <= 0:
            raise ConfigError("call_timeout must be positive or None")
        if self.max_threads < 1:
            raise ConfigError("max_threads must be at least 1")
        if self.max_connection_memory < 1024 * 1024:
            raise ConfigError("max_connection_memory must be at least 1 MiB (1048576)")
        if self.max_memory < self.max_connection_memory:
            raise ConfigError("max_memory must be at least max_connection_memory")
        if self.max_connections < 0 or self.max_direct_threads < 0:
            raise ConfigError("max_connections and max_direct_threads cannot be negative "
                              "(0 means no cap)")
        # One clock for the node and its transport: the one given (either place).
        if self.transport.clock is not self.clock:
            if self.clock is REAL_CLOCK:
                object.__setattr__(self, "clock", self.transport.clock)
            elif self.transport.clock is REAL_CLOCK:
                object.__setattr__(self, "transport", replace(self.transport, clock=self.clock))
            else:
                raise ConfigError("NodeConfig.clock and its TransportConfig.clock differ: "
                                  "give the clock once, as NodeConfig(clock=...)")


class NodeOptions(TypedDict, total=False):
    """The keywords ``Node(...)`` and ``open_node(...)`` accept besides ``config``.

    Each overrides the field of the same name in ``NodeConfig`` or its
    ``TransportConfig`` (``key_file`` and ``old_key_files`` are read into ``key``
    and ``old_keys``). Typed, so that mypy flags a misspelt one; at run time an
    unknown one is a ``TypeError`` naming it (and the closest valid name).
    """

    key: bytes | None
    key_file: str | os.PathLike[str] | None
    old_keys: tuple[bytes, ...]
    old_key_files: Iterable[str | os.PathLike[str]] | None
    insecure: bool
    allow_pickle: bool
    tls: TLSConfig | dict[str, Any] | None
    limits: Limits
    handshake_timeout: float
    connect_timeout: float
    shared_memory: int
    call_timeout: float | None
    max_threads: int
    wrap_connection: Callable[[Connection], Connection] | None
    direct_calls: bool
    keepalive: float | None
    max_inflight: int
    advertise: str | None
    clock: Clock
    max_memory: int
    max_connection_memory: int
    max_connections: int
    max_direct_threads: int


_OPTION_NAMES: frozenset[str] = frozenset(NodeOptions.__annotations__)
TRANSPORT_OPTIONS = ("key", "old_keys", "insecure", "allow_pickle", "tls", "limits",
                     "handshake_timeout", "connect_timeout", "shared_memory")
"""The options that set the ``TransportConfig`` field of the same name."""
NODE_OPTIONS = ("call_timeout", "max_threads", "wrap_connection", "direct_calls",
                "keepalive", "max_inflight", "advertise", "clock", "max_memory",
                "max_connection_memory", "max_connections", "max_direct_threads")
"""The options that set the ``NodeConfig`` field of the same name."""


def _check_names(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - _OPTION_NAMES)
    if not unknown:
        return
    import difflib  # only for a mistake: not worth its import time at every start

    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, _OPTION_NAMES, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(f"unknown node option{'s' if len(unknown) > 1 else ''}: "
                    f"{', '.join(hints)}; see netlet.node.NodeOptions")


def make_config(config: NodeConfig | None, options: dict[str, Any]) -> NodeConfig:
    """Fold the convenience keywords (key=, insecure=, tls=, ...) into a NodeConfig.

    Raises ``TypeError`` for a keyword that is not a ``NodeOptions`` name.
    """
    _check_names(options)
    options = dict(options)
    config = config or NodeConfig()
    t: dict[str, Any] = {}
    if "key_file" in options:
        path = options.pop("key_file")
        if path is not None:
            t["key"] = load_key(path)
    if "old_key_files" in options:
        t["old_keys"] = tuple(load_key(p) for p in options.pop("old_key_files") or ())
    for name in TRANSPORT_OPTIONS:
        if name in options:
            value = options.pop(name)
            if name == "key" and value is None and "key" in t:
                continue  # key=None must not drop a key read from key_file
            t[name] = value
    if isinstance(t.get("tls"), dict):
        t["tls"] = TLSConfig(**t["tls"])
    n: dict[str, Any] = {k: options.pop(k) for k in NODE_OPTIONS if k in options}
    if "clock" in n:
        t["clock"] = n["clock"]  # the node's clock is its transport's too
    if t:
        n["transport"] = replace(config.transport, **t)
    return replace(config, **n) if n else config
