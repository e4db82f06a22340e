"""Every netlet value type survives encode -> decode with its exact type, and garbage is refused.

Property tests (hypothesis) over nested mixes of all value types, exceptions
(rebuilt or turned into ``RemoteError``), numpy arrays, and out-of-band buffers;
then random and truncated bytes, which may only ever raise ``DecodeError``.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import pickle
import uuid
from collections import namedtuple
from decimal import Decimal
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import netlet
from netlet.codec import Codec, Limits, RemoteRef, register_exception
from netlet.errors import DecodeError, RemoteError

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def roundtrip(value: Any, codec: Codec | None = None) -> Any:
    codec = codec or Codec()
    return codec.decode_value(codec.encode_value(value))


def message_roundtrip(message: list[Any], codec: Codec | None = None) -> Any:
    codec = codec or Codec()
    body, buffers = codec.encode(message)
    return codec.decode(body, [bytes(memoryview(b)) for b in buffers])


def same(a: Any, b: Any) -> bool:
    """Equal values of exactly the same types, all the way down (nan equals nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, (set, frozenset)):
        return a == b and sorted(map(_type_name, a)) == sorted(map(_type_name, b))
    if isinstance(a, dt.datetime):
        # The same wall time and offset: the same instant, also in a DST fold, where
        # == across time zones is always False.
        return (a.replace(tzinfo=None) == b.replace(tzinfo=None)
                and a.utcoffset() == b.utcoffset() and (a.tzinfo is None) == (b.tzinfo is None))
    if isinstance(a, np.ndarray):
        return (a.dtype == b.dtype and a.shape == b.shape
                and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fcmM")))
    if isinstance(a, BaseException):
        return same(a.args, b.args)
    return bool(a == b)


def _type_name(x: Any) -> str:
    return type(x).__name__


# -- strategies ------------------------------------------------------------------------

big_ints = st.one_of(
    st.integers(),
    st.integers(min_value=2**63, max_value=2**300),
    st.integers(min_value=-(2**300), max_value=-(2**63) - 1),
    st.sampled_from([2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**1000]),
    # Beyond 14,000 bits (ext 16); built, since hypothesis cannot repr a 4300-digit literal.
    # Not much beyond: a 70,000-bit int six ext levels deep exceeds the documented ext
    # budget (PROTOCOL.md 6.3, counted at every level) and is refused by design.
    st.builds(lambda bits, sign, low: sign * (2**bits + low),
              st.sampled_from([13_999, 14_000, 14_001]), st.sampled_from([1, -1]),
              st.integers(min_value=-1, max_value=2**64)),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
naive_datetimes = st.datetimes()
aware_datetimes = st.datetimes(timezones=st.timezones())
fixed_offset_datetimes = st.builds(
    lambda d, minutes: d.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes))),
    st.datetimes(), st.integers(min_value=-23 * 60, max_value=23 * 60))

hashable_leaves = st.one_of(
    st.none(), st.booleans(), big_ints, st.floats(allow_nan=False), st.text(max_size=20),
    st.binary(max_size=20), st.dates(), naive_datetimes, st.timedeltas(), st.uuids(),
    st.decimals(allow_nan=False), st.complex_numbers(allow_nan=False),
)
hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=4)),
    max_leaves=6,
)
leaves = st.one_of(
    st.none(), st.booleans(), big_ints, floats, st.text(max_size=40), st.binary(max_size=40),
    naive_datetimes, aware_datetimes, fixed_offset_datetimes, st.dates(), st.timedeltas(),
    st.decimals(), st.uuids(), st.complex_numbers(allow_nan=True, allow_infinity=True),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(hashables, inner, max_size=5),
        st.sets(hashables, max_size=5),
        st.frozensets(hashables, max_size=5),
    ),
    max_leaves=25,
)


# -- values ----------------------------------------------------------------------------


@FAST
@given(values)
@example(None)
@example(2**64)
@example(-(2**63) - 1)
@example(float("nan"))
@example(float("-inf"))
@example(-0.0)
@example(Decimal("NaN"))
@example(Decimal("-Infinity"))
@example(complex(float("nan"), float("inf")))
@example(dt.datetime(2024, 3, 31, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))))
@example({(1, 2): {frozenset({3}): [(), set()]}})
@example(2**70_000 + 1)
@example((-(2**70_000),))
def test_every_value_type_round_trips_with_its_type(value: Any) -> None:
    assert same(roundtrip(value), value)
    # The same value inside a message (the path calls take) decodes the same way.
    assert same(message_roundtrip([1, value, {"v": value}]), [1, value, {"v": value}])


