"""The table of extension types: one entry per ext code, each with its encode and decode.

A new type goes here (and in PROTOCOL.md 6.2), not into the codec: the codec
looks an outgoing value's exact type up in ``BY_TYPE`` and an incoming ext
code up in ``BY_CODE``. Values no exact type claims (exceptions, numpy arrays,
remote references, subclasses of the plain types) are matched by
``encode_other``, in that order, before pickle or an error.

An entry's functions get the codec through the small ``Packing`` and
``Unpacking`` interfaces: packing a nested value, the frame's out-of-band
buffers, pickle consent, remote references.
"""

from __future__ import annotations

import datetime as dt
import pickle
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import msgpack

from netlet.codec._exceptions import (
    NEVER_REBUILT_TYPES,
    SAFE_EXCEPTIONS,
    format_traceback,
    rebuild_exception,
    type_name,
    unpickle_exception,
)
from netlet.codec._guard import DecodeState, check_hashes, short
from netlet.codec._longint import DECIMAL_BITS, long_int_bytes, long_int_from
from netlet.codec._ndarray import is_ndarray, ndarray_fields, ndarray_from
from netlet.codec._types import Buffer, Ext, Limits, RemoteRef
from netlet.errors import DecodeError, EncodeError, RemoteError

__all__ = ["BY_CODE", "BY_TYPE", "Extension", "Packing", "Unpacking", "add", "claim",
           "encode_other", "from_payload", "unknown"]


class Packing(Protocol):
    """What an entry's ``encode`` may use of the codec (on the encoding thread)."""

    @property
    def allow_pickle(self) -> bool: ...
    @property
    def limits(self) -> Limits: ...
    def pack_inner(self, value: Any) -> bytes:
        """A nested value as msgpack bytes, with every extension type."""
    def out_of_band(self) -> list[Buffer]:
        """The out-of-band buffers of the message being encoded (append to send one)."""
    def ref_for(self, obj: object) -> RemoteRef | None:
        """The reference the connection gives ``obj`` (an exposed object), or None."""


class Unpacking(Protocol):
    """What an entry's ``decode`` may use of the codec (within one ``decode`` call)."""

    @property
    def allow_pickle(self) -> bool: ...
    def unpack_inner(self, data: Buffer) -> Any:
        """A nested msgpack payload, under the limits of the message it is in."""
    def in_buffers(self) -> Sequence[Buffer]:
        """The out-of-band buffers of the frame being decoded."""
    def decode_state(self) -> DecodeState:
        """What this decode has spent so far (and whether it is inside an exception)."""
    def ref_from(self, ref: RemoteRef) -> object:
        """What a received reference becomes (a proxy, or the ref itself)."""


@dataclass(frozen=True, slots=True)
class Extension:
    """One msgpack extension type: its code, the exact Python types it claims, its codec."""

    code: int
    name: str
    types: tuple[type, ...]
    """Exact types encoded as this code (no subclasses); empty for the entries
    ``encode_other`` picks (exceptions, arrays, refs) and for code 0."""
    encode: Callable[[Any, Packing], Any]
    decode: Callable[[bytes, Unpacking], Any]
    as_list: Callable[[Any], list[Any]] | None = None
    """For a payload that is one msgpack array of the value's parts (tuples, sets,
    records): those parts, which the codec packs on its fast path (``encode``
    is the same, the slow way)."""
    from_payload: Callable[[Any], Any] | None = None
    """For a msgpack payload that needs nothing but itself to become the value:
    the value from the unpacked payload, which the codec unpacks on its fast
    path (``decode`` is the same, the slow way)."""


BY_TYPE: dict[type, Extension] = {}
"""Exact Python type -> its extension (the encoder's dispatch)."""
BY_CODE: dict[int, Extension] = {}
"""Ext code -> its extension (the decoder's dispatch)."""


def add(ext: Extension) -> Extension:
    """Put ``ext`` in the table; a code or a type claimed twice is a programming error."""
    if ext.code in BY_CODE:
        raise ValueError(f"extension code {ext.code} is taken by {BY_CODE[ext.code].name}")
    for t in ext.types:
        if t in BY_TYPE:
            raise ValueError(f"{t.__qualname__} is already encoded as {BY_TYPE[t].name}")
    BY_CODE[ext.code] = ext
    for t in ext.types:
        BY_TYPE[t] = ext
    return ext


