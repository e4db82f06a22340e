"""msgpack encoding and decoding of netlet values, with limits and out-of-band buffers.

One ``Codec`` serves one connection: it knows whether pickle was agreed, how to
turn remote handles into local proxies, and the limits that bound decoding.
Encoding may run on any thread; each call keeps its own state.

Which exceptions may be rebuilt (and their traceback text) is ``_exceptions.py``;
numpy arrays are ``_ndarray.py``; the decoding bounds are ``_guard.py``.
"""

from __future__ import annotations

import datetime as dt
import pickle
import threading
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import msgpack

from netlet.codec._exceptions import (
    NEVER_REBUILT_TYPES,
    SAFE_EXCEPTIONS,
    format_traceback,
    rebuild_exception,
    register_exception,
    type_name,
    unpickle_exception,
)
from netlet.codec._guard import (
    SLICED_FROM,
    DecodeState,
    check_hashes,
    dict_from_pairs,
    short,
    sliced_options,
)
from netlet.codec._longint import DECIMAL_BITS, long_int_bytes, long_int_from
from netlet.codec._ndarray import is_ndarray, ndarray_fields, ndarray_from
from netlet.codec._reuse import IN_USE as _IN_USE
from netlet.codec._reuse import REUSED_MAX, unpack_reused
from netlet.codec._types import Buffer, Ext, Limits, RemoteRef
from netlet.errors import DecodeError, EncodeError, RemoteError

__all__ = [
    "Buffer",
    "Codec",
    "format_traceback",
    "rebuild_exception",
    "register_exception",
]

RefEncoder = Callable[[object], RemoteRef | None]
RefDecoder = Callable[[RemoteRef], object]

_BINARY = (bytes, bytearray, memoryview)
_BINARY_TYPES = frozenset(_BINARY)
_SCANNED = frozenset((*_BINARY, list, dict))
_MAP_KEY_ERROR = "is not allowed for map key when strict_map_key=True"  # msgpack's words


def _size(x: Buffer) -> int:
    return x.nbytes if type(x) is memoryview else len(x)

