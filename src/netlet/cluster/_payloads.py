"""A client's view of the functions its tasks run: taken as they are at each submit.

A function that cannot travel by import path (a lambda, a closure, a bound
method, a partial) is pickled again at every submit, so a task sees the
function as it is at that moment (``b.x = 2`` then ``submit(b.get)`` returns
2). Payloads are kept by content (the hash of the pickled bytes names them),
and only while a pending task still needs them: the client never holds the
callable itself, and what it holds is bounded by its pending tasks.
"""

from __future__ import annotations

import pickle
import pickletools
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from netlet.cluster._functions import function_ref
from netlet.errors import ConfigError

__all__ = ["MAIN_HINT", "Payloads", "main_module_hint"]

MAIN_HINT = (
    "a function or class defined in your script (__main__) was sent by reference, and a "
    "worker has no such script: move it into an importable module on the workers' path, "
    "or install netlet[pickle] (cloudpickle) so it travels by value")


def _has_cloudpickle() -> bool:
    try:
        import cloudpickle  # noqa: F401
    except ImportError:
        return False
    return True


def _import_path(fn: Any) -> str | None:
    """``"module:qualname"`` if that path names ``fn`` in an imported module, else None.

    The fast path of every submit: a lookup in ``sys.modules``, no import.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__":
        return None
    obj = sys.modules.get(module)
    if obj is None:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return f"{module}:{qualname}" if obj is fn else None


def _refers_to_main(payload: bytes) -> bool:
    """Does a plain pickle name something in ``__main__`` (which a worker cannot import)?"""
    try:
        for op, arg, _ in pickletools.genops(payload):
            if op.name == "GLOBAL" and isinstance(arg, str) and arg.startswith("__main__ "):
                return True
            if arg == "__main__":
                return True
    except (ValueError, pickle.UnpicklingError):
        return False
    return False


class Payloads:
    """Pickled functions by id, each kept while pending tasks use it (thread-safe)."""

    def __init__(self, allow_pickle: bool) -> None:
        self._allow_pickle = allow_pickle
        self._payloads: dict[str, bytes] = {}
        self._users: dict[str, int] = {}
        self._lock = threading.Lock()

    def ref(self, fn: Callable[..., Any] | str) -> tuple[str, bytes | None]:
        """(function id, payload or None) for ``fn`` as it is now; raises ConfigError."""
        if isinstance(fn, str):
            return fn, None
        path = _import_path(fn)
        if path is not None:
            return path, None
        try:
            fn_id, payload = function_ref(fn, allow_pickle=self._allow_pickle)
        except ConfigError:
            raise
        except (pickle.PicklingError, AttributeError, TypeError, RecursionError) as e:
            hint = ("install netlet[pickle] (cloudpickle) to send lambdas, closures and "
                    "functions of your script by value, or define the function at module "
                    "level in an importable module" if not _has_cloudpickle()
                    else "pass an importable function, or make what it captures picklable")
            raise ConfigError(f"{getattr(fn, '__qualname__', fn)!r} cannot be sent to a "
                              f"worker ({type(e).__name__}: {e}): {hint}") from None
        if payload is not None and not _has_cloudpickle() and _refers_to_main(payload):
            raise ConfigError(f"{getattr(fn, '__qualname__', fn)!r}: {MAIN_HINT}")
        return fn_id, payload

    def hold(self, fn_id: str, payload: bytes | None, n: int = 1) -> None:
        """``n`` more pending tasks use ``fn_id`` (``payload``: its bytes, if pickled)."""
        if payload is None:
            return
        with self._lock:
            self._payloads[fn_id] = payload
            self._users[fn_id] = self._users.get(fn_id, 0) + n

    def release(self, fn_id: str) -> None:
        """A task using ``fn_id`` is done: forget the payload once no task needs it."""
        if fn_id.startswith("chunk:"):
            fn_id = fn_id[6:]
        if not fn_id.startswith("pickle:"):
            return
        with self._lock:
            left = self._users.get(fn_id, 0) - 1
            if left > 0:
                self._users[fn_id] = left
            else:
                self._users.pop(fn_id, None)
                self._payloads.pop(fn_id, None)

    def for_specs(self, specs: Sequence[Sequence[Any]]) -> dict[str, bytes]:
        """The payloads the tasks ``(id, fn, body, retries)`` need, to send along with them."""
        out: dict[str, bytes] = {}
        with self._lock:
            for spec in specs:
                fn_id = spec[1][6:] if spec[1].startswith("chunk:") else spec[1]
                payload = self._payloads.get(fn_id)
                if payload is not None:
                    out[fn_id] = payload
        return out

    def __len__(self) -> int:
        return len(self._payloads)


def main_module_hint(error: BaseException) -> None:
    """Add a note saying what to do to an error about the worker's ``__main__``.

    Plain pickle sends a class or function of the user's script as a reference
    to ``__main__``, which on a worker is ``netlet.cluster.__main__``.
    """
    if "on <module 'netlet.cluster.__main__'" in str(error):
        error.add_note(MAIN_HINT)
