"""Typed records on the wire: frozen dataclasses with a stable wire id (ext 17).

``@record(wire_id)`` on a frozen slots dataclass registers it. It travels as
ext 17 whose payload is the msgpack array ``[wire_id, field1, field2, ...]``,
its fields in declaration order (PROTOCOL.md 6.4). A field declared as a
record ``R``, or as ``list[R]``, carries that record as a bare array of its
fields: its type is known, so it needs no ext and no wire id (and costs a
peer no extension decoding per item). A peer in another language needs only
the documented field lists.

Decoding is strict and runs no code of the peer's choosing: the wire id must
be registered in this process, the field count must match, and every field
must have the type its annotation names (checked before the record is
built); anything else is a ``DecodeError`` naming the record and the field.
The annotations are read once, at registration, and an annotation the decoder
could not check is refused there, as is a wire id registered twice.

A record may declare ``columns``: list fields that hold one item each per row
(``Pulled.ids``, ``Pulled.bodies``: task i is the i-th of each). The decoder
also checks that they are of equal length. Columns, rather than a list of
records, are how a record carries many rows cheaply: no object is built per
row on either side, and each column is checked at C speed (``_fieldtypes``).

The per-record encode and decode functions are generated at registration
from the class's own annotations (as ``dataclasses`` makes ``__init__``),
never from anything a peer sent. A record also gets an ``__init__`` that sets
its slots directly: the frozen dataclass one, through ``object.__setattr__``
per field, costs more than encoding the record.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from netlet.codec._fieldtypes import ANY, Check, compile_check
from netlet.codec._guard import short
from netlet.codec._table import add, claim, from_payload
from netlet.codec._types import Ext
from netlet.errors import DecodeError

__all__ = ["RecordType", "record", "record_types"]

T = TypeVar("T")

WIRE_ID_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class RecordType:
    """A registered record class: its wire id and its fields, in wire order."""

    cls: type
    wire_id: int
    names: tuple[str, ...]
    checks: tuple[Check, ...]
    inline: tuple[tuple[RecordType, bool] | None, ...]
    """Per field: (the record it holds as a bare array, whether a list of them), or None."""
    columns: tuple[str, ...] = ()
    """The list fields that must be of equal length (rows, one item each per field)."""

    def field_types(self) -> tuple[str, ...]:
        """How each field's type is written in errors and in PROTOCOL.md."""
        return tuple(c.text for c in self.checks)


_BY_ID: dict[int, RecordType] = {}
_BY_CLS: dict[type, RecordType] = {}
_BUILD: dict[int, Callable[[list[Any]], Any]] = {}
_BARE_PARTS: dict[type, Callable[[Any], list[Any]]] = {}
_BARE_BUILD: dict[type, Callable[[Any], Any]] = {}


def record_types() -> dict[int, RecordType]:
    """Every record type registered in this process, by wire id."""
    return dict(_BY_ID)


def record(wire_id: int, *, columns: tuple[str, ...] = ()) -> Callable[[type[T]], type[T]]:
    """Register a frozen slots dataclass as a record with this wire id (0 to 2**31 - 1);
    ``columns`` names list fields the decoder checks are of equal length."""
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
        inline = tuple(_inline(hints[f.name]) for f in fields)
        checks = tuple(_inline_check(i) if i is not None
                       else compile_check(hints[f.name], f"{name}.{f.name}")
                       for f, i in zip(fields, inline, strict=True))
        names = tuple(f.name for f in fields)
        for col in columns:
            if col not in names or checks[names.index(col)].types != frozenset((list,)):
                raise TypeError(f"record {name}: column {col!r} is not a list field")
        if len(columns) == 1 or len(set(columns)) != len(columns):
            raise TypeError(f"record {name}: columns are two or more distinct fields")
        rt = RecordType(cls, wire_id, names, checks, inline, tuple(columns))
        parts = _generate_parts(rt, wire_id)
        claim(from_payload(Ext.RECORD, f"RECORD {name}", (cls,),
                           lambda obj, p: msgpack.ExtType(Ext.RECORD, p.pack_inner(parts(obj))),
                           _record, parts))
        _BUILD[wire_id] = _generate_build(rt, bare=False)
        _BARE_PARTS[cls] = _generate_parts(rt, None)
        _BARE_BUILD[cls] = _generate_build(rt, bare=True)
        _fast_init(cls, fields)
        _BY_ID[wire_id] = _BY_CLS[cls] = rt
        return cls

    return register


