"""Records (ext 17, PROTOCOL.md 6.4): round trips, the exact wire form, strict decoding."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from netlet.codec import Codec, Ext, record, record_types
from netlet.errors import DecodeError

# Test-only wire ids, far from the ones netlet uses.
BASE = 2_000_000_000


@record(BASE + 1)
@dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int


@record(BASE + 2)
@dataclass(frozen=True, slots=True)
class Everything:
    name: str
    data: bytes
    n: int
    f: float
    flag: bool
    maybe: str | None
    ints: list[int]
    table: dict[str, int]
    pair: tuple[int, str]
    many: tuple[int, ...]
    when: dt.datetime
    point: Point
    points: list[Point]
    anything: Any


@record(BASE + 3)
@dataclass(frozen=True, slots=True)
class Empty:
    pass


@record(BASE + 4)
@dataclass(frozen=True, slots=True)
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError("n must be positive")


def ext_record(*payload: Any) -> bytes:
    """A body [<ext 17 of payload>] built by hand (no netlet encoder involved)."""
    return msgpack.packb([msgpack.ExtType(Ext.RECORD, msgpack.packb(list(payload)))])


ints = st.integers(-(2**63), 2**64 - 1)
points = st.builds(Point, ints, ints)
plain = st.one_of(st.none(), st.booleans(), ints, st.text(), st.binary())
everything = st.builds(
    Everything, st.text(), st.binary(), ints, st.floats(allow_nan=False), st.booleans(),
    st.none() | st.text(), st.lists(ints), st.dictionaries(st.text(), ints),
    st.tuples(ints, st.text()), st.lists(ints).map(tuple),
    st.datetimes(), points, st.lists(points), plain)


@given(everything)
def test_records_round_trip(value: Everything) -> None:
    c = Codec()
    body, buffers = c.encode([value, (value.point,), {value.point: 1}])
    assert c.decode(body, buffers) == [value, (value.point,), {value.point: 1}]


@given(points)
def test_the_wire_form_is_the_wire_id_then_the_fields_in_order(p: Point) -> None:
    body, _ = Codec().encode([p])
    assert body == ext_record(BASE + 1, p.x, p.y)


def test_a_record_in_a_record_field_is_a_bare_array_of_its_fields() -> None:
    value = Everything("n", b"", 1, 1.5, True, None, [], {}, (1, "x"), (), dt.datetime(2024, 1, 1),
                       Point(1, 2), [Point(3, 4), Point(5, 6)], None)
    payload = msgpack.unpackb(Codec().encode_value(value)[3:])  # after the ext 17 header
    assert payload[0] == BASE + 2
    assert payload[12:14] == [[1, 2], [[3, 4], [5, 6]]]


def test_an_empty_record_is_its_wire_id_alone() -> None:
    body, _ = Codec().encode([Empty()])
    assert body == ext_record(BASE + 3)
    assert Codec().decode(body) == [Empty()]


def test_the_registry_lists_every_record() -> None:
    rt = record_types()[BASE + 2]
    assert rt.cls is Everything
    assert rt.names[:3] == ("name", "data", "n")
    assert rt.field_types()[5] == "str | None"
    assert rt.field_types()[8] == "tuple[int, str]"


@pytest.mark.parametrize(("body", "error"), [
    (ext_record(BASE + 99, 1), f"unknown record wire id {BASE + 99}: no record type of this "
     "process has it; import the module that defines it"),
    (ext_record("1", 1), "unknown record wire id '1'"),
    (ext_record(True, 1), "unknown record wire id True"),
    (ext_record(), "a record is an array"),
    (msgpack.packb([msgpack.ExtType(Ext.RECORD, msgpack.packb(BASE + 1))]),
     "a record is an array"),
    (ext_record(BASE + 1, 1), "record Point (wire id 2000000001) has 2 fields, got 1"),
    (ext_record(BASE + 1, 1, 2, 3), "has 2 fields, got 3"),
    (ext_record(BASE + 1, 1, "2"), "record Point: field y must be int, got str '2'"),
    (ext_record(BASE + 1, True, 2), "record Point: field x must be int, got bool True"),
    (ext_record(BASE + 1, 1.0, 2), "field x must be int, got float"),
    (ext_record(BASE + 4, 0), "record Positive: n must be positive"),
])
def test_bad_records_are_refused_with_a_clear_error(body: bytes, error: str) -> None:
    with pytest.raises(DecodeError, match=error.replace("(", r"\(").replace(")", r"\)")):
        Codec().decode(body)


def tup(*items: Any) -> msgpack.ExtType:
    return msgpack.ExtType(Ext.TUPLE, msgpack.packb(list(items)))


def nested_field(i: int, value: Any) -> bytes:
    good: list[Any] = ["a", b"b", 1, 1.5, False, None, [1], {"k": 1}, tup(1, "x"), tup(1, 2),
                       msgpack.ExtType(Ext.DATETIME, b"2024-01-01T00:00:00"),
                       [1, 2], [[3, 4]], 0]
    good[i] = value
    return ext_record(BASE + 2, *good)


@pytest.mark.parametrize(("index", "value", "field"), [
    (0, b"a", "name"), (1, "b", "data"), (3, 1, "f"), (4, 0, "flag"), (5, 1, "maybe"),
    (6, [1, "2"], "ints"), (6, tup(1), "ints"), (7, {"k": "v"}, "table"), (7, {1: 1}, "table"),
    (8, [1, "x"], "pair"), (8, tup(1), "pair"), (8, tup(1, 2), "pair"), (9, tup("x"), "many"),
    (9, [1], "many"), (10, "2024", "when"),
    (11, msgpack.ExtType(Ext.RECORD, msgpack.packb([BASE + 1, 1, 2])), "point"),
    (11, 1, "point"), (12, [msgpack.ExtType(Ext.RECORD, msgpack.packb([BASE + 1, 1, 2]))], "?"),
    (12, [[1, "2"]], "?"), (12, [[1]], "?"),
])
def test_every_field_type_is_checked(index: int, value: Any, field: str) -> None:
    assert Codec().decode(nested_field(0, "a"))[0].points == [Point(3, 4)]  # the template is good
    if field == "?":  # an element of points: the error names the inner record
        field_error = (r"record Point( \(in a field\))?: field y must be int|"
                       r"record Point \(in a field\) (is an array|has 2 fields, got 1)")
    else:
        field_error = f"record Everything: field {field} must be"
    with pytest.raises(DecodeError, match=field_error):
        Codec().decode(nested_field(index, value))


@given(st.lists(st.one_of(plain, st.lists(plain, max_size=3)), max_size=16),
       st.sampled_from([BASE + 1, BASE + 2, BASE + 3, BASE + 4]))
def test_hostile_payloads_decode_or_raise_decode_error(fields: list[Any], wire_id: int) -> None:
    body = ext_record(wire_id, *fields)
    try:
        got = Codec().decode(body)
    except DecodeError:
        return
    assert type(got[0]) is record_types()[wire_id].cls


def test_a_record_field_never_unpickles_without_consent() -> None:
    body = ext_record(BASE + 2, "a", b"", 1, 1.5, False, None, [], {}, tup(1, "x"), tup(),
                      msgpack.ExtType(Ext.DATETIME, b"2024-01-01T00:00:00"),
                      [1, 2], [],
                      msgpack.ExtType(Ext.PICKLE, b"cos\nsystem\n(S'true'\ntR."))
    with pytest.raises(DecodeError, match="pickle"):
        Codec().decode(body)


def test_a_wire_id_taken_twice_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match=r"taken by .*Point"):
        @record(BASE + 1)
        @dataclass(frozen=True, slots=True)
        class Other:
            x: int
    assert record_types()[BASE + 1].cls is Point
    body, _ = Codec().encode([Point(1, 2)])
    assert Codec().decode(body) == [Point(1, 2)]


def test_records_must_be_frozen_slots_dataclasses() -> None:
    with pytest.raises(TypeError, match="frozen=True, slots=True"):
        @record(BASE + 50)
        @dataclass(frozen=True)
        class NoSlots:
            x: int
    with pytest.raises(TypeError, match="frozen=True, slots=True"):
        @record(BASE + 51)
        class NotADataclass:
            pass
    assert BASE + 50 not in record_types()
    assert BASE + 51 not in record_types()


def test_a_field_type_the_decoder_cannot_check_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match=r"Odd\.x: the decoder cannot check"):
        @record(BASE + 52)
        @dataclass(frozen=True, slots=True)
        class Odd:
            x: range
    with pytest.raises(TypeError, match="cannot be told apart"):
        @record(BASE + 53)
        @dataclass(frozen=True, slots=True)
        class Ambiguous:
            x: list[int] | list[str]
    assert BASE + 52 not in record_types()
    assert BASE + 53 not in record_types()


@record(BASE + 5)
@dataclass(frozen=True, slots=True)
class WithDefaults:
    a: int
    b: str = "b"
    c: str | None = None


def test_records_built_in_python_keep_their_dataclass_behaviour() -> None:
    assert WithDefaults(1) == WithDefaults(1, "b", None)
    assert WithDefaults(1, c="c").c == "c"
    assert dataclasses.replace(WithDefaults(1), b="x") == WithDefaults(1, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        WithDefaults(1).a = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="positive"):
        Positive(0)
    with pytest.raises(TypeError):
        WithDefaults()  # type: ignore[call-arg]
    body, _ = Codec().encode([WithDefaults(1)])
    assert body == ext_record(BASE + 5, 1, "b", None)  # defaults travel too


@record(BASE + 6, columns=("names", "blobs", "errors"))
@dataclass(frozen=True, slots=True)
class Rows:
    names: list[str]
    blobs: list[bytes | None]
    errors: list[BaseException | None]
    counts: list[int]
    """Not a column: its length is its own."""
    table: dict[str, bytes]


def rows(*fields: Any) -> bytes:
    good: list[Any] = [["a", "b"], [b"x", None], [None, None], [1], {"k": b"v"}]
    for i, value in enumerate(fields):
        if value is not ...:
            good[i] = value
    return ext_record(BASE + 6, *good)


def test_columns_round_trip_and_may_hold_any_exception() -> None:
    value = Rows(["a", "b", "c"], [b"x", None, b""], [None, KeyError("k"), None], [], {})
    body, buffers = Codec().encode([value, Rows([], [], [], [1, 2], {"f": b"p"})])
    got = Codec().decode(body, buffers)
    assert got[1] == Rows([], [], [], [1, 2], {"f": b"p"})
    assert (got[0].names, got[0].blobs, got[0].counts) == (["a", "b", "c"], [b"x", None, b""], [])
    assert [type(e) for e in got[0].errors] == [type(None), KeyError, type(None)]
    assert Codec().decode(rows())[0].names == ["a", "b"]  # the template is good


@pytest.mark.parametrize(("fields", "error"), [
    ((["a"],), "record Rows: field blobs has 2 items, but names has 1 "
               "(columns names, blobs, errors are of equal length)"),
    ((..., ..., [None]), "field errors has 1 items, but names has 2"),
    ((..., ..., ..., [1, 2, 3]), None),  # not a column: any length
    ((["a", 1],), "field names must be list[str], got list"),
    ((["a", b"b"],), "field names must be list[str], got list"),
    ((..., [b"x", "y"]), "field blobs must be list[bytes | None], got list"),
    ((..., ..., [None, "ValueError"]),
     "field errors must be list[exception (BaseException) | None], got list"),
    ((..., ..., ..., [True]), "field counts must be list[int], got list"),
    ((..., ..., ..., [1.0]), "field counts must be list[int], got list"),
    ((..., ..., ..., ..., {"k": "v"}), "field table must be dict[str, bytes], got dict"),
    ((..., ..., ..., ..., {1: b"v"}), "field table must be dict[str, bytes], got dict"),
    (({"a": 1},), "field names must be list[str], got dict"),
])
def test_columns_are_of_equal_length_and_each_item_has_its_type(
        fields: tuple[Any, ...], error: str | None) -> None:
    if error is None:
        assert Codec().decode(rows(*fields))[0].counts == fields[-1]
        return
    with pytest.raises(DecodeError, match=re.escape(error)):
        Codec().decode(rows(*fields))


def test_columns_are_list_fields_named_by_the_record() -> None:
    for columns, why in [(("names", "nothing"), "column 'nothing' is not a list field"),
                         (("names", "count"), "column 'count' is not a list field"),
                         (("names",), "two or more distinct fields"),
                         (("names", "names"), "two or more distinct fields")]:
        with pytest.raises(TypeError, match=why):
            @record(BASE + 54, columns=columns)
            @dataclass(frozen=True, slots=True)
            class Bad:
                names: list[str]
                count: int
    assert BASE + 54 not in record_types()
    assert record_types()[BASE + 6].columns == ("names", "blobs", "errors")
