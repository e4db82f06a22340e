"""``@expose``: what a peer may call. Nothing else is reachable from the network.

Only what the user marked: methods defined (``def``/``async def``, plain,
static or class) in the body of an ``@expose``-d class or of an ``@expose``-d
base, and methods marked ``@expose`` one by one. Not a function merely assigned
in a class body, not a callable object stored on the class, not a method
inherited from a base nobody exposed (library classes included), and never a
name that starts with ``_``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
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
    attr: Any = field(default=None, compare=False, repr=False)
    """The class attribute found (function, staticmethod or classmethod): what runs,
    bound to the served object, whatever its instance attributes say."""

    def bind(self, obj: object) -> Callable[..., Any]:
        """The callable for ``obj`` (an instance attribute of the same name cannot shadow it)."""
        if self.attr is None:
            return getattr(obj, self.name)  # type: ignore[no-any-return]
        return self.attr.__get__(obj, type(obj))  # type: ignore[no-any-return]


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


def _defined_in(func: Any, owner: type, name: str) -> bool:
    """True for a function written in ``owner``'s body under ``name`` (not assigned there)."""
    return (inspect.isfunction(func) and func.__name__ == name
            and func.__qualname__ == f"{owner.__qualname__}.{name}"
            and func.__module__ == owner.__module__)


def exposed_methods(cls: type) -> dict[str, MethodInfo]:
    """The callable surface of ``cls``: what the user marked (see the module docstring)."""
    table = cls.__dict__.get(_TABLE)
    if table is not None:
        return table  # type: ignore[no-any-return]
    table = {}
    seen: set[str] = set()
    for owner in cls.__mro__:  # the most derived definition of a name decides
        whole = _CLASS_MARK in owner.__dict__
        for name, attr in list(owner.__dict__.items()):
            if name in seen:
                continue
            seen.add(name)
            if name.startswith("_"):
                continue
            func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            if not callable(func) or isinstance(func, type):
                continue
            marked = getattr(func, _METHOD_MARK, False) is True
            if marked or (whole and _defined_in(func, owner, name)):
                table[name] = MethodInfo(name, inspect.iscoroutinefunction(func), attr)
    try:
        setattr(cls, _TABLE, table)
    except (AttributeError, TypeError):  # builtin or slotted types: do not cache
        pass
    return table
