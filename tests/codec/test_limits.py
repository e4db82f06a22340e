"""The codec's limits: what a peer may make us decode, and what we refuse to encode.

Every violation on the decoding side is a ``DecodeError`` (the frame is refused,
nothing else happens); values netlet cannot send are an ``EncodeError`` that
names the type.
"""

from __future__ import annotations

import datetime as dt
import pickle
import socket
import sys
import threading
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlet.codec import Codec, Ext, Limits
from netlet.errors import ConfigError, DecodeError, EncodeError

SMALL = Limits(max_str=10, max_bin=10, max_array=10, max_map=10, max_depth=5)


def packed(value: Any) -> bytes:
    return Codec().encode_value(value)


def nest_tuples(levels: int) -> Any:
    value: Any = ()
    for _ in range(levels - 1):
        value = (value,)
    return value


@pytest.mark.parametrize(("ok", "too_big"), [
    ("x" * 10, "x" * 11),
    (b"x" * 10, b"x" * 11),
    (list(range(10)), list(range(11))),
    ({i: i for i in range(10)}, {i: i for i in range(11)}),
    # Inside extension types the same limits apply.
    (tuple(range(10)), tuple(range(11))),
    ({"k": ("x" * 10,)}, {"k": ("x" * 11,)}),
    (frozenset(range(10)), frozenset(range(11))),
], ids=["str", "bin", "array", "map", "tuple", "str-in-tuple", "frozenset"])
def test_values_over_the_limits_are_refused(ok: Any, too_big: Any) -> None:
    codec = Codec(SMALL)
    assert codec.decode_value(packed(ok)) == ok
    with pytest.raises(DecodeError):
        codec.decode_value(packed(too_big))


def test_limits_apply_to_message_bodies_too() -> None:
    codec = Codec(SMALL)
    body, buffers = Codec().encode([1, 2, "s", "m", ["y" * 11], None])
    with pytest.raises(DecodeError):
        codec.decode(body, buffers)


@pytest.mark.parametrize("depth", [1, 2, 5, 32])
def test_extension_nesting_up_to_max_depth_decodes(depth: int) -> None:
    codec = Codec(Limits(max_depth=depth))
    value = nest_tuples(depth)
    assert codec.decode_value(packed(value)) == value


@pytest.mark.parametrize("depth", [1, 2, 5, 32])
def test_extension_nesting_deeper_than_max_depth_is_refused(depth: int) -> None:
    codec = Codec(Limits(max_depth=depth))
    with pytest.raises(DecodeError, match="deeper"):
        codec.decode_value(packed(nest_tuples(depth + 1)))


def test_depth_counts_every_extension_kind() -> None:
    codec = Codec(Limits(max_depth=3))
    ok = {"a": [(frozenset({(1,)}),)]}             # tuple > frozenset > tuple
    assert codec.decode_value(packed(ok)) == ok
    too_deep = [({1: {frozenset({(1,)})}},)]       # tuple > set > frozenset > tuple
    with pytest.raises(DecodeError):
        codec.decode_value(packed(too_deep))
    exc_in_tuple = (ValueError((1,)),)               # tuple > exception > tuple
    assert codec.decode_value(packed(exc_in_tuple))[0].args == ((1,),)
    with pytest.raises(DecodeError):
        codec.decode_value(packed((exc_in_tuple,)))  # one more tuple around it


def test_hostile_nesting_is_refused_without_blowing_the_stack() -> None:
    codec = Codec()
    plain = b"\x91" * 100_000 + b"\xc0"  # a list in a list in ... 100k deep
    with pytest.raises(DecodeError):
        codec.decode(plain)
    # Extension nesting built by hand, far deeper than any encoder would go.
    data = msgpack.packb(None)
    for _ in range(2000):
        data = msgpack.packb(msgpack.ExtType(Ext.TUPLE, b"\x91" + data))
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_encoding_a_very_deep_value_is_an_encode_error() -> None:
    # A value too deep to encode must fail like any other unencodable value, so
    # that a reply that cannot travel is reported to the caller instead of
    # crashing the thread that tried to send it.
    deep = nest_tuples(sys.getrecursionlimit() * 2)
    with pytest.raises(EncodeError):
        Codec().encode_value(deep)
    with pytest.raises(EncodeError):
        Codec().encode([2, 1, deep])