def test_type_fidelity() -> None:
    Point = namedtuple("Point", "x y")

    class Colour(enum.IntEnum):
        RED = 1

    value = {"t": (1, (2,)), "l": [1, [2]], "s": {1, 2}, "f": frozenset({3}),
             "b": b"\x00", "str": "\x00", "i": 1, "fl": 1.0, "bool": True,
             "nested": [{"x": ({1}, frozenset())}]}
    out = roundtrip(value)
    assert same(out, value)
    kinds = {k: type(v) for k, v in out.items()}
    assert kinds == {"t": tuple, "l": list, "s": set, "f": frozenset, "b": bytes, "str": str,
                     "i": int, "fl": float, "bool": bool, "nested": list}
    assert type(out["t"][1]) is tuple
    assert type(out["l"][1]) is list
    assert type(out["nested"][0]["x"][0]) is set
    # Subclasses of plain types travel as their base type.
    assert same(roundtrip(Point(1, 2)), (1, 2))
    assert same(roundtrip(Colour.RED), 1)
    # Binary-ish values come back as bytes.
    assert same(roundtrip(bytearray(b"ab")), b"ab")
    assert same(roundtrip(memoryview(b"ab")), b"ab")


class _Handle:
    """Anything with ``__netlet_ref__`` (a proxy, a channel) travels as a remote reference."""

    def __init__(self, ref: RemoteRef) -> None:
        self.ref = ref

    def __netlet_ref__(self) -> RemoteRef:
        return self.ref


def test_remote_refs_round_trip() -> None:
    ref = RemoteRef("node-1", "tcp://127.0.0.1:1", "svc", "channel")
    assert roundtrip([_Handle(ref)]) == [ref]
    resolved = Codec(ref_decoder=lambda r: ("resolved", r.name))
    assert roundtrip((_Handle(ref),), resolved) == (("resolved", "svc"),)


# -- exceptions ------------------------------------------------------------------------

builtin_exceptions = st.sampled_from([
    ValueError, KeyError, TypeError, RuntimeError, ZeroDivisionError, IndexError,
    LookupError, ArithmeticError, AttributeError, NotImplementedError, PermissionError,
    FileNotFoundError, TimeoutError, UnicodeError, Exception,
])
exception_args = st.lists(
    st.one_of(st.none(), st.integers(), st.text(max_size=20), st.binary(max_size=10),
              st.tuples(st.integers(), st.text(max_size=5))),
    max_size=3)


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as e:  # we want it with its traceback
        return e


@FAST
@given(builtin_exceptions, exception_args)
def test_builtin_exceptions_are_rebuilt_with_their_args(cls: type[BaseException],
                                                        args: list[Any]) -> None:
    exc = _raise(cls(*args))
    out = roundtrip(exc)
    assert type(out) is cls
    assert same(out.args, exc.args)
    assert "_raise" in out.remote_traceback  # the text of where it was raised
    assert any("Remote traceback" in note for note in out.__notes__)


@pytest.mark.parametrize("exc", [
    FileNotFoundError(2, "No such file or directory", "/no/such"),
    PermissionError(13, "Permission denied", b"/root/x"),
    OSError(18, "Invalid cross-device link", "/a", None, "/b"),
    OSError(9, "Bad file descriptor", 7),
])
def test_os_errors_keep_their_file_names(exc: OSError) -> None:
    # Python keeps filename out of args: rebuilt from args alone, it was lost.
    out = roundtrip(_raise(exc))
    assert type(out) is type(exc)
    assert (out.errno, out.strerror, out.filename, out.filename2) == (
        exc.errno, exc.strerror, exc.filename, exc.filename2)
    assert str(out) == str(exc)


def test_netlet_errors_are_rebuilt() -> None:
    for exc in (netlet.NotExposed("x"), netlet.CallTimeout("late"), netlet.DecodeError("bad")):
        out = roundtrip(exc)
        assert type(out) is type(exc)
        assert out.args == exc.args
    remote = RemoteError("pkg.Custom", "it broke", "Traceback...\n")
    out = roundtrip(remote)
    assert type(out) is RemoteError
    assert (out.remote_type, out.message, out.remote_traceback) == (
        "pkg.Custom", "it broke", "Traceback...\n")


class UnknownToPeers(Exception):
    pass


def _fail_deeply() -> None:
    raise UnknownToPeers("secret sauce", 7)


def test_unknown_exception_types_arrive_as_remote_error_with_traceback() -> None:
    try:
        _fail_deeply()
    except UnknownToPeers as e:
        exc = e
    out = roundtrip(exc)
    assert type(out) is RemoteError
    assert out.remote_type == f"{__name__}.UnknownToPeers"
    assert "secret sauce" in out.message
    assert "_fail_deeply" in out.remote_traceback
    assert "UnknownToPeers" in out.remote_traceback


