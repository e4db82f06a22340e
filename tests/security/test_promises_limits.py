"""docs/PROTOCOL.md §11 and §12: each per-message limit, one past it, against a real node.

The table says: past ``max_array``, ``max_map``, ``max_items``, ``max_depth``,
the BIGINT and DATETIME payload limits and the extension-payload budget, the
message is undecodable, and a CALL with an int id gets an ERROR
``netlet.errors.DecodeError`` while the connection stays open. Each case sends
the value just at the limit (answered) and just past it (refused), then uses
the same connection again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

import netlet
from netlet.codec import Ext
from tests.conftest import RawClient

NodeFactory = Callable[..., netlet.Node]

pytestmark = pytest.mark.timeout(60)

MI = 1024 * 1024


@netlet.expose
class Sink:
    def size(self, value: Any) -> int:
        return len(value) if hasattr(value, "__len__") else 1


def raw_call(cid: int, arg: bytes) -> bytes:
    """``[1, cid, "sink", "size", [arg], nil]`` around an already encoded argument."""
    packed_id: bytes = msgpack.packb(cid)
    return b"\x96\x01" + packed_id + b"\xa4sink\xa4size\x91" + arg + b"\xc0"


def array_head(n: int) -> bytes:
    return b"\xdd" + struct.pack(">I", n)


def map_head(n: int) -> bytes:
    return b"\xdf" + struct.pack(">I", n)


def ext(code: int, payload: bytes) -> bytes:
    packed: bytes = msgpack.packb(msgpack.ExtType(code, payload))
    return packed


def nested_tuples(depth: int, inner: bytes) -> bytes:
    value = inner
    for _ in range(depth):
        value = ext(Ext.TUPLE, b"\x91" + value)
    return value


# name -> (at the limit, one past it)
CASES: dict[str, tuple[bytes, bytes]] = {
    "max_array (1 Mi elements)": (array_head(MI) + b"\xc0" * MI,
                                  array_head(MI + 1) + b"\xc0" * (MI + 1)),
    "max_map (1 Mi entries)": (map_head(MI) + b"".join(msgpack.packb(i) + b"\xc0"
                                                       for i in range(MI)),
                               map_head(MI + 1) + b"".join(msgpack.packb(i) + b"\xc0"
                                                           for i in range(MI + 1))),
    # Counted per container as its length + 1: the CALL (7), its args (2), the outer
    # array (5) and four arrays of m + 1: 4 Mi - 2 values for m = 1 Mi - 5, 4 Mi + 6 past it.
    "max_items (4 Mi values)": (array_head(4) + (array_head(MI - 5) + b"\xc0" * (MI - 5)) * 4,
                                array_head(4) + (array_head(MI - 3) + b"\xc0" * (MI - 3)) * 4),
    "max_depth (32 extensions)": (nested_tuples(32, b"\xc0"), nested_tuples(33, b"\xc0")),
    "BIGINT payload (4300 bytes)": (ext(Ext.BIGINT, b"9" * 4300), ext(Ext.BIGINT, b"9" * 4301)),
    "DATETIME payload (64 bytes)": (ext(Ext.DATETIME, b"2024-05-06T07:08:09.123456+00:00"),
                                    ext(Ext.DATETIME, b"2024-05-06T07:08:09" + b"0" * 46)),
    "DATE payload (64 bytes)": (ext(Ext.DATE, b"2024-05-06"),
                                ext(Ext.DATE, b"2024-05-06" + b" " * 55)),
    # Each level hands its whole payload to the hook again: 3 levels of 200 KiB fit in
    # 4 x body + 64 KiB, 6 levels do not (a peer's bytes are not multiplied at will).
    "extension payloads in total (4 x body + 64 KiB)": (
        nested_tuples(3, msgpack.packb(b"x" * 200_000)),
        nested_tuples(6, msgpack.packb(b"x" * 200_000))),
}


def error_type(answer: list[Any]) -> str:
    assert answer[0] == 3, f"expected an ERROR, got {answer!r}"[:300]
    return str(msgpack.unpackb(answer[2].data, raw=False)[0])


@pytest.fixture
def address(node_factory: NodeFactory) -> str:
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(Sink(), "sink")
    assert server.address is not None
    return server.address


@pytest.mark.parametrize("name", list(CASES))
def test_one_past_each_limit_is_a_decode_error_and_the_connection_stays(
        address: str, name: str) -> None:
    at_limit, past = CASES[name]
    with RawClient.connect(address) as raw:
        raw.handshake()
        raw.send_frame(raw_call(1, at_limit))
        answer = raw.recv_msg()
        assert answer[:2] == [2, 1], f"{name}: the value at the limit was refused: {answer!r}"[:400]
        raw.send_frame(raw_call(2, past))
        answer = raw.recv_msg()
        assert answer[1] == 2
        assert error_type(answer) == "netlet.errors.DecodeError", name
        raw.send_frame(raw_call(3, msgpack.packb("still here")))
        assert raw.recv_msg() == [2, 3, 10]