def _inline(tp: Any) -> tuple[RecordType, bool] | None:
    if isinstance(tp, type) and tp in _BY_CLS:
        return _BY_CLS[tp], False
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and len(args) == 1 and args[0] in _BY_CLS:
        return _BY_CLS[args[0]], True
    return None


def _inline_check(inline: tuple[RecordType, bool]) -> Check:
    rt, many = inline
    name = rt.cls.__name__
    return Check(frozenset((list,)), None, f"list[{name}]" if many else name)


def _generate(source: str, env: dict[str, Any], name: str) -> Any:
    exec(source, env)
    return env[name]


def _generate_parts(rt: RecordType, wire_id: int | None) -> Callable[[Any], list[Any]]:
    """``record -> [wire_id, field1, ...]`` (``wire_id`` None: the bare ``[field1, ...]``)."""
    env: dict[str, Any] = {}
    items = [] if wire_id is None else [str(wire_id)]
    for i, (name, inline) in enumerate(zip(rt.names, rt.inline, strict=True)):
        if inline is None:
            items.append(f"o.{name}")
        else:
            env[f"p{i}"] = _BARE_PARTS[inline[0].cls]
            items.append(f"[p{i}(x) for x in o.{name}]" if inline[1] else f"p{i}(o.{name})")
    return _generate(f"def parts(o):\n return [{', '.join(items)}]\n", env,  # type: ignore[no-any-return]
                     "parts")


def _generate_build(rt: RecordType, bare: bool) -> Callable[[Any], Any]:
    """``payload -> record``: the fields' types tested in one expression, the record
    built; anything else goes to ``_refuse``, which says what is wrong."""
    cls = rt.cls
    env: dict[str, Any] = {"new": object.__new__, "cls": cls, "list": list, "map": map,
                           "type": type,
                           "refuse": lambda v: _refuse(rt, v, bare),
                           "post": getattr(cls, "__post_init__", None)}
    pre = ["type(value) is list"] if bare else []
    tests: list[str] = []
    convert = sets = ""
    for i, (check, name, inline) in enumerate(zip(rt.checks, rt.names, rt.inline, strict=True)):
        env[f"s{i}"] = getattr(cls, name).__set__
        sets += f"   s{i}(o, f{i})\n"
        if inline is not None:
            env[f"b{i}"] = _BARE_BUILD[inline[0].cls]
            convert += (f"   f{i} = [b{i}(x) for x in f{i}]\n" if inline[1]
                        else f"   f{i} = b{i}(f{i})\n")
        if check.elements is not None and check.types is not None and len(check.types) == 1:
            env[f"t{i}"], env[f"e{i}"] = next(iter(check.types)), check.elements
            tests.append(f"type(f{i}) is t{i} and e{i}.issuperset(map(type, f{i}))")
        elif check.types is not None and len(check.types) == 1 and check.deep is None:
            env[f"t{i}"] = next(iter(check.types))
            tests.append(f"type(f{i}) is t{i}")
        elif check.types is not None and check.deep is None:
            env[f"t{i}"] = check.types
            tests.append(f"type(f{i}) in t{i}")
        elif check is not ANY:
            env[f"c{i}"] = check.ok
            tests.append(f"c{i}(f{i})")
    if rt.columns:
        tests.append(" == ".join(f"len(f{rt.names.index(c)})" for c in rt.columns))
    n = len(rt.names)
    fields = "".join(f"f{i}, " for i in range(n))
    unpack = f"  {'' if bare else '_, '}{fields} = value\n" if n or not bare else ""
    source = (f"def build(value):\n"
              f" if {' and '.join([*pre, f'len(value) == {n + (not bare)}'])}:\n"
              f"{unpack}"
              f"  if {' and '.join(tests) or 'True'}:\n"
              f"{convert}   o = new(cls)\n{sets}"
              f"{'   post(o)' if env['post'] is not None else ''}\n"
              f"   return o\n"
              f" return refuse(value)\n")
    return _generate(source, env, "build")  # type: ignore[no-any-return]