def test_control_flow_exceptions_are_never_rebuilt() -> None:
    # They would stop the process, or end a generator or future where they are raised.
    for exc in (SystemExit(3), KeyboardInterrupt(), GeneratorExit(), StopIteration(1),
                StopAsyncIteration()):
        out = roundtrip(exc)
        assert type(out) is RemoteError, type(out)


def test_registered_exceptions_are_rebuilt() -> None:
    @register_exception
    class Registered(Exception):
        pass

    out = roundtrip(Registered("a", 1))
    assert type(out) is Registered
    assert out.args == ("a", 1)


def test_exception_with_unencodable_args_still_travels() -> None:
    out = roundtrip(ValueError(object()))
    assert type(out) is ValueError
    assert "object object at" in out.args[0]


# -- numpy -----------------------------------------------------------------------------

DTYPES = ["i1", "u1", "<i2", ">i4", "<i8", "<u8", "<f2", "<f4", ">f8", "<c8", "<c16", "?",
          "<M8[ns]", "<m8[us]", "<U5", "|S4"]


@FAST
@given(st.sampled_from(DTYPES).flatmap(
    lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=1, max_dims=3, max_side=6))))
def test_numpy_arrays_round_trip(arr: np.ndarray) -> None:
    out = roundtrip(arr)
    assert same(out, arr)
    assert out.flags.writeable
    # Non-contiguous views: strided, reversed and transposed.
    for view in (arr[::2], arr[::-1], arr.T):
        assert same(roundtrip(view), view)
    assert same(message_roundtrip([arr.T]), [arr.T])


def test_numpy_zero_dim_array_keeps_its_shape() -> None:
    arr = np.array(5, dtype="<i8")
    out = roundtrip(arr)
    assert out.shape == (), f"a 0-d array came back with shape {out.shape}"
    assert same(out, arr)


def test_numpy_structured_dtype_keeps_its_fields() -> None:
    arr = np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")])
    arr["a"] = [1, 2, 3]
    out = roundtrip(arr)
    assert out.dtype == arr.dtype, f"dtype {arr.dtype} came back as {out.dtype}"
    assert list(out["a"]) == [1, 2, 3]


def test_large_numpy_arrays_go_out_of_band_without_copy() -> None:
    codec = Codec()
    arr = np.arange(100_000, dtype="<f8")  # 800 kB, over the 64 kB threshold
    body, buffers = codec.encode([1, arr])
    assert len(body) < 200
    assert len(buffers) == 1
    assert np.shares_memory(np.frombuffer(buffers[0], dtype="<f8"), arr)
    out = codec.decode(body, [bytes(buffers[0])])
    assert same(out, [1, arr])
    # Strided big arrays are made contiguous first, and still arrive intact.
    strided = np.arange(400_000, dtype="<i4")[::3]
    assert same(message_roundtrip([strided]), [strided])


# -- out-of-band bytes ---------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300_000), min_size=1, max_size=4),
       st.integers(min_value=1, max_value=128 * 1024))
def test_large_bytes_go_out_of_band(sizes: list[int], threshold: int) -> None:
    codec = Codec(Limits(oob_threshold=threshold))
    blobs = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    message = [1, 2, blobs, {"first": blobs[0]}, bytearray(blobs[-1])]
    body, buffers = codec.encode(message)
    big = [b for b in blobs if len(b) >= threshold]
    expected_buffers = len(big) + (len(blobs[0]) >= threshold) + (len(blobs[-1]) >= threshold)
    assert len(buffers) == expected_buffers
    assert len(body) < 1024 + sum(len(b) for b in blobs if len(b) < threshold) * 3
    # Buffers are the caller's own objects: nothing copied on the way out.
    assert all(any(buf is b for b in blobs) or type(buf) is bytearray for buf in buffers)
    out = codec.decode(body, buffers)
    assert same(out, [1, 2, blobs, {"first": blobs[0]}, bytes(blobs[-1])])


# -- garbage in --------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.lists(st.binary(max_size=50), max_size=3))
@example(b"\xc1", [])
@example(b"\x91" * 3000 + b"\xc0", [])
@example(b"\xdd\xff\xff\xff\xff", [])
@example(b"\xc7\x05\x0e\x93\xa1O\x90\x00", [])
def test_random_bytes_only_ever_raise_decode_error(data: bytes, buffers: list[bytes]) -> None:
    for codec in (Codec(), Codec(allow_pickle=True), Codec(Limits(max_depth=2, max_str=8))):
        try:
            codec.decode(data, buffers)
        except DecodeError:
            pass


