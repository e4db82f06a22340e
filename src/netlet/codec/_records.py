"""Typed records on the wire: frozen dataclasses with a stable wire id (ext 17).

``@record(wire_id)`` on a frozen slots dataclass registers it. It travels as
ext 17 whose payload is the msgpack array ``[wire_id, field1, field2, ...]``,
its fields in declaration order (PROTOCOL.md 6.2). A peer in another language
needs only that array and the documented field list.

Decoding is strict and runs no code of the peer's choosing: the wire id must
be registered in this process, the field count must match, and every field
must have the type its annotation names (checked before the record is
built); anything else is a ``DecodeError`` naming the record and the field.
The annotations are read once, at registration, and an annotation the decoder
could not check is refused there, as is a wire id registered twice.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from netlet.codec._guard import short
from netlet.codec._table import BY_TYPE, Extension, Packing, Unpacking, add, claim
from netlet.codec._types import Ext
from netlet.errors import DecodeError

__all__ = ["RecordType", "record", "record_types"]

T = TypeVar("T")

WIRE_ID_MAX = 2**31 - 1
_NONE = type(None)
_PLAIN = frozenset((str, bytes, bool, int, float))


@dataclass(frozen=True, slots=True)
class _Check:
    """What a field accepts: exact types (None: anything) and, for containers, a deeper test."""

    types: frozenset[type] | None
    deep: Callable[[Any], bool] | None
    text: str

    def ok(self, value: Any) -> bool:
        return ((self.types is None or type(value) in self.types)
                and (self.deep is None or self.deep(value)))


_ANY = _Check(None, None, "any value")


@dataclass(frozen=True, slots=True)
class RecordType:
    """A registered record class: its wire id and its fields, in wire order."""

    cls: type
    wire_id: int
    names: tuple[str, ...]
    checks: tuple[_Check, ...]

    def field_types(self) -> tuple[str, ...]:
        """How each field's type is written in errors and in PROTOCOL.md."""
        return tuple(c.text for c in self.checks)


_BY_ID: dict[int, RecordType] = {}


def record_types() -> dict[int, RecordType]:
    """Every record type registered in this process, by wire id."""
    return dict(_BY_ID)


def record(wire_id: int) -> Callable[[type[T]], type[T]]:
    """Register a frozen slots dataclass as a record with this wire id (0 to 2**31 - 1)."""
    if type(wire_id) is not int or not 0 <= wire_id <= WIRE_ID_MAX:
        raise TypeError(f"a record's wire id is an int from 0 to {WIRE_ID_MAX}, not {wire_id!r}")

    def register(cls: type[T]) -> type[T]:
        name = cls.__qualname__
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen or "__slots__" not in cls.__dict__:
            raise TypeError(f"@record needs @dataclass(frozen=True, slots=True) under it: {name}")
        taken = _BY_ID.get(wire_id)
        if taken is not None:
            raise TypeError(f"record wire id {wire_id} of {cls.__module__}.{name} is taken by "
                            f"{taken.cls.__module__}.{taken.cls.__qualname__}")
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        names = tuple(f.name for f in fields)
        checks = tuple(_compile(hints[f.name], f"{name}.{f.name}") for f in fields)
        rt = RecordType(cls, wire_id, names, checks)
        claim(Extension(Ext.RECORD, f"RECORD {name}", (cls,), _encoder(rt), _decode_record))
        _BY_ID[wire_id] = rt
        return cls

    return register


def _encoder(rt: RecordType) -> Callable[[Any, Packing], Any]:
    wire_id = rt.wire_id
    if not rt.names:
        return lambda obj, p: msgpack.ExtType(Ext.RECORD, p.pack_inner([wire_id]))
    get = operator.attrgetter(*rt.names)
    if len(rt.names) == 1:
        return lambda obj, p: msgpack.ExtType(Ext.RECORD, p.pack_inner([wire_id, get(obj)]))
    return lambda obj, p: msgpack.ExtType(Ext.RECORD, p.pack_inner([wire_id, *get(obj)]))


