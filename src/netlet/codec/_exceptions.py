"""Exceptions across the wire: which types may be rebuilt, and the traceback text.

A peer's exception arrives as its own type only when that type is registered
(``register_exception``; the builtins and netlet's own are), never as a type
that stops a process or ends a generator; anything else becomes a
``RemoteError``. Its traceback travels as text, formatted here without the
costly ``^^^`` markers. This is a security boundary with its own reasons to
change (what may be rebuilt, how tracebacks read), apart from the byte layout
the codec owns, so it lives in its own module; the codec calls it from its
EXCEPTION extension type.
"""

from __future__ import annotations

import builtins
import linecache
import pickle
import traceback
from types import TracebackType
from typing import Any

from netlet import errors
from netlet.errors import RemoteError

__all__ = [
    "NEVER_REBUILT_TYPES",
    "SAFE_EXCEPTIONS",
    "format_traceback",
    "rebuild_exception",
    "register_exception",
    "type_name",
    "unpickle_exception",
]

# Exception types that may be rebuilt from a peer: never anything whose
# construction could run arbitrary code, never the ones that stop a process.
SAFE_EXCEPTIONS: dict[str, type[BaseException]] = {}
# StopIteration would end a generator or break an asyncio future where it is raised.
_NEVER_REBUILT = {"SystemExit", "KeyboardInterrupt", "GeneratorExit", "StopIteration",
                  "StopAsyncIteration"}
# ...the same, as types: they arrive as RemoteError even between peers that pickle.
NEVER_REBUILT_TYPES: tuple[type[BaseException], ...] = (
    SystemExit, KeyboardInterrupt, GeneratorExit, StopIteration, StopAsyncIteration)


def register_exception(cls: type[BaseException]) -> type[BaseException]:
    """Let ``cls`` raised remotely arrive as ``cls`` (usable as a decorator).

    Its constructor must accept its own ``args``; both ends must register it.
    """
    SAFE_EXCEPTIONS[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def _register_builtin_exceptions() -> None:
    for name in dir(builtins):
        obj = getattr(builtins, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, BaseException)
            and name not in _NEVER_REBUILT
            and not name.startswith("_")
        ):
            SAFE_EXCEPTIONS[f"builtins.{name}"] = obj
    for name in errors.__all__:
        register_exception(getattr(errors, name))


_register_builtin_exceptions()


def type_name(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def rebuild_exception(
    type_name: str, args: list[Any], message: str, tb_text: str
) -> BaseException:
    """The exception a remote peer raised, as its own type when that is safe."""
    cls = SAFE_EXCEPTIONS.get(type_name)
    exc: BaseException
    if cls is RemoteError and len(args) == 3:
        exc = RemoteError(*args)
    elif cls is None:
        exc = RemoteError(type_name, message, tb_text)
    else:
        try:
            exc = cls(*args)
        except Exception:
            exc = RemoteError(type_name, message, tb_text)
    return _with_traceback(exc, tb_text)


_REPEAT_CUTOFF = 3  # as the traceback module: identical frames beyond three are counted
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def format_traceback(exc: BaseException) -> str:
    """``traceback.format_exception(exc)`` as text, without the ``^^^`` markers.

    The markers cost a parse of every frame's source line (hundreds of µs for a
    deep stack), paid on every exception a call raises; the frames, lines and
    chained causes are what a remote reader needs. Exception groups keep the
    standard format.
    """
    parts: list[str] = []
    seen: set[int] = set()

    def one(e: BaseException) -> None:
        seen.add(id(e))
        if isinstance(e, BaseExceptionGroup):
            parts.append("".join(traceback.format_exception(e, chain=False)))
            return
        cause, context = e.__cause__, e.__context__
        if cause is not None and id(cause) not in seen:
            one(cause)
            parts.append(_CAUSE)
        elif context is not None and not e.__suppress_context__ and id(context) not in seen:
            one(context)
            parts.append(_CONTEXT)
        if e.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            _frames(e.__traceback__, parts)
        parts.extend(traceback.format_exception_only(type(e), e))

    one(exc)
    return "".join(parts)


def _frames(tb: TracebackType, parts: list[str]) -> None:
    """The frames of ``tb`` as the standard format writes them, repeats collapsed alike."""
    last, repeats = None, 0
    for frame, lineno in traceback.walk_tb(tb):
        code = frame.f_code
        where = (code.co_filename, lineno, code.co_name)
        if where == last:
            repeats += 1
            if repeats >= _REPEAT_CUTOFF:
                continue
        else:
            _repeated(repeats, parts)
            last, repeats = where, 0
        parts.append(f'  File "{where[0]}", line {lineno}, in {where[2]}\n')
        line = linecache.getline(where[0], lineno, frame.f_globals).strip()
        if line:
            parts.append(f"    {line}\n")
    _repeated(repeats, parts)


def _repeated(repeats: int, parts: list[str]) -> None:
    if repeats >= _REPEAT_CUTOFF:
        more = repeats - _REPEAT_CUTOFF + 1
        parts.append(f"  [Previous line repeated {more} more time{'s' if more > 1 else ''}]\n")


def _with_traceback(exc: BaseException, tb_text: str) -> BaseException:
    """Attach the remote traceback as ``remote_traceback`` and as a note."""
    try:
        exc.remote_traceback = tb_text  # type: ignore[attr-defined]
        if tb_text:
            # The text is a whole formatted traceback: keep one header, not two.
            body = tb_text.removeprefix("Traceback (most recent call last):\n")
            exc.add_note(f"Remote traceback (most recent call last):\n{body.rstrip()}")
    except (AttributeError, TypeError):
        pass
    return exc


def unpickle_exception(data: bytes, tb_text: str) -> BaseException | None:
    """A pickled exception from a peer that agreed to pickle, or None if it does not load.

    Classes whose ``__init__`` does not take their own ``args`` fail to unpickle
    (a long-standing Python limit); the caller then rebuilds a ``RemoteError``.
    """
    try:
        exc = pickle.loads(data)
    except Exception:
        return None
    if not isinstance(exc, BaseException) or isinstance(exc, NEVER_REBUILT_TYPES):
        return None
    return _with_traceback(exc, tb_text)