class Codec:
    """Turns netlet values into (body, buffers) and back, for one connection."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        allow_pickle: bool = False,
        ref_encoder: RefEncoder | None = None,
        ref_decoder: RefDecoder | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.allow_pickle = allow_pickle
        self._ref_encoder = ref_encoder
        self._ref_decoder = ref_decoder
        self._tls = threading.local()
        lim = self.limits
        # Fast: only str and bin map keys (their hashes are randomised), nothing
        # called per container. A body with other keys is decoded again, checked.
        self._fast: dict[str, Any] = {
            # ext -1 is msgpack's standard timestamp: it arrives as an aware UTC datetime.
            "raw": False, "strict_map_key": True, "timestamp": 3,
            "max_str_len": lim.max_str, "max_bin_len": lim.max_bin,
            "max_array_len": lim.max_array, "max_map_len": lim.max_map,
            "max_ext_len": lim.max_frame}
        self._checked: dict[str, Any] = {
            **self._fast, "strict_map_key": False, "object_pairs_hook": dict_from_pairs}

    # -- encoding ---------------------------------------------------------

    def encode(self, message: list[Any]) -> tuple[bytes, list[Buffer]]:
        """Pack a message (a list); large top-level binaries go out of band."""
        buffers: list[Buffer] = []
        if self._has_large_binary(message):
            threshold = self.limits.oob_threshold
            message = [self._lift(x, buffers, threshold) for x in message]
        body = self._pack(message, buffers)
        if buffers:
            size = len(body) + sum(len(b) for b in buffers)
            if size > self.limits.max_frame:
                raise EncodeError(
                    f"message of {size} bytes exceeds the limit of {self.limits.max_frame}")
        elif len(body) > self.limits.max_frame:
            raise EncodeError(
                f"message of {len(body)} bytes exceeds the limit of {self.limits.max_frame}")
        return body, buffers

    def release(self) -> None:
        """Drop the per-thread packers (and their grown buffers): the connection is gone.

        They refer back to this codec, so without this the pair waits for the cyclic GC.
        """
        self._tls = threading.local()

    def encode_value(self, value: Any) -> bytes:
        """One value to self-contained bytes, all inline (for storage and tests)."""
        return self._pack(value, [])

    def decode_value(self, data: Buffer) -> Any:
        """The inverse of ``encode_value``."""
        return self.decode(data, ())

    def _pack(self, value: Any, buffers: list[Buffer]) -> bytes:
        # One Packer per thread: building one per message costs more than the packing.
        tls = self._tls
        packer = getattr(tls, "packer", None)
        if packer is None:
            packer = tls.packer = msgpack.Packer(
                default=self._tls_default, strict_types=True, datetime=False)
        tls.buffers = buffers
        if tls.__dict__.get("spare") is None:
            tls.spare = msgpack.Packer(
                default=self._tls_default, strict_types=True, datetime=False)
        try:
            return packer.pack(value)  # type: ignore[no-any-return]
        except BaseException as e:
            tls.packer = None  # its internal buffer may hold a partial message
            if isinstance(e, EncodeError):
                raise
            if isinstance(e, RecursionError):
                raise EncodeError("value nested too deeply to encode") from None
            if isinstance(e, (TypeError, ValueError, OverflowError)):
                raise EncodeError(f"cannot encode value: {e}") from e
            raise

    def _tls_default(self, obj: Any) -> Any:
        if type(obj) is tuple:  # the most common extension value: no closure, no lookups
            tls = self._tls
            spare = tls.__dict__.get("spare")
            if spare is not None and not tls.__dict__.get("spare_busy"):
                tls.spare_busy = True
                try:
                    return msgpack.ExtType(Ext.TUPLE, spare.pack(list(obj)))
                except BaseException:
                    tls.spare = None  # its buffer may hold half a value
                    raise
                finally:
                    tls.spare_busy = False
        return self._ext(obj, self._tls.buffers, self._tls_default)

    def _has_large_binary(self, message: list[Any]) -> bool:
        # Called for every message: one set lookup per element that cannot hold one.
        threshold = self.limits.oob_threshold
        for x in message:
            t = type(x)
            if t not in _SCANNED:
                continue
            if t is list:
                if _BINARY_TYPES.isdisjoint(map(type, x)):
                    continue
                for v in x:
                    if type(v) in _BINARY and _size(v) >= threshold:
                        return True
            elif t is dict:
                for v in x.values():
                    if type(v) in _BINARY and _size(v) >= threshold:
                        return True
            elif _size(x) >= threshold:
                return True
        return False

    def _lift(self, x: Any, buffers: list[Buffer], threshold: int, depth: int = 0) -> Any:
        """Lift large binaries out of the message itself and one container below it."""
        t = type(x)
        if t in _BINARY:
            if _size(x) >= threshold and len(buffers) < self.limits.max_buffers:
                buffers.append(memoryview(x).cast("B") if t is memoryview else x)
                return msgpack.ExtType(Ext.BUFFER, msgpack.packb(len(buffers) - 1))
            return x
        if depth >= 1:
            return x
        if t is list:
            return [self._lift(v, buffers, threshold, 1) for v in x]
        if t is dict:
            return {k: self._lift(v, buffers, threshold, 1) for k, v in x.items()}
        return x

    def _ext(self, obj: Any, buffers: list[Buffer], default: Callable[[Any], Any]) -> Any:
        def pack(v: Any) -> bytes:
            # A spare Packer per thread for nested values; packb builds one per call.
            tls = self._tls
            spare = tls.__dict__.get("spare")
            if spare is None or tls.__dict__.get("spare_busy"):
                return msgpack.packb(  # type: ignore[no-any-return]
                    v, default=default, strict_types=True, datetime=False)
            tls.spare_busy = True
            try:
                return spare.pack(v)  # type: ignore[no-any-return]
            except BaseException:
                tls.spare = None  # its buffer may hold half a value
                raise
            finally:
                tls.spare_busy = False

        cls = type(obj)
        if cls is tuple:
            return msgpack.ExtType(Ext.TUPLE, pack(list(obj)))
        if cls is set:
            return msgpack.ExtType(Ext.SET, pack(list(obj)))
        if cls is frozenset:
            return msgpack.ExtType(Ext.FROZENSET, pack(list(obj)))
        if cls is int:  # only called for ints msgpack cannot hold
            if obj.bit_length() <= DECIMAL_BITS:
                return msgpack.ExtType(Ext.BIGINT, str(obj).encode())
            return msgpack.ExtType(Ext.LONGINT, long_int_bytes(obj))
        if cls is dt.datetime:
            return msgpack.ExtType(Ext.DATETIME, obj.isoformat().encode())
        if cls is dt.date:
            return msgpack.ExtType(Ext.DATE, obj.isoformat().encode())
        if cls is dt.timedelta:
            return msgpack.ExtType(Ext.TIMEDELTA, pack([obj.days, obj.seconds, obj.microseconds]))
        if cls is Decimal:
            return msgpack.ExtType(Ext.DECIMAL, str(obj).encode())
        if cls is uuid.UUID:
            return msgpack.ExtType(Ext.UUID, obj.bytes)
        if cls is complex:
            return msgpack.ExtType(Ext.COMPLEX, pack([obj.real, obj.imag]))
        if isinstance(obj, BaseException):
            return self._exception(obj, pack)
        if is_ndarray(obj):
            fields = ndarray_fields(obj, buffers, self.limits.oob_threshold,
                                    self.limits.max_buffers)
            if fields is not None:
                return msgpack.ExtType(Ext.NDARRAY, pack(fields))
            if self.allow_pickle:
                return msgpack.ExtType(Ext.PICKLE, _pickle_dumps(obj))
            raise EncodeError("numpy arrays of Python objects need pickle")
        ref = getattr(obj, "__netlet_ref__", None)
        if ref is not None:
            r = ref()
            return msgpack.ExtType(Ext.REF, pack([r.node, r.address, r.name, r.kind]))
        if self._ref_encoder is not None:
            r = self._ref_encoder(obj)
            if r is not None:
                return msgpack.ExtType(Ext.REF, pack([r.node, r.address, r.name, r.kind]))
        # Subclasses of the plain types travel as their base (IntEnum, namedtuple, ...).
        if isinstance(obj, tuple):
            return msgpack.ExtType(Ext.TUPLE, pack(list(obj)))
        if isinstance(obj, str):
            return str.__str__(obj)  # the value, also for (str, Enum) members
        base: Any
        for base in (bool, int, float, bytes, list, dict):
            if isinstance(obj, base):
                return base(obj)
        if self.allow_pickle:
            return msgpack.ExtType(Ext.PICKLE, _pickle_dumps(obj))
        raise EncodeError(
            f"cannot send a value of type {cls.__module__}.{cls.__qualname__}: expose it, "
            "convert it to plain data, or enable pickle between authenticated peers"
        )

    def _exception(self, exc: BaseException, pack: Callable[[Any], bytes]) -> msgpack.ExtType:
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
            packed_args = pack(args)
        except (EncodeError, TypeError, ValueError, OverflowError):
            packed_args = pack([str(a) for a in args])
        fields = [type_name(exc), msgpack.ExtType(0, packed_args), str(exc), tb_text]
        pickled = self._pickled_exception(exc)
        if pickled is not None:
            fields.append(pickled)
        return msgpack.ExtType(Ext.EXCEPTION, pack(fields))

    def _pickled_exception(self, exc: BaseException) -> bytes | None:
        """The exception itself, for a peer that agreed to pickle and cannot rebuild its type."""
        if (not self.allow_pickle or isinstance(exc, (RemoteError, *NEVER_REBUILT_TYPES))
                or SAFE_EXCEPTIONS.get(type_name(exc)) is type(exc)):
            return None
        try:
            return _pickle_dumps(exc)
        except Exception:  # unpicklable args or class: the peer gets a RemoteError
            return None

    # -- decoding ---------------------------------------------------------

    def decode(self, body: Buffer, buffers: Sequence[Buffer] = ()) -> Any:
        """Unpack one message body; every failure is a ``DecodeError``.

        The cost is linear in the body's size whatever it holds (see ``_guard``).
        Bodies of ``SLICED_FROM`` bytes or more are decoded in slices: decode
        them off the event loop, the GIL is released every few milliseconds.
        """
        tls = self._tls
        saved = tls.__dict__.get("state")
        size = body.nbytes if type(body) is memoryview else len(body)
        try:
            if size < SLICED_FROM:
                # Most messages hold no extension value: the state is built on first use.
                tls.state = (buffers, size, self._fast)
                try:
                    if size <= REUSED_MAX:
                        value = unpack_reused(tls, "unpacker", body, size, self._hook,
                                              self._fast)
                        if value is not _IN_USE:  # (else a decode within a decode)
                            return value
                    return msgpack.unpackb(body, ext_hook=self._hook, **self._fast)
                except ValueError as e:
                    if _MAP_KEY_ERROR not in str(e):
                        raise
                tls.state = (buffers, size, self._checked)
                return msgpack.unpackb(body, ext_hook=self._hook, **self._checked)
            state = tls.state = DecodeState(buffers, size, self.limits, self._checked)
            state.options = sliced_options(self._checked, state)
            return msgpack.unpackb(body, ext_hook=self._hook, **state.options)
        except DecodeError:
            raise
        except Exception as e:  # msgpack raises many types for garbage input
            raise DecodeError(f"undecodable message: {type(e).__name__}: {str(e)[:200]}") from None
        finally:
            done, tls.state = tls.__dict__.get("state"), saved
            if type(done) is DecodeState:  # its options' hooks refer back to it: a cycle
                done.options = {}  # holding the frame's buffers until the cyclic GC ran
                done.buffers = ()

    def _unpack(self, data: Buffer) -> Any:
        return msgpack.unpackb(data, ext_hook=self._hook, **self._tls.state.options)

    def _hook(self, code: int, data: bytes) -> Any:
        tls = self._tls
        state = tls.state
        if type(state) is tuple:
            buffers, size, options = state
            state = tls.state = DecodeState(buffers, size, self.limits, options)
        state.depth += 1
        try:
            if state.depth > self.limits.max_depth:
                raise DecodeError(f"values nested deeper than {self.limits.max_depth} levels")
            state.ext_bytes += len(data)
            if state.ext_bytes > state.ext_budget:
                raise DecodeError("extension values nested too deeply for the message's size")
            state.spend_items(1)
            if code == Ext.TUPLE and state.options is self._fast and len(data) <= REUSED_MAX:
                # A tuple in a tuple finds the unpacker in use: it goes the usual way.
                value = unpack_reused(tls, "tuple_unpacker", data, len(data), self._hook,
                                      self._fast)
                if value is not _IN_USE:
                    return tuple(_expect(value, list))
            return self._from_ext(code, data, self._unpack, state.buffers)
        finally:
            state.depth -= 1

    def _from_ext(
        self, code: int, data: bytes, unpack: Callable[[Buffer], Any], buffers: Sequence[Buffer]
    ) -> Any:
        if code == Ext.TUPLE:
            return tuple(_expect(unpack(data), list))
        if code == Ext.SET:
            return set(_hashable(unpack(data)))
        if code == Ext.FROZENSET:
            return frozenset(_hashable(unpack(data)))
        if code == Ext.DATETIME:
            return dt.datetime.fromisoformat(_iso(data))
        if code == Ext.DATE:
            return dt.date.fromisoformat(_iso(data))
        if code == Ext.TIMEDELTA:
            d, s, us = _expect(unpack(data), list)
            return dt.timedelta(days=d, seconds=s, microseconds=us)
        if code == Ext.DECIMAL:
            return Decimal(data.decode())
        if code == Ext.UUID:
            return uuid.UUID(bytes=data)
        if code == Ext.BIGINT:
            if len(data) > 4300:  # CPython's own int-from-str limit guards the rest
                raise DecodeError("integer too long")
            return int(data.decode())
        if code == Ext.LONGINT:
            return long_int_from(data)
        if code == Ext.COMPLEX:
            re, im = _expect(unpack(data), list)
            return complex(re, im)
        if code == Ext.EXCEPTION:
            state: DecodeState = self._tls.state
            state.in_exception += 1
            try:
                fields = _expect(unpack(data), list)
            finally:
                state.in_exception -= 1
            if len(fields) not in (4, 5):
                raise DecodeError("malformed exception payload")
            type_name, packed_args, message, tb_text = fields[:4]
            if type(packed_args) is not msgpack.ExtType or packed_args.code != 0:
                raise DecodeError("malformed exception payload")
            if len(fields) == 5 and self.allow_pickle and isinstance(fields[4], bytes):
                unpickled = unpickle_exception(fields[4], str(tb_text))
                if unpickled is not None:
                    return unpickled
            args = _expect(unpack(packed_args.data), list)
            return rebuild_exception(str(type_name), args, str(message), str(tb_text))
        if code == Ext.REF:
            node, address, name, kind = _expect(unpack(data), list)
            ref = RemoteRef(str(node), str(address), str(name), str(kind))
            return self._ref_decoder(ref) if self._ref_decoder is not None else ref
        if code == Ext.BUFFER:
            index = unpack(bytes(data))
            _check_buffer_index(buffers, index)
            as_bytes = getattr(buffers, "as_bytes", None)
            if as_bytes is not None:  # received straight into the bytes we return
                return as_bytes(index)
            return bytes(buffers[index])
        if code == Ext.NDARRAY:
            descr, shape, raw = _expect(unpack(data), list)
            if type(raw) is int:
                _check_buffer_index(buffers, raw)
                raw = buffers[raw]
            return ndarray_from(descr, _expect(shape, list), raw)
        if code == Ext.PICKLE:
            if not self.allow_pickle:
                raise DecodeError("pickled value on a connection that did not agree to pickle")
            return pickle.loads(data)
        if code == 0 and self._tls.state.in_exception:
            return msgpack.ExtType(0, data)  # opaque inner payload (exception args)
        raise DecodeError(f"unknown extension type {code}")


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


def _pickle_dumps(obj: Any) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]