def claim(ext: Extension) -> None:
    """Encode ``ext.types`` with ``ext`` (whose code is already in the table): records."""
    if ext.code not in BY_CODE:
        raise ValueError(f"extension code {ext.code} is not in the table")
    for t in ext.types:
        if t in BY_TYPE:
            raise ValueError(f"{t.__qualname__} is already encoded as {BY_TYPE[t].name}")
        BY_TYPE[t] = ext


def unknown(code: int) -> DecodeError:
    """The error for an ext code nobody defined (PROTOCOL.md 6.3)."""
    return DecodeError(f"unknown extension type {code}")


def _expect(value: Any, cls: type) -> Any:
    if type(value) is not cls:
        raise DecodeError(f"expected {cls.__name__}, got {type(value).__name__}")
    return value


def _iso(data: bytes) -> str:
    if len(data) > 64:  # the longest isoformat() is 32 characters
        raise DecodeError(f"date or datetime payload of {len(data)} bytes")
    return data.decode()


def _hashable(value: Any) -> list[Any]:
    """The elements of a set or frozenset, once they cannot flood its hash table."""
    check_hashes(_expect(value, list))
    return value  # type: ignore[no-any-return]


def _check_buffer_index(buffers: Sequence[Buffer], index: Any) -> None:
    if type(index) is not int or not 0 <= index < len(buffers):
        raise DecodeError(f"reference to missing out-of-band buffer {short(index)}")


def pickle_dumps(obj: Any) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(code, data)


# -- containers and numbers ------------------------------------------------

def _as_list(code: int) -> Callable[[Any, Packing], Any]:
    return lambda obj, p: _ext(code, p.pack_inner(list(obj)))


def from_payload(code: int, name: str, types: tuple[type, ...],
                 encode: Callable[[Any, Packing], Any], build: Callable[[Any], Any],
                 as_list: Callable[[Any], list[Any]] | None = None) -> Extension:
    """An extension whose value is made from its unpacked msgpack payload alone."""
    return Extension(code, name, types, encode, lambda data, u: build(u.unpack_inner(data)),
                     as_list, build)


TUPLE = add(from_payload(Ext.TUPLE, "TUPLE", (tuple,), _as_list(Ext.TUPLE),
                         lambda v: tuple(_expect(v, list)), list))
SET = add(from_payload(Ext.SET, "SET", (set,), _as_list(Ext.SET),
                       lambda v: set(_hashable(v)), list))
FROZENSET = add(from_payload(Ext.FROZENSET, "FROZENSET", (frozenset,), _as_list(Ext.FROZENSET),
                             lambda v: frozenset(_hashable(v)), list))


def _encode_int(obj: int, p: Packing) -> Any:
    # Only called for ints msgpack cannot hold.
    if obj.bit_length() <= DECIMAL_BITS:
        return _ext(Ext.BIGINT, str(obj).encode())
    return _ext(Ext.LONGINT, long_int_bytes(obj))


def _decode_bigint(data: bytes, u: Unpacking) -> int:
    if len(data) > 4300:  # CPython's own int-from-str limit guards the rest
        raise DecodeError("integer too long")
    return int(data.decode())


BIGINT = add(Extension(Ext.BIGINT, "BIGINT", (int,), _encode_int, _decode_bigint))
LONGINT = add(Extension(Ext.LONGINT, "LONGINT", (), _encode_int,
                        lambda data, u: long_int_from(data)))


def _timedelta(value: Any) -> dt.timedelta:
    d, s, us = _expect(value, list)
    return dt.timedelta(days=d, seconds=s, microseconds=us)


def _complex(value: Any) -> complex:
    re, im = _expect(value, list)
    return complex(re, im)


DATETIME = add(Extension(Ext.DATETIME, "DATETIME", (dt.datetime,),
                         lambda obj, p: _ext(Ext.DATETIME, obj.isoformat().encode()),
                         lambda data, u: dt.datetime.fromisoformat(_iso(data))))
