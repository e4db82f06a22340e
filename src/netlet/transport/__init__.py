"""Frames between two endpoints: tcp (optionally TLS), unix, mem, and fault injection;
keys, TLS and the per-user key files of local servers."""

from netlet.transport._address import Address, advertised_address, parse_address
from netlet.transport._api import Accepted, Listener, connect, listen
from netlet.transport._base import Connection, PeerInfo
from netlet.transport._blocking import BlockingFramer, SendStalled
from netlet.transport._budget import Account, Budget
from netlet.transport._config import (
    InsecureWarning,
    TLSConfig,
    TransportConfig,
    generate_key,
    load_key,
    write_key,
)
from netlet.transport._faults import Faults, FaultyConnection
from netlet.transport._framing import FrameReader, frame_parts
from netlet.transport._handshake import PROTOCOL_VERSION
from netlet.transport._socket import SocketConnection, more_follows
from netlet.transport._userkey import (
    find_user_key,
    is_local_address,
    save_user_key,
    server_user_key,
    user_key_dir,
    user_key_path,
)

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
    "find_user_key",
    "frame_parts",
    "generate_key",
    "is_local_address",
    "listen",
    "load_key",
    "more_follows",
    "parse_address",
    "save_user_key",
    "server_user_key",
    "user_key_dir",
    "user_key_path",
    "write_key",
]
