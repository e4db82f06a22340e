"""The field types a record may declare, and the test each one's decoded value must pass.

Read once from a record's annotations when it is registered; an annotation
that cannot be tested on decode (``range``, a class of ours) is refused there.
The elements of a list, tuple or map whose element type depends on the type
alone (``list[str]``, ``list[bytes | None]``, ``list[BaseException | None]``)
are checked by their types at C speed (``types.issuperset(map(type, xs))``,
~12-15 ns an element), not by a Python test per element (~60 ns): a columnar
record (``Pulled.ids``) holds one element per task.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlet.codec._table import BY_TYPE

__all__ = ["ANY", "Check", "compile_check"]

_NONE = type(None)
_PLAIN = frozenset((str, bytes, bool, int, float))


@dataclass(frozen=True, slots=True)
class Check:
    """What a field accepts: exact types (None: anything) and, for containers, a deeper test."""

    types: frozenset[type] | None
    deep: Callable[[Any], bool] | None
    text: str
    of_type: Callable[[type], bool] | None = None
    """The same test on a value's exact type, when its type alone decides (else None)."""
    elements: frozenset[type] | None = None
    """For a list or tuple whose elements' exact types decide (``list[str]``): those
    types, so a generated decoder tests ``elements.issuperset(map(type, xs))`` inline
    (``deep`` does the same through two calls, ~0.1 µs a field)."""

    def ok(self, value: Any) -> bool:
        return ((self.types is None or type(value) in self.types)
                and (self.deep is None or self.deep(value)))


ANY = Check(None, None, "any value")


def _exact(tp: type, text: str) -> Check:
    types = frozenset((tp,))
    return Check(types, None, text, types.__contains__)


def compile_check(tp: Any, where: str) -> Check:
    """The decode-time check of a field annotated ``tp``; TypeError if none can be made."""
    if tp is Any or tp is object:
        return ANY
    if tp is None or tp is _NONE:
        return _exact(_NONE, "None")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _union([compile_check(a, where) for a in args], where)
    if tp is list or origin is list:
        return _container(list, [compile_check(args[0], where)] if args else [ANY], "list")
    if tp is dict or origin is dict:
        parts = [compile_check(a, where) for a in args] if args else [ANY, ANY]
        return _container(dict, parts, "dict")
    if tp is tuple or origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _container(tuple, [compile_check(args[0], where)], "tuple", variadic=True)
        return _container(tuple, [compile_check(a, where) for a in args] if args else [ANY],
                          "tuple", variadic=not args)
    if isinstance(tp, type) and (tp in _PLAIN or tp in BY_TYPE):
        return _exact(tp, tp.__name__)
    if isinstance(tp, type) and issubclass(tp, BaseException):  # ext 11, any subclass
        return Check(None, lambda v: isinstance(v, tp), f"exception ({tp.__name__})",
                     lambda t: issubclass(t, tp))
    raise TypeError(f"record field {where}: the decoder cannot check the type {tp!r} "
                    "(use str, bytes, bool, int, float, None, a record, an extension type, "
                    "an exception class, or list, dict, tuple and unions of them)")


def _union(parts: list[Check], where: str) -> Check:
    text = " | ".join(p.text for p in parts)
    if any(p.types is None and p.deep is None for p in parts):
        return Check(None, None, text)
    if any(p.types is None for p in parts):  # an exception: tried in turn
        by_type = [p.of_type for p in parts]
        of_type = None
        if all(by_type):
            tests = [t for t in by_type if t is not None]
            of_type = lambda t: any(test(t) for test in tests)  # noqa: E731
        return Check(None, lambda v: any(p.ok(v) for p in parts), text, of_type)
    allowed: frozenset[type] = frozenset().union(*(p.types or () for p in parts))
    deep = [(p.types or frozenset(), p.deep) for p in parts if p.deep is not None]
    if sum(len(ts) for ts, _ in deep) != len(frozenset().union(*(ts for ts, _ in deep))):
        raise TypeError(f"record field {where}: {text} cannot be told apart on decode")
    if not deep:
        return Check(allowed, None, text, allowed.__contains__)

    def deep_check(value: Any) -> bool:
        for ts, check in deep:
            if type(value) in ts:
                return check(value)
        return True

    return Check(allowed, deep_check, text)


def _container(cls: type, parts: list[Check], name: str, variadic: bool = True) -> Check:
    more = ", ..." if cls is tuple and variadic else ""
    text = f"{name}[{', '.join(p.text for p in parts)}{more}]"
    if all(p is ANY for p in parts) and variadic:
        return _exact(cls, name)
    if cls is dict:
        keys, values = (_every(p) for p in parts)
        return Check(frozenset((cls,)), lambda d: keys(d) and values(d.values()), text)
    if variadic:
        inner = parts[0]
        elements = inner.types if inner.types is not None and inner.deep is None else None
        return Check(frozenset((cls,)), _every(inner), text, elements=elements)
    return Check(frozenset((cls,)), lambda xs: len(xs) == len(parts) and all(
        p.ok(x) for p, x in zip(parts, xs, strict=False)), text)


def _every(check: Check) -> Callable[[Any], bool]:
    """A test that every element of an iterable passes ``check``: at C speed when
    the element's type decides (one lookup per element, or per distinct type)."""
    if check is ANY:
        return lambda xs: True
    types = check.types
    if types is not None and check.deep is None:
        return lambda xs: types.issuperset(map(type, xs))
    of_type = check.of_type
    if of_type is not None:
        return lambda xs: all(map(of_type, set(map(type, xs))))
    return lambda xs: all(check.ok(x) for x in xs)