DATE = add(Extension(Ext.DATE, "DATE", (dt.date,),
                     lambda obj, p: _ext(Ext.DATE, obj.isoformat().encode()),
                     lambda data, u: dt.date.fromisoformat(_iso(data))))
TIMEDELTA = add(from_payload(
    Ext.TIMEDELTA, "TIMEDELTA", (dt.timedelta,),
    lambda obj, p: _ext(Ext.TIMEDELTA, p.pack_inner([obj.days, obj.seconds, obj.microseconds])),
    _timedelta))
DECIMAL = add(Extension(Ext.DECIMAL, "DECIMAL", (Decimal,),
                        lambda obj, p: _ext(Ext.DECIMAL, str(obj).encode()),
                        lambda data, u: Decimal(data.decode())))
UUID = add(Extension(Ext.UUID, "UUID", (uuid.UUID,),
                     lambda obj, p: _ext(Ext.UUID, obj.bytes),
                     lambda data, u: uuid.UUID(bytes=data)))
COMPLEX = add(from_payload(Ext.COMPLEX, "COMPLEX", (complex,),
                           lambda obj, p: _ext(Ext.COMPLEX, p.pack_inner([obj.real, obj.imag])),
                           _complex))


# -- exceptions (PROTOCOL.md 7) --------------------------------------------

def _encode_exception(exc: BaseException, p: Packing) -> msgpack.ExtType:
    tb_text = getattr(exc, "remote_traceback", None)
    if tb_text is None:
        tb_text = format_traceback(exc) if exc.__traceback__ else ""
    if isinstance(exc, RemoteError):
        args: list[Any] = [exc.remote_type, exc.message, exc.remote_traceback]
    elif isinstance(exc, OSError) and exc.filename is not None and len(exc.args) == 2:
        # OSError(errno, strerror, filename[, winerror, filename2]) keeps its file
        # names out of args: rebuilt from args alone, a remote one lost them.
        args = [*exc.args, exc.filename, None, exc.filename2]
    else:
        args = list(exc.args)
    try:
        packed_args = p.pack_inner(args)
    except (EncodeError, TypeError, ValueError, OverflowError):
        packed_args = p.pack_inner([str(a) for a in args])
    fields = [type_name(exc), msgpack.ExtType(0, packed_args), str(exc), tb_text]
    pickled = _pickled_exception(exc, p.allow_pickle)
    if pickled is not None:
        fields.append(pickled)
    return _ext(Ext.EXCEPTION, p.pack_inner(fields))


def _pickled_exception(exc: BaseException, allow_pickle: bool) -> bytes | None:
    """The exception itself, for a peer that agreed to pickle and cannot rebuild its type."""
    if (not allow_pickle or isinstance(exc, (RemoteError, *NEVER_REBUILT_TYPES))
            or SAFE_EXCEPTIONS.get(type_name(exc)) is type(exc)):
        return None
    try:
        return pickle_dumps(exc)
    except Exception:  # unpicklable args or class: the peer gets a RemoteError
        return None


def _decode_exception(data: bytes, u: Unpacking) -> BaseException:
    state = u.decode_state()
    state.in_exception += 1
    try:
        fields = _expect(u.unpack_inner(data), list)
    finally:
        state.in_exception -= 1
    if len(fields) not in (4, 5):
        raise DecodeError("malformed exception payload")
    name, packed_args, message, tb_text = fields[:4]
    if type(packed_args) is not msgpack.ExtType or packed_args.code != 0:
        raise DecodeError("malformed exception payload")
    if len(fields) == 5 and u.allow_pickle and isinstance(fields[4], bytes):
        unpickled = unpickle_exception(fields[4], str(tb_text))
        if unpickled is not None:
            return unpickled
    args = _expect(u.unpack_inner(packed_args.data), list)
    return rebuild_exception(str(name), args, str(message), str(tb_text))


def _decode_args(data: bytes, u: Unpacking) -> msgpack.ExtType:
    if u.decode_state().in_exception:
        return msgpack.ExtType(0, data)  # opaque inner payload (exception args)
    raise unknown(0)


def _refuse_encode(obj: Any, p: Packing) -> Any:
    raise EncodeError("ext 0 is only the argument payload inside an exception")


