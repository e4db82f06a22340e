"""Frames between two endpoints: tcp (optionally TLS), unix, mem, and fault injection;
keys, TLS and the per-user key files of local servers.

The fault-injecting connection (``Faults``, ``FaultyConnection``) is for tests:
it is imported on first use, not by every process that imports netlet.
"""

from typing import TYPE_CHECKING

from netlet.transport._address import Address, advertised_address, parse_address
from netlet.transport._api import Accepted, Listener, connect, listen
from netlet.transport._base import Connection, PeerInfo
from netlet.transport._blocking import BlockingFramer, SendStalled, received_size
from netlet.transport._budget import Account, Budget
from netlet.transport._config import (
    InsecureWarning,
    TLSConfig,
    TransportConfig,
    generate_key,
    load_key,
    write_key,
)
from netlet.transport._framing import FrameReader, frame_parts
from netlet.transport._handshake import PROTOCOL_VERSION
from netlet.transport._socket import SocketConnection, more_follows
from netlet.transport._tls import cut_unfinished_closes
from netlet.transport._userkey import (
    find_user_key,
    is_local_address,
    save_user_key,
    server_user_key,
    user_key_dir,
    user_key_path,
)

if TYPE_CHECKING:
    from netlet.transport._faults import Faults, FaultyConnection

__all__ = [
    "PROTOCOL_VERSION",
    "Accepted",
    "Account",
    "Address",
    "BlockingFramer",
    "Budget",
    "Connection",
    "Faults",
    "FaultyConnection",
    "FrameReader",
    "InsecureWarning",
    "Listener",
    "PeerInfo",
    "SendStalled",
    "SocketConnection",
    "TLSConfig",
    "TransportConfig",
    "advertised_address",
    "connect",
    "cut_unfinished_closes",
    "find_user_key",
    "frame_parts",
    "generate_key",
    "is_local_address",
    "listen",
    "load_key",
    "more_follows",
    "parse_address",
    "received_size",
    "save_user_key",
    "server_user_key",
    "user_key_dir",
    "user_key_path",
    "write_key",
]


def __getattr__(name: str) -> object:
    """``Faults`` and ``FaultyConnection``, imported on first use."""
    if name in ("Faults", "FaultyConnection"):
        from netlet.transport import _faults

        return getattr(_faults, name)
    raise AttributeError(f"module 'netlet.transport' has no attribute {name!r}")
