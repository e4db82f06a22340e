"""``@expose``: what a peer may call. Nothing else is reachable from the network."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from netlet.errors import ConfigError

__all__ = ["MethodInfo", "expose", "exposed_methods", "is_concurrent", "is_exposed"]

T = TypeVar("T")

_CLASS_MARK = "__netlet_exposed__"
_METHOD_MARK = "__netlet_expose__"
_TABLE = "__netlet_methods__"


@dataclass(frozen=True, slots=True)
class MethodInfo:
    name: str
    is_async: bool


@overload
def expose(obj: T) -> T: ...
@overload
def expose(*, concurrent: bool = False) -> Callable[[T], T]: ...


def expose(obj: Any = None, *, concurrent: bool = False) -> Any:
    """Mark a class (all its public methods) or single methods as callable remotely.

    An exposed object handles one call at a time, in arrival order, unless the
    class is exposed with ``concurrent=True``. Names starting with ``_`` are
    never exposed, even when marked.
    """

    def mark(target: Any) -> Any:
        if inspect.isclass(target):
            setattr(target, _CLASS_MARK, {"concurrent": concurrent, "all": True})
            setattr(target, _TABLE, None)  # recomputed for this class on first use
            return target
        if callable(target):
            if target.__name__.startswith("_"):
                raise ConfigError(f"cannot expose private or dunder method {target.__name__!r}")
            setattr(target, _METHOD_MARK, True)
            return target
        raise ConfigError(f"@expose applies to classes and methods, not {type(target).__name__}")

    if obj is None:
        return mark
    return mark(obj)


def is_exposed(obj: object) -> bool:
    """True when ``obj`` is an instance of a class with anything exposed."""
    return bool(exposed_methods(type(obj)))


def is_concurrent(cls: type) -> bool:
    mark = cls.__dict__.get(_CLASS_MARK) or getattr(cls, _CLASS_MARK, None)
    return bool(mark and mark.get("concurrent"))


def exposed_methods(cls: type) -> dict[str, MethodInfo]:
    """The callable surface of ``cls``: public methods, exposed by class or one by one."""
    table = cls.__dict__.get(_TABLE)
    if table is not None:
        return table  # type: ignore[no-any-return]
    whole = _CLASS_MARK in cls.__dict__ or any(_CLASS_MARK in c.__dict__ for c in cls.__mro__)
    table = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        if not callable(func) or isinstance(func, type):
            continue
        if whole or getattr(func, _METHOD_MARK, False):
            table[name] = MethodInfo(name, inspect.iscoroutinefunction(func))
    try:
        setattr(cls, _TABLE, table)
    except (AttributeError, TypeError):  # builtin or slotted types: do not cache
        pass
    return table
