"""Values <-> bytes: msgpack with netlet's extension types and limits. No I/O here."""

from netlet.codec._codec import Buffer, Codec, rebuild_exception, register_exception
from netlet.codec._guard import SLICED_FROM, short
from netlet.codec._records import RecordType, record, record_types
from netlet.codec._types import Ext, Limits, RemoteRef

__all__ = [
    "SLICED_FROM",
    "Buffer",
    "Codec",
    "Ext",
    "Limits",
    "RecordType",
    "RemoteRef",
    "rebuild_exception",
    "record",
    "record_types",
    "register_exception",
    "short",
]
