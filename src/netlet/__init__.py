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

from netlet.channel import (
    Channel,
    RemoteChannel,
    Tasklet,
    channel,
    connect_channel,
    receiving,
    select,
    select_aio,
    sending,
    spawn,
    tasklet,
)
from netlet.codec import Limits, RemoteRef, register_exception
from netlet.errors import (
    AuthenticationError,
    BadArguments,
    CallCancelled,
    CallTimeout,
    ChannelClosed,
    ChannelTimeout,
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
    TaskletExit,
    VersionMismatch,
    WouldBlock,
)
from netlet.node import DEFAULT_TIMEOUT as _DEFAULT_TIMEOUT
from netlet.node import Node, NodeConfig, Proxy, default_node, expose, open_node
from netlet.node import Timeout as _Timeout
from netlet.transport import (
    InsecureWarning,
    TLSConfig,
    TransportConfig,
    generate_key,
    load_key,
)

__all__ = [
    "AuthenticationError",
    "BadArguments",
    "CallCancelled",
    "CallTimeout",
    "Channel",
    "ChannelClosed",
    "ChannelTimeout",
    "Cluster",
    "ConfigError",
    "ConnectionLost",
    "DecodeError",
    "EncodeError",
    "Executor",
    "FrameTooLarge",
    "HandshakeError",
    "InsecureListenError",
    "InsecureWarning",
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
    "RemoteChannel",
    "RemoteError",
    "RemoteRef",
    "TLSConfig",
    "Tasklet",
    "TaskletExit",
    "TransportConfig",
    "VersionMismatch",
    "WorkerLost",
    "WouldBlock",
    "__version__",
    "channel",
    "connect",
    "connect_channel",
    "default_node",
    "expose",
    "generate_key",
    "load_key",
    "open_node",
    "receiving",
    "register_exception",
    "select",
    "select_aio",
    "sending",
    "spawn",
    "tasklet",
]

__version__ = "0.1.0"

_logging.getLogger("netlet").addHandler(_logging.NullHandler())


_LAZY = {"Cluster": "netlet.cluster", "Executor": "netlet.cluster",
         "WorkerLost": "netlet.errors"}


def __getattr__(name: str) -> object:
    """The cluster's names, imported on first use (worker start-up stays fast)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'netlet' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def connect(address: str, name: str, *, timeout: _Timeout = _DEFAULT_TIMEOUT) -> Proxy:
    """A proxy for ``name`` at ``address`` on the process-wide client node."""
    return default_node().proxy(address, name, timeout=timeout)