ext_codes = st.integers(min_value=0, max_value=127)
structured_garbage = st.recursive(
    st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
              st.text(max_size=10), st.binary(max_size=20),
              st.builds(msgpack.ExtType, ext_codes, st.binary(max_size=30))),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.builds(lambda code, v: msgpack.ExtType(code, msgpack.packb(v)),
                  st.integers(min_value=0, max_value=20), inner),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(structured_garbage)
def test_well_formed_msgpack_with_bad_extensions_only_raises_decode_error(value: Any) -> None:
    data = msgpack.packb(value)
    try:
        Codec().decode(data)
    except DecodeError:
        pass


@FAST
@given(values, st.data())
def test_truncated_encodings_raise_decode_error(value: Any, data: st.DataObject) -> None:
    codec = Codec()
    encoded = codec.encode_value([value, "end"])
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="cut")
    with pytest.raises(DecodeError):
        codec.decode(encoded[:cut])


@FAST
@given(values, st.data())
def test_corrupted_encodings_decode_or_raise_decode_error(value: Any,
                                                          data: st.DataObject) -> None:
    encoded = bytearray(Codec().encode_value(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="flips")):
        i = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="at")
        encoded[i] = data.draw(st.integers(min_value=0, max_value=255), label="byte")
    try:
        Codec().decode(bytes(encoded))
    except DecodeError:
        pass


def ext_bytes(code: int, data: bytes) -> bytes:
    """An ext8 value by hand (msgpack.ExtType refuses the negative, reserved codes)."""
    return b"\xc7" + bytes([len(data)]) + code.to_bytes(1, "big", signed=True) + data


@pytest.mark.parametrize(("code", "data"), [
    (0, b"\x90"),         # netlet's inner payload code, outside an exception
    (-2, b"x"),
    (16, b""),
    (127, b"x"),
    (-128, b"x"),
])
def test_unknown_extension_types_are_refused(code: int, data: bytes) -> None:
    encoded = b"\x92\x01" + ext_bytes(code, data)  # [1, <ext>]
    try:
        got = Codec().decode(encoded)
    except DecodeError:
        return
    pytest.fail(f"ext type {code} decoded to {got!r} instead of raising DecodeError")


def test_msgpack_timestamps_arrive_as_utc_datetimes() -> None:
    # ext -1 is msgpack's standard timestamp, what a client in another language sends.
    got = Codec().decode(b"\x92\x01" + ext_bytes(-1, b"\0\0\0\x01"))
    assert got == [1, dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC)]


def test_uuid_and_dates_are_compact() -> None:
    u = uuid.uuid4()
    assert len(Codec().encode_value(u)) == 18  # ext8 header + 16 raw bytes
    assert same(roundtrip([u, dt.date(2000, 2, 29)]), [u, dt.date(2000, 2, 29)])


# -- exceptions between peers that agreed to pickle ---------------------------------------


class NeedsTwoArgs(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{code}: {why}")  # args no longer match __init__: unpicklable


def test_unknown_exception_types_arrive_as_themselves_when_pickle_was_agreed() -> None:
    try:
        _fail_deeply()
    except UnknownToPeers as e:
        exc = e
    out = roundtrip(exc, Codec(allow_pickle=True))
    assert type(out) is UnknownToPeers
    assert out.args == ("secret sauce", 7)
    assert "_fail_deeply" in out.remote_traceback
    assert any("_fail_deeply" in note for note in out.__notes__)


def test_exceptions_that_cannot_unpickle_fall_back_to_remote_error() -> None:
    out = roundtrip(NeedsTwoArgs(3, "no"), Codec(allow_pickle=True))
    assert type(out) is RemoteError
    assert out.remote_type == f"{__name__}.NeedsTwoArgs"
    assert out.message == "3: no"


def test_control_flow_exceptions_are_never_rebuilt_even_with_pickle() -> None:
    for exc in (SystemExit(3), KeyboardInterrupt(), GeneratorExit(), StopIteration(1)):
        assert type(roundtrip(exc, Codec(allow_pickle=True))) is RemoteError


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_unpickled, ())


UNPICKLED: list[int] = []


def _record_unpickled() -> ValueError:
    UNPICKLED.append(1)
    return ValueError("unpickled")


def test_a_pickled_exception_is_ignored_without_agreement() -> None:
    # What a hostile peer could send: a pickle that runs code when loaded.
    hostile = msgpack.packb(["x.Y", msgpack.ExtType(0, msgpack.packb([])), "m", "",
                             pickle.dumps(_Boom())])
    out = Codec().decode_value(msgpack.packb(msgpack.ExtType(11, hostile)))
    assert type(out) is RemoteError
    assert UNPICKLED == []
    # A codec that did not agree never adds the pickle either.
    plain = Codec().encode_value(UnknownToPeers("a"))
    assert type(Codec(allow_pickle=True).decode_value(plain)) is RemoteError
