"""Frames between two endpoints: tcp (optionally TLS), unix, mem, and fault injection."""

from netlet.transport._address import Address, advertised_address, parse_address
from netlet.transport._api import Accepted, Listener, connect, listen
from netlet.transport._base import Connection, PeerInfo
from netlet.transport._blocking import BlockingFramer
from netlet.transport._budget import Account, Budget
from netlet.transport._config import TLSConfig, TransportConfig, generate_key, load_key, write_key
from netlet.transport._faults import Faults, FaultyConnection
from netlet.transport._framing import FrameReader, frame_parts
from netlet.transport._handshake import PROTOCOL_VERSION
from netlet.transport._socket import SocketConnection

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
    "Listener",
    "PeerInfo",
    "SocketConnection",
    "TLSConfig",
    "TransportConfig",
    "advertised_address",
    "connect",
    "frame_parts",
    "generate_key",
    "listen",
    "load_key",
    "parse_address",
    "write_key",
]
