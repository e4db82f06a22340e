"""netlet: message passing for Python, the same in one process, across processes and machines.

Serve an object::

    @netlet.expose
    class Greeter:
        def hello(self, name: str) -> str:
            return f"hello {name}"

    with netlet.Node(listen="tcp://127.0.0.1:7000") as node:
        node.serve(Greeter(), "greeter")
        node.wait()

and call it from anywhere::

    greeter = netlet.connect("tcp://127.0.0.1:7000", "greeter")
    greeter.hello("ada")                 # blocks
    await greeter.hello.aio("ada")       # in async code
"""

import logging as _logging

from netlet.codec import Limits, RemoteRef, register_exception
from netlet.errors import (
    AuthenticationError,
    BadArguments,
    CallCancelled,
    CallTimeout,
    ChannelClosed,
    ConfigError,
    ConnectionLost,
    DecodeError,
    EncodeError,
    FrameTooLarge,
    HandshakeError,
    InsecureListenError,
    NetletConnectionError,
    NetletError,
    NodeClosed,
    NoSuchObject,
    NotExposed,
    PeerUnreachable,
    ProtocolError,
    RemoteError,
    VersionMismatch,
)
from netlet.node import Node, NodeConfig, Proxy, default_node, expose, open_node
from netlet.transport import TLSConfig, TransportConfig, generate_key, load_key

__all__ = [
    "AuthenticationError",
    "BadArguments",
    "CallCancelled",
    "CallTimeout",
    "ChannelClosed",
    "ConfigError",
    "ConnectionLost",
    "DecodeError",
    "EncodeError",
    "FrameTooLarge",
    "HandshakeError",
    "InsecureListenError",
    "Limits",
    "NetletConnectionError",
    "NetletError",
    "NoSuchObject",
    "Node",
    "NodeClosed",
    "NodeConfig",
    "NotExposed",
    "PeerUnreachable",
    "ProtocolError",
    "Proxy",
    "RemoteError",
    "RemoteRef",
    "TLSConfig",
    "TransportConfig",
    "VersionMismatch",
    "__version__",
    "connect",
    "default_node",
    "expose",
    "generate_key",
    "load_key",
    "open_node",
    "register_exception",
]

__version__ = "0.1.0"

_logging.getLogger("netlet").addHandler(_logging.NullHandler())


def connect(address: str, name: str, *, timeout: float | None = -1.0) -> Proxy:
    """A proxy for ``name`` at ``address`` on the process-wide client node."""
    return default_node().proxy(address, name, timeout=timeout)