def _decode_record(data: bytes, u: Unpacking) -> Any:
    value = u.unpack_inner(data)
    if type(value) is not list or not value:
        raise DecodeError(f"a record is an array [wire_id, fields...], got {short(value)}")
    wire_id = value[0]
    rt = _BY_ID.get(wire_id) if type(wire_id) is int else None
    if rt is None:
        raise DecodeError(f"unknown record wire id {short(wire_id)}")
    names = rt.names
    if len(value) - 1 != len(names):
        raise DecodeError(f"record {rt.cls.__qualname__} (wire id {wire_id}) has "
                          f"{len(names)} fields, got {len(value) - 1}")
    for i, check in enumerate(rt.checks, 1):
        v = value[i]
        if not check.ok(v):
            raise DecodeError(f"record {rt.cls.__qualname__}: field {names[i - 1]} must be "
                              f"{check.text}, got {type(v).__name__} {short(v)}")
    try:
        return rt.cls(*value[1:])
    except (TypeError, ValueError) as e:  # refused by the class's own __post_init__
        raise DecodeError(f"record {rt.cls.__qualname__}: {str(e)[:200]}") from None


def _compile(tp: Any, where: str) -> _Check:
    """The decode-time check of a field annotated ``tp``; TypeError if none can be made."""
    if tp is Any or tp is object:
        return _ANY
    if tp is None or tp is _NONE:
        return _Check(frozenset((_NONE,)), None, "None")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _union([_compile(a, where) for a in args], where)
    if tp is list or origin is list:
        return _container(list, [_compile(args[0], where)] if args else [_ANY], "list")
    if tp is dict or origin is dict:
        parts = [_compile(a, where) for a in args] if args else [_ANY, _ANY]
        return _container(dict, parts, "dict")
    if tp is tuple or origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _container(tuple, [_compile(args[0], where)], "tuple", variadic=True)
        return _container(tuple, [_compile(a, where) for a in args] if args else [_ANY],
                          "tuple", variadic=not args)
    if isinstance(tp, type) and (tp in _PLAIN or tp in BY_TYPE):
        return _Check(frozenset((tp,)), None, tp.__name__)
    if isinstance(tp, type) and issubclass(tp, BaseException):  # ext 11, any subclass
        return _Check(None, lambda v: isinstance(v, tp), f"exception ({tp.__name__})")
    raise TypeError(f"record field {where}: the decoder cannot check the type {tp!r} "
                    "(use str, bytes, bool, int, float, None, a record, an extension type, "
                    "an exception class, or list, dict, tuple and unions of them)")


def _union(parts: list[_Check], where: str) -> _Check:
    text = " | ".join(p.text for p in parts)
    if any(p.types is None and p.deep is None for p in parts):
        return _Check(None, None, text)
    if any(p.types is None for p in parts):  # an exception: tried in turn
        return _Check(None, lambda v: any(p.ok(v) for p in parts), text)
    allowed: frozenset[type] = frozenset().union(*(p.types or () for p in parts))
    deep = [(p.types or frozenset(), p.deep) for p in parts if p.deep is not None]
    if sum(len(ts) for ts, _ in deep) != len(frozenset().union(*(ts for ts, _ in deep))):
        raise TypeError(f"record field {where}: {text} cannot be told apart on decode")
    if not deep:
        return _Check(allowed, None, text)

    def deep_check(value: Any) -> bool:
        for ts, check in deep:
            if type(value) in ts:
                return check(value)
        return True

    return _Check(allowed, deep_check, text)


def _container(cls: type, parts: list[_Check], name: str, variadic: bool = True) -> _Check:
    more = ", ..." if cls is tuple and variadic else ""
    text = f"{name}[{', '.join(p.text for p in parts)}{more}]"
    if all(p is _ANY for p in parts) and variadic:
        return _Check(frozenset((cls,)), None, name)
    if cls is dict:
        key, val = parts
        return _Check(frozenset((cls,)),
                      lambda d: all(key.ok(k) and val.ok(v) for k, v in d.items()), text)
    if variadic:
        (elem,) = parts
        return _Check(frozenset((cls,)), lambda xs: all(elem.ok(x) for x in xs), text)
    return _Check(frozenset((cls,)), lambda xs: len(xs) == len(parts) and all(
        p.ok(x) for p, x in zip(parts, xs, strict=False)), text)


RECORD = add(Extension(Ext.RECORD, "RECORD", (), lambda obj, p: _not_registered(obj),
                       _decode_record))


def _not_registered(obj: Any) -> Any:
    raise TypeError(f"{type(obj).__qualname__} is not a registered record")
