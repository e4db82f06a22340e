"""The head protocol's records are what PROTOCOL.md 16.5 says, byte for byte (no sockets)."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import pytest

from netlet.cluster._messages import HandOut, Pulled, TaskResult, WorkerResult
from netlet.codec import Codec, Ext, record_types
from netlet.errors import DecodeError, WorkerLost

PROTOCOL = Path(__file__).parents[2] / "docs" / "PROTOCOL.md"


def section(title: str, end: str) -> str:
    text = PROTOCOL.read_text()
    return text[text.index(title):text.index(end)]


def documented() -> dict[int, tuple[str, list[str]]]:
    """``{wire id: (record, [field names])}`` from the table of 16.5."""
    out = {}
    for wid, name, fields in re.findall(r"^\| (\d+) \| `(\w+)` \| (.+?) \|",
                                        section("### 16.5 The records", "## 17."), re.M):
        out[int(wid)] = (name, re.findall(r"`(\w+):", fields))
    return out


def test_every_cluster_record_is_documented_with_its_wire_id_and_fields() -> None:
    ours = {wid: rt for wid, rt in record_types().items()
            if rt.cls.__module__ == "netlet.cluster._messages"}
    assert {wid: (rt.cls.__name__, list(rt.names)) for wid, rt in ours.items()} == documented()
    assert all(1 <= wid <= 99 for wid in ours)


def hex_block(after: str) -> bytes:
    """The bytes of the first code block after ``after`` in 16.5 (hex pairs before comments)."""
    text = section("### 16.5 The records", "## 17.")
    block = text[text.index(after):].split("```")[1]
    return bytes.fromhex(" ".join(
        " ".join(re.findall(r"\b[0-9a-f]{2}\b", line.split("  ")[0]))
        for line in block.strip().splitlines()))


def test_the_documented_examples_are_what_netlet_sends() -> None:
    c = Codec()
    body = c.encode_value([[2, 3], None])
    assert body == bytes.fromhex("929202 03c0".replace(" ", ""))
    hand = HandOut("c1:7", "tasks:add", body, "L9")
    assert c.encode_value(hand) == hex_block("**Example.**")
    assert c.decode_value(hex_block("**Example.**")) == hand
    done = WorkerResult("c1:7", True, c.encode_value(5), "L9")
    assert c.encode_value(done) == hex_block("and the worker's result")


def test_records_round_trip_inside_a_call() -> None:
    c = Codec()
    pulled = Pulled([HandOut("a", "m:f", b"\x90", "L")], {"pickle:x": b"p"}, 7)
    failed = TaskResult("a", False, None, WorkerLost("gone"))
    body, buffers = c.encode([1, 5, "netlet.head", "x", [pulled, [failed]], None])
    got = c.decode(body, buffers)
    assert got[4][0] == pulled
    (back,) = got[4][1]
    assert (back.id, back.ok, back.body, type(back.error), str(back.error)) == (
        "a", False, None, WorkerLost, "gone")


def record_body(*payload: object) -> bytes:
    return msgpack.packb([msgpack.ExtType(Ext.RECORD, msgpack.packb(list(payload)))])


@pytest.mark.parametrize(("payload", "error"), [
    ((4, "t", 1, b"", "L", None, None), "WorkerResult: field ok must be bool, got int"),
    ((4, "t", True, "", "L", None, None), "WorkerResult: field body must be bytes"),
    ((4, "t", True, b"", "L"), "WorkerResult .wire id 4. has 6 fields, got 4"),
    ((2, "t", "f", b"", 9), "HandOut: field lease must be str, got int"),
    ((3, [["t", "f", b"", 9]], {}, 1), "HandOut: field lease must be str, got int"),
    ((3, [msgpack.ExtType(Ext.RECORD, msgpack.packb([2, "t", "f", b"", "L"]))], {}, 1),
     r"HandOut \(in a field\) is an array of its fields, got HandOut"),
    ((3, {}, {}, 1), "Pulled: field tasks must be list.HandOut., got dict"),
    ((5, "t", False, None, "WorkerLost"), "TaskResult: field error must be"),
])
def test_a_malformed_head_message_is_refused_naming_the_record_and_field(
        payload: tuple[object, ...], error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        Codec().decode(record_body(*payload))
