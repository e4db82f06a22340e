"""msgpack encoding and decoding of netlet values, with limits and out-of-band buffers.

One ``Codec`` serves one connection: it knows whether pickle was agreed, how to
turn remote handles into local proxies, and the limits that bound decoding.
Encoding may run on any thread; each call keeps its own state.

Each extension type (its code, encode and decode) is an entry of ``_table.py``;
which exceptions may be rebuilt (and their traceback text) is ``_exceptions.py``;
numpy arrays are ``_ndarray.py``; the decoding bounds are ``_guard.py``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from netlet.codec._exceptions import format_traceback, rebuild_exception, register_exception
from netlet.codec._guard import (
    EXT_BYTES_FACTOR,
    SLICED_FROM,
    DecodeState,
    dict_from_pairs,
    sliced_options,
)
from netlet.codec._reuse import IN_USE as _IN_USE
from netlet.codec._reuse import REUSED_MAX, unpack_reused
from netlet.codec._table import BY_CODE, BY_TYPE, encode_other, unknown
from netlet.codec._types import Buffer, Ext, Limits, RemoteRef
from netlet.errors import DecodeError, EncodeError

__all__ = [
    "Buffer",
    "Codec",
    "format_traceback",
    "rebuild_exception",
    "register_exception",
]

RefEncoder = Callable[[object], RemoteRef | None]
RefDecoder = Callable[[RemoteRef], object]

_ext_type = functools.partial(tuple.__new__, msgpack.ExtType)
"""``msgpack.ExtType`` without its checks (in Python, they cost more than the packing),
for codes of the table and payloads the codec packed itself."""

_SPARES = 4
"""Nesting levels of extension payloads packed by a kept Packer (deeper: packb)."""
_INNER = ("", "inner1", "inner2", "inner3", "inner4")
"""The thread's kept unpacker for the payloads of ext values nested this deep."""
_DEEPEST = len(_INNER)

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
        self._max_depth = lim.max_depth
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
        if tls.__dict__.get("spares") is None:
            tls.spares = [msgpack.Packer(default=self._tls_default, strict_types=True,
                                         datetime=False) for _ in range(_SPARES)]
        try:
            body: bytes = packer.pack(value)
        except BaseException as e:
            tls.packer = None  # its internal buffer may hold a partial message
            tls.ext_bytes = 0
            if isinstance(e, EncodeError):
                raise
            if isinstance(e, RecursionError):
                raise EncodeError("value nested too deeply to encode") from None
            if isinstance(e, (TypeError, ValueError, OverflowError)):
                raise EncodeError(f"cannot encode value: {e}") from e
            raise
        nested = tls.__dict__.get("ext_bytes")
        if nested:  # the peer takes extension values apart within a budget: keep to it
            tls.ext_bytes = 0
            if nested > EXT_BYTES_FACTOR * len(body) + 64 * 1024:
                raise EncodeError(
                    f"value nested too deeply for its size: its tuples, sets and records "
                    f"hold {nested} bytes in all levels together, more than a peer decodes "
                    f"for a message of {len(body)} bytes ({EXT_BYTES_FACTOR} x its size + "
                    "64 KiB); nest fewer of them, or use lists, which nest freely")
        return body

    def _tls_default(self, obj: Any) -> Any:
        # Every extension value's payload is counted (``ext_bytes``), as the decoder does.
        ext = BY_TYPE.get(type(obj))
        if ext is None:
            return self._counted(encode_other(obj, self))
        as_list = ext.as_list
        if as_list is not None:  # tuples, sets, records: no closure, few lookups
            kept = self._tls.__dict__
            spares, level = kept.get("spares"), kept.get("level", 0)
            if spares is not None and level < _SPARES:
                kept["level"] = level + 1
                try:
                    data = spares[level].pack(as_list(obj))
                except BaseException:
                    kept["spares"] = None  # a buffer may hold half a value
                    raise
                finally:
                    kept["level"] = level
                kept["ext_bytes"] = kept.get("ext_bytes", 0) + len(data)
                return _ext_type((ext.code, data))
        return self._counted(ext.encode(obj, self))

    def _counted(self, value: Any) -> Any:
        if type(value) is msgpack.ExtType:
            kept = self._tls.__dict__
            kept["ext_bytes"] = kept.get("ext_bytes", 0) + len(value.data)
        return value

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

    # -- what the extension table's entries use (``Packing``, ``Unpacking``) ---

    def pack_inner(self, value: Any) -> bytes:
        """A nested value (an extension's payload) as msgpack, on this thread."""
        # A spare Packer per thread and nesting level; packb builds one per call.
        kept = self._tls.__dict__
        spares, level = kept.get("spares"), kept.get("level", 0)
        if spares is None or level >= _SPARES:
            return msgpack.packb(  # type: ignore[no-any-return]
                value, default=self._tls_default, strict_types=True, datetime=False)
        kept["level"] = level + 1
        try:
            return spares[level].pack(value)  # type: ignore[no-any-return]
        except BaseException:
            kept["spares"] = None  # a buffer may hold half a value
            raise
        finally:
            kept["level"] = level

    def out_of_band(self) -> list[Buffer]:
        """The out-of-band buffers of the message this thread is encoding."""
        return self._tls.buffers  # type: ignore[no-any-return]

    def ref_for(self, obj: object) -> RemoteRef | None:
        """The reference this connection gives ``obj``, if it is an exposed object."""
        return self._ref_encoder(obj) if self._ref_encoder is not None else None

    def unpack_inner(self, data: Buffer) -> Any:
        """A nested msgpack payload, under the limits of the message being decoded."""
        tls = self._tls
        state = tls.state
        options = state.options
        if options is self._fast and len(data) <= REUSED_MAX and state.depth < len(_INNER):
            value = unpack_reused(tls, _INNER[state.depth], data, len(data), self._hook,
                                  options)
            if value is not _IN_USE:
                return value
        return msgpack.unpackb(data, ext_hook=self._hook, **options)

    def in_buffers(self) -> Sequence[Buffer]:
        """The out-of-band buffers of the frame this thread is decoding."""
        return self._tls.state.buffers  # type: ignore[no-any-return]

    def decode_state(self) -> DecodeState:
        """What the decode running on this thread has spent so far."""
        return self._tls.state  # type: ignore[no-any-return]

    def ref_from(self, ref: RemoteRef) -> object:
        """What a received reference becomes: a proxy, or the ref itself."""
        return self._ref_decoder(ref) if self._ref_decoder is not None else ref

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

    def _hook(self, code: int, data: bytes) -> Any:
        tls = self._tls
        state = tls.state
        if type(state) is tuple:
            buffers, size, options = state
            state = tls.state = DecodeState(buffers, size, self.limits, options)
        depth = state.depth = state.depth + 1
        try:
            if depth > self._max_depth:
                raise DecodeError(f"values nested deeper than {self._max_depth} levels")
            n = len(data)
            state.ext_bytes += n
            if state.ext_bytes > state.ext_budget:
                raise DecodeError("extension values nested too deeply for the message's size")
            state.items += 1
            if state.items > state.max_items:
                state.spend_items(0)  # raises
            ext = BY_CODE.get(code)
            if ext is None:
                raise unknown(code)
            build = ext.from_payload
            if (build is not None and n <= REUSED_MAX and depth < _DEEPEST
                    and state.options is self._fast):
                # One unpacker per nesting level: a payload's own ext values have theirs.
                value = unpack_reused(tls, _INNER[depth], data, n, self._hook, self._fast)
                if value is not _IN_USE:
                    return build(value)
            return ext.decode(data, self)
        finally:
            state.depth -= 1
