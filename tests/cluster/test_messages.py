"""The head protocol's records are what PROTOCOL.md 16.5 says, byte for byte (no sockets)."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import pytest

from netlet.cluster._messages import Delivery, Pulled, Report, Tasks
from netlet.codec import Codec, Ext, record_types
from netlet.errors import DecodeError, WorkerLost

PROTOCOL = Path(__file__).parents[2] / "docs" / "PROTOCOL.md"


def section(title: str, end: str) -> str:
    text = PROTOCOL.read_text()
    return text[text.index(title):text.index(end)]


def documented() -> dict[int, tuple[str, list[str], list[str]]]:
    """``{wire id: (record, [field names], [columns])}`` from the table of 16.5."""
    out = {}
    for wid, name, fields in re.findall(r"^\| (\d+) \| `(\w+)` \| (.+?) \|",
                                        section("### 16.5 The records", "## 17."), re.M):
        out[int(wid)] = (name, re.findall(r"`(\w+):", fields),
                         re.findall(r"column `(\w+):", fields))
    return out


def test_every_cluster_record_is_documented_with_its_wire_id_fields_and_columns() -> None:
    ours = {wid: rt for wid, rt in record_types().items()
            if rt.cls.__module__.startswith("netlet.cluster.")}
    assert {wid: (rt.cls.__name__, list(rt.names), list(rt.columns))
            for wid, rt in ours.items()} == documented()
    assert all(1 <= wid <= 99 for wid in ours)


def test_the_retired_wire_ids_are_refused() -> None:
    text = section("### 16.5 The records", "## 17.")
    assert "Wire ids 2 to 7 are **retired**" in text
    for wid in range(2, 8):
        assert wid not in record_types()
        with pytest.raises(DecodeError, match=f"unknown record wire id {wid}"):
            Codec().decode(record_body(wid, "c1:7", "tasks:add", b"", "L9"))


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
    five = c.encode_value(5)
    for after, value in [
        ("**Example.**", Tasks(["c1:7"], ["tasks:add"], [body], [3])),
        ("The head hands it out", Pulled(["c1:7"], ["tasks:add"], [body], ["L9"], {}, 12)),
        ("The worker reports its result", Report(["c1:7"], [True], [five], ["L9"], [None],
                                                 [None], [])),
        ("And the head delivers it", Delivery(["c1:7"], [True], [five], [None])),
    ]:
        assert c.encode_value(value) == hex_block(after), after
        assert c.decode_value(hex_block(after)) == value


def test_rows_become_columns_and_back() -> None:
    specs = [("a", "m:f", b"1", 3), ("b", "m:g", b"2", 0)]
    tasks = Tasks.of(specs)
    assert tasks == Tasks(["a", "b"], ["m:f", "m:g"], [b"1", b"2"], [3, 0])
    assert list(tasks.rows()) == specs
    assert Tasks.of([]) == Tasks([], [], [], [])
    done = [("a", True, b"1", "L", None, None), ("b", False, b"e", "M", "KeyError", "tb")]
    report = Report.of(done, ["c"])
    assert (report.oks, report.error_types, report.started) == (
        [True, False], [None, "KeyError"], ["c"])
    assert list(report.rows()) == done
    assert Report.of([], []) == Report([], [], [], [], [], [], [])
    assert list(Pulled(["a"], ["f"], [b""], ["L"], {}, 1).rows()) == [("a", "f", b"", "L")]


def test_records_round_trip_inside_a_call() -> None:
    c = Codec()
    pulled = Pulled(["a", "b"], ["m:f", "pickle:x"], [b"\x90", b""], ["L", "M"],
                    {"pickle:x": b"p"}, 7)
    delivery = Delivery.of([("a", False, None, WorkerLost("gone")), ("b", True, b"\xc0", None)])
    body, buffers = c.encode([1, 5, "netlet.head", "x", [pulled, delivery], None])
    got_pulled, got = c.decode(body, buffers)[4]
    assert got_pulled == pulled
    (a, b) = got.rows()
    assert (a[:3], type(a[3]), str(a[3])) == (("a", False, None), WorkerLost, "gone")
    assert b == ("b", True, b"\xc0", None)


def record_body(*payload: object) -> bytes:
    return msgpack.packb([msgpack.ExtType(Ext.RECORD, msgpack.packb(list(payload)))])


GOOD_PULLED = (31, ["t"], ["f"], [b""], ["L"], {}, 1)


def pulled_with(i: int, value: object) -> tuple[object, ...]:
    return (*GOOD_PULLED[:i], value, *GOOD_PULLED[i + 1:])


@pytest.mark.parametrize(("payload", "error"), [
    ((32, ["t"], [1], [b""], ["L"], [None], [None], []),
     "Report: field oks must be list[bool], got list"),
    ((32, ["t"], [True], [""], ["L"], [None], [None], []),
     "Report: field bodies must be list[bytes], got list"),
    ((32, ["t"], [True], [b""], ["L"], [None], [None]), "Report (wire id 32) has 7 fields, got 6"),
    ((32, ["t"], [True], [b""], ["L"], [None], [], []),
     "Report: field tracebacks has 0 items, but ids has 1"),
    ((32, ["t"], [True], [b""], ["L"], [3], [None], []),
     "Report: field error_types must be list[str | None], got list"),
    ((32, [], [], [], [], [], [], [1]), "Report: field started must be list[str], got list"),
    (pulled_with(4, [9]), "Pulled: field leases must be list[str], got list"),
    (pulled_with(2, ["f", "g"]), "Pulled: field fns has 2 items, but ids has 1"),
    (pulled_with(1, {}), "Pulled: field ids must be list[str], got dict"),
    (pulled_with(5, {"pickle:x": "p"}), "Pulled: field functions must be dict[str, bytes]"),
    (pulled_with(6, True), "Pulled: field seq must be int, got bool"),
    ((33, ["t"], [False], [None], ["WorkerLost"]), "Delivery: field errors must be list["),
    ((33, ["t"], [True], [b"", b""], [None, None]), "Delivery: field bodies has 2 items, but"),
    ((30, ["t"], ["f"], [b""], ["3"]), "Tasks: field retries must be list[int], got list"),
    ((30, ["t"], ["f"], [b""], []), "Tasks: field retries has 0 items, but ids has 1"),
])
def test_a_malformed_head_message_is_refused_naming_the_record_and_field(
        payload: tuple[object, ...], error: str) -> None:
    assert Codec().decode(record_body(*GOOD_PULLED))[0].ids == ["t"]  # the template is good
    with pytest.raises(DecodeError, match=re.escape(error)):
        Codec().decode(record_body(*payload))