ARGS = add(Extension(0, "(args)", (), _refuse_encode, _decode_args))
EXCEPTION = add(Extension(Ext.EXCEPTION, "EXCEPTION", (), _encode_exception, _decode_exception))


# -- references, buffers, arrays, pickle -----------------------------------

def _encode_ref(r: RemoteRef, p: Packing) -> msgpack.ExtType:
    return _ext(Ext.REF, p.pack_inner([r.node, r.address, r.name, r.kind]))


def _decode_ref(data: bytes, u: Unpacking) -> object:
    node, address, name, kind = _expect(u.unpack_inner(data), list)
    return u.ref_from(RemoteRef(str(node), str(address), str(name), str(kind)))


def _decode_buffer(data: bytes, u: Unpacking) -> bytes:
    buffers = u.in_buffers()
    index = u.unpack_inner(bytes(data))
    _check_buffer_index(buffers, index)
    as_bytes = getattr(buffers, "as_bytes", None)
    if as_bytes is not None:  # received straight into the bytes we return
        return as_bytes(index)  # type: ignore[no-any-return]
    return bytes(buffers[index])


def _encode_buffer(obj: Any, p: Packing) -> Any:
    raise EncodeError("ext 13 is made by the codec for large binaries, not by values")


def _encode_ndarray(arr: Any, p: Packing) -> msgpack.ExtType:
    lim = p.limits
    fields = ndarray_fields(arr, p.out_of_band(), lim.oob_threshold, lim.max_buffers)
    if fields is not None:
        return _ext(Ext.NDARRAY, p.pack_inner(fields))
    if p.allow_pickle:
        return _ext(Ext.PICKLE, pickle_dumps(arr))
    raise EncodeError("numpy arrays of Python objects need pickle")


def _decode_ndarray(data: bytes, u: Unpacking) -> Any:
    descr, shape, raw = _expect(u.unpack_inner(data), list)
    if type(raw) is int:
        buffers = u.in_buffers()
        _check_buffer_index(buffers, raw)
        raw = buffers[raw]
    return ndarray_from(descr, _expect(shape, list), raw)


def _encode_pickle(obj: Any, p: Packing) -> msgpack.ExtType:
    if not p.allow_pickle:
        raise EncodeError("pickle was not agreed on this connection")
    return _ext(Ext.PICKLE, pickle_dumps(obj))


def _decode_pickle(data: bytes, u: Unpacking) -> Any:
    if not u.allow_pickle:
        raise DecodeError("pickled value on a connection that did not agree to pickle")
    return pickle.loads(data)


REF = add(Extension(Ext.REF, "REF", (RemoteRef,), _encode_ref, _decode_ref))
BUFFER = add(Extension(Ext.BUFFER, "BUFFER", (), _encode_buffer, _decode_buffer))
NDARRAY = add(Extension(Ext.NDARRAY, "NDARRAY", (), _encode_ndarray, _decode_ndarray))
PICKLE = add(Extension(Ext.PICKLE, "PICKLE", (), _encode_pickle, _decode_pickle))


def encode_other(obj: Any, p: Packing) -> Any:
    """A value no exact type in ``BY_TYPE`` claims: an exception, a numpy array, a
    remote reference, a subclass of a plain type, or (if agreed) a pickle."""
    if isinstance(obj, BaseException):
        return _encode_exception(obj, p)
    if is_ndarray(obj):
        return _encode_ndarray(obj, p)
    ref = getattr(obj, "__netlet_ref__", None)
    r = ref() if ref is not None else p.ref_for(obj)
    if r is not None:
        return _encode_ref(r, p)
    # Subclasses of the plain types travel as their base (IntEnum, namedtuple, ...).
    if isinstance(obj, tuple):
        return _ext(Ext.TUPLE, p.pack_inner(list(obj)))
    if isinstance(obj, str):
        return str.__str__(obj)  # the value, also for (str, Enum) members
    base: Any
    for base in (bool, int, float, bytes, list, dict):
        if isinstance(obj, base):
            return base(obj)
    if p.allow_pickle:
        return _encode_pickle(obj, p)
    cls = type(obj)
    raise EncodeError(
        f"cannot send a value of type {cls.__module__}.{cls.__qualname__}: expose it, "
        "convert it to plain data, or enable pickle between authenticated peers"
    )