def test_long_decimal_integers_are_refused() -> None:
    # Decimal text takes quadratic time to turn into an int: ext 9 stops at 4300 digits.
    ok = 10**4000
    assert Codec().decode_value(packed(ok)) == ok
    forged = msgpack.packb(msgpack.ExtType(Ext.BIGINT, b"9" * 5000))
    with pytest.raises(DecodeError):
        Codec().decode(forged)


@pytest.mark.parametrize(("base", "power", "add"), [
    (10, 4300, 0), (-10, 4301, 0), (2, 14_001, 0), (10, 100_000, 1), (-2, 8 * 2_000_000 + 1, 3)])
def test_integers_of_any_size_travel_as_bytes(base: int, power: int, add: int) -> None:
    n = base**power + add  # built here: pytest cannot show a 4300-digit parameter
    # README: "int of any size". Beyond 14,000 bits, ext 16 (sign, magnitude bytes):
    # linear both ways, where str(n) refused 4300 digits (an EncodeError, found by hand).
    data = packed(n)
    assert msgpack.unpackb(data, ext_hook=lambda code, _: code) == Ext.LONGINT
    assert Codec().decode_value(data) == n


def test_long_integers_take_any_magnitude_and_refuse_other_forms() -> None:
    def ext16(payload: bytes) -> bytes:
        return msgpack.packb(msgpack.ExtType(Ext.LONGINT, payload))

    codec = Codec()
    assert codec.decode_value(ext16(b"\x00\x00\x05")) == 5  # small, leading zero: fine
    assert codec.decode_value(ext16(b"\x01\x01" + b"\x00" * 2000)) == -(256**2000)
    for bad in (b"", b"\x00", b"\x02\x05", b"\xff" * 10):
        with pytest.raises(DecodeError, match="malformed long integer"):
            codec.decode_value(ext16(bad))


def test_frame_size_limit_applies_when_encoding() -> None:
    codec = Codec(Limits(max_frame=1000, oob_threshold=100))
    codec.encode([1, b"x" * 900])
    with pytest.raises(EncodeError, match="exceeds"):
        codec.encode([1, b"x" * 1001])  # out of band, still counted
    with pytest.raises(EncodeError, match="exceeds"):
        codec.encode([1, "y" * 1001])


def test_out_of_band_references_must_exist() -> None:
    codec = Codec()
    body, buffers = codec.encode([1, b"z" * 100_000])
    assert len(buffers) == 1
    with pytest.raises(DecodeError, match="out-of-band"):
        codec.decode(body, [])
    forged = msgpack.packb([msgpack.ExtType(Ext.BUFFER, msgpack.packb(5))])
    with pytest.raises(DecodeError):
        codec.decode(forged, [b"a"])
    forged = msgpack.packb([msgpack.ExtType(Ext.BUFFER, msgpack.packb("0"))])
    with pytest.raises(DecodeError):
        codec.decode(forged, [b"a"])


# -- pickle ------------------------------------------------------------------------------

_UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    _UNPICKLED.append(tag)
    return tag