def _fast_init(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> None:
    """Give ``cls`` an ``__init__`` that sets its slots directly (same signature and
    ``__post_init__`` call); left alone for fields with factories or keyword-only ones."""
    if any(not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING
           for f in fields):
        return
    env: dict[str, Any] = {"post": getattr(cls, "__post_init__", None)}
    params, body = [], []
    for i, f in enumerate(fields):
        env[f"s{i}"] = getattr(cls, f.name).__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            env[f"d{i}"] = f.default
            params.append(f"{f.name}=d{i}")
        body.append(f" s{i}(self, {f.name})\n")
    post = " post(self)\n" if env["post"] is not None else ""
    source = f"def __init__(self, {', '.join(params)}):\n{''.join(body)}{post} return\n"
    init = _generate(source, env, "__init__")
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]


def _record(value: Any) -> Any:
    """A record from its unpacked payload ``[wire_id, fields...]``."""
    if type(value) is not list or not value:
        raise DecodeError(f"a record is an array [wire_id, fields...], got {short(value)}")
    wire_id = value[0]
    build = _BUILD.get(wire_id) if type(wire_id) is int else None
    if build is None:
        raise DecodeError(f"unknown record wire id {short(wire_id)}: no record type of this "
                          "process has it; import the module that defines it (netlet's own: "
                          "1-99 netlet.cluster, 100-199 netlet.apps.bank)")
    try:
        return build(value)
    except (TypeError, ValueError) as e:  # refused by the class's own __post_init__
        if isinstance(e, DecodeError):
            raise
        cls = _BY_ID[wire_id].cls
        raise DecodeError(f"record {cls.__qualname__}: {str(e)[:200]}") from None


def _refuse(rt: RecordType, value: Any, bare: bool) -> Any:
    """The error for a payload the generated builder did not accept."""
    name = rt.cls.__qualname__
    if bare and type(value) is not list:
        raise DecodeError(f"record {name} (in a field) is an array of its fields, "
                          f"got {type(value).__name__} {short(value)}")
    fields = value if bare else value[1:]
    if len(fields) != len(rt.names):
        where = "(in a field)" if bare else f"(wire id {rt.wire_id})"
        raise DecodeError(f"record {name} {where} has {len(rt.names)} fields, got {len(fields)}")
    for field, check, v in zip(rt.names, rt.checks, fields, strict=True):
        if not check.ok(v):
            raise DecodeError(f"record {name}: field {field} must be "
                              f"{check.text}, got {type(v).__name__} {short(v)}")
    lengths = {c: len(fields[rt.names.index(c)]) for c in rt.columns}
    first = rt.columns[0] if rt.columns else ""
    for col, n in lengths.items():
        if n != lengths[first]:
            raise DecodeError(f"record {name}: field {col} has {n} items, but {first} has "
                              f"{lengths[first]} (columns {', '.join(rt.columns)} are of "
                              "equal length)")
    raise AssertionError(f"record {name}: builder and checks disagree")


def _not_registered(obj: Any) -> Any:
    raise TypeError(f"{type(obj).__qualname__} is not a registered record")


RECORD = add(from_payload(Ext.RECORD, "RECORD", (), lambda obj, p: _not_registered(obj),
                          _record))
