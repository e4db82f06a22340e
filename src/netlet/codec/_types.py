"""Value types the codec shares with the layers above: limits, remote refs, ext codes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from netlet.errors import ConfigError

__all__ = ["Buffer", "Ext", "Limits", "RemoteRef"]

Buffer = bytes | bytearray | memoryview
"""What the codec reads from and hands out as out-of-band data."""


class Ext(IntEnum):
    """msgpack extension type codes. These numbers never change meaning (PROTOCOL.md)."""

    TUPLE = 1
    SET = 2
    FROZENSET = 3
    DATETIME = 4
    DATE = 5
    TIMEDELTA = 6
    DECIMAL = 7
    UUID = 8
    BIGINT = 9
    COMPLEX = 10
    EXCEPTION = 11
    REF = 12
    BUFFER = 13
    NDARRAY = 14
    PICKLE = 15
    LONGINT = 16
    RECORD = 17


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a peer may make us decode; a violation fails that frame only."""

    max_frame: int = 64 * 1024 * 1024 + 64 * 1024
    """Largest frame (body plus out-of-band buffers), in bytes: 64 MiB of data plus
    room for the message around it, so a 64 MiB value fits."""
    max_depth: int = 32
    """Deepest nesting of extension values (tuples, sets, exceptions, ...).
    Plain lists and maps are also capped by msgpack itself at 1024 levels."""
    max_str: int = 64 * 1024 * 1024
    max_bin: int = 64 * 1024 * 1024
    max_array: int = 1024 * 1024
    """Most elements in one array. msgpack's C decoder builds an array without
    calling back into Python (so without letting another thread run): this bounds
    that stretch to a fraction of a second."""
    max_map: int = 1024 * 1024
    max_items: int = 4 * 1024 * 1024
    """Most values in one message: array elements, map keys and values, extension
    values, counted over the whole message. Bounds the memory and time a small
    body of tiny values (one byte can become a 64-byte object) makes us spend."""
    max_buffers: int = 64
    oob_threshold: int = 64 * 1024
    """Binary values at least this large, at the top of a message's arguments or
    result, travel out of band: written to the socket without being copied."""
    handshake_max: int = 16 * 1024
    """Largest frame accepted before the handshake completes."""

    def __post_init__(self) -> None:
        for name in ("max_frame", "max_str", "max_bin", "max_array", "max_map", "max_items",
                     "handshake_max"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Limits.{name} must be positive")
        if not 1 <= self.max_depth <= 1000:
            raise ConfigError("Limits.max_depth must be between 1 and 1000")
        if not 0 <= self.max_buffers <= 65535:
            raise ConfigError("Limits.max_buffers must be between 0 and 65535")
        if self.max_frame > 0xFFFFFFFF:
            raise ConfigError("Limits.max_frame cannot exceed 4 GiB - 1")


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """Where a remote object or channel lives: enough to call it from anywhere."""

    node: str
    """Id of the owning node; lets a peer call back over an existing connection."""
    address: str
    """Address the owner listens on, or "" for a node that only dials out."""
    name: str
    """Name (or generated id) the object is served under on its node."""
    kind: str = "object"
    """"object" for exposed objects, "channel" for channels."""

    def __netlet_ref__(self) -> RemoteRef:
        """A bare ref travels as a handle too (the receiver gets a proxy)."""
        return self