class _Payload:
    """Unpickling this runs code: exactly what a peer without consent must not do."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_unpickling, ("ran",))


def test_pickle_is_refused_without_consent() -> None:
    _UNPICKLED.clear()
    forged = msgpack.packb([1, 2, "svc", "m",
                            [msgpack.ExtType(Ext.PICKLE, pickle.dumps(_Payload()))], None])
    with pytest.raises(DecodeError, match="pickle"):
        Codec().decode(forged)
    assert _UNPICKLED == []
    # The same bytes are accepted by a codec that agreed to pickle (the control).
    assert Codec(allow_pickle=True).decode(forged)[4] == ["ran"]
    assert _UNPICKLED == ["ran"]


def test_pickle_is_only_used_when_agreed() -> None:
    lock = threading.Lock()
    with pytest.raises(EncodeError):
        Codec().encode_value(lock)
    with_pickle = Codec(allow_pickle=True)
    data = with_pickle.encode_value(_Payload())
    assert msgpack.unpackb(data).code == Ext.PICKLE


def test_numpy_object_arrays_are_refused() -> None:
    arr = np.array([object(), 1], dtype=object)
    with pytest.raises(EncodeError, match="pickle"):
        Codec().encode_value(arr)
    forged = msgpack.packb(msgpack.ExtType(Ext.NDARRAY, msgpack.packb(["|O", [1], b"\0" * 8])))
    with pytest.raises(DecodeError):
        Codec(allow_pickle=True).decode(forged)


# -- unsupported types -------------------------------------------------------------------


class NotAValue:
    pass


@pytest.mark.parametrize(("value", "name"), [
    (NotAValue(), f"{__name__}.NotAValue"),
    ([1, {"k": (NotAValue(),)}], f"{__name__}.NotAValue"),
    (object(), "builtins.object"),
    (lambda: 1, "builtins.function"),
    (threading.Lock(), "_thread.lock"),
    (dt.time(12, 30), "datetime.time"),
    (range(3), "builtins.range"),
])
def test_unsupported_types_are_an_encode_error_naming_the_type(value: Any, name: str) -> None:
    with pytest.raises(EncodeError) as err:
        Codec().encode_value(value)
    assert name in str(err.value)
    with pytest.raises(EncodeError) as err:
        Codec().encode([1, 7, value])
    assert name in str(err.value)


def test_a_socket_cannot_be_sent() -> None:
    with socket.socket() as s, pytest.raises(EncodeError, match="socket"):
        Codec().encode_value(s)


@pytest.mark.parametrize("bad", [
    {"max_depth": 0}, {"max_depth": 1001}, {"max_frame": 0}, {"max_str": -1},
    {"max_buffers": -1}, {"max_frame": 2**32},
])
def test_limits_refuse_nonsense(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        Limits(**bad)


@pytest.mark.timeout(60)
@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 12), size=st.sampled_from([0, 1000, 30_000, 100_000]),
       kind=st.sampled_from(["tuple", "set", "mixed"]))
def test_what_the_encoder_accepts_the_decoder_takes(depth: int, size: int, kind: str) -> None:
    # The decoder takes extension values apart within a budget (4 x the body + 64 KiB,
    # counted at every level); the encoder keeps to it, refusing with EncodeError what
    # a peer would refuse, so a value that leaves is one the peer decodes.
    value: Any = "x" * size
    for level in range(depth):
        wrap = frozenset if kind == "set" or (kind == "mixed" and level % 2) else tuple
        value = wrap((value,))
    codec = Codec()
    refused: list[str] = []
    try:
        body, buffers = codec.encode([1, value])
    except EncodeError as e:
        refused.append(str(e))
    if refused:
        assert "nested too deeply for its size" in refused[0]
    else:
        assert codec.decode(body, buffers) == [1, value]


def test_the_encoder_refuses_what_the_decoders_budget_would() -> None:
    value: Any = "x" * 100_000
    for _ in range(6):  # 6 levels of 100 KB: 600 KB of payloads in a 100 KB message
        value = (value,)
    with pytest.raises(EncodeError, match="nested too deeply for its size"):
        Codec().encode([1, value])
    raw: Any = "x" * 100_000  # the same value packed by hand, as a peer without the check
    for _ in range(6):
        raw = msgpack.ExtType(Ext.TUPLE, msgpack.packb([raw]))
    with pytest.raises(DecodeError, match="nested too deeply for the message's size"):
        Codec().decode(msgpack.packb([1, raw]))
    lists: Any = "x" * 100_000
    for _ in range(20):  # lists nest freely
        lists = [lists]
    assert Codec().decode(*Codec().encode([1, lists])) == [1, lists]
