"""How a task's function travels: by import path, or by value between trusted peers.

A function defined at module level in an importable module travels as
``"package.module:qualname"`` and is imported where it runs. Anything else (a
lambda, a closure, a function from ``__main__``) travels pickled with
cloudpickle, which is only allowed when it was agreed end to end: the client
opted in, the head allows it, the worker allows it, and every hop proved it
holds the cluster key (the embedded cluster does all that, with a key it
makes). A worker asked to unpickle without that agreement refuses, saying
which side did not agree.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
from collections.abc import Callable
from typing import Any

from netlet.cluster._code import split_code
from netlet.errors import ConfigError

__all__ = ["CannotImport", "FunctionCache", "function_ref", "resolve_path", "run_chunk"]


class CannotImport(ConfigError):
    """This process cannot import a task's function (another worker may)."""


def resolve_path(path: str) -> Any:
    """Import ``"module:qualname"`` (or ``"module.qualname"``) and return the object."""
    module_name, sep, qualname = path.partition(":")
    if not sep:
        module_name, _, qualname = path.rpartition(".")
    if not module_name or not qualname:
        raise ConfigError(f"not an import path: {path!r} (use 'package.module:function')")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise CannotImport(f"cannot import {path!r}: {e}") from None
    return obj


def _importable_path(fn: Any) -> str | None:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    path = f"{module}:{qualname}"
    try:
        return path if resolve_path(path) is fn else None
    except ConfigError:
        return None


def function_ref(fn: Callable[..., Any] | str, *, allow_pickle: bool) -> tuple[str, bytes | None]:
    """(function id, pickled payload or None) for sending ``fn`` to a worker."""
    if isinstance(fn, str):
        return fn, None  # imported where it runs; a typo fails that task with ConfigError
    if not callable(fn):
        raise ConfigError(f"a task needs a function, got {type(fn).__name__}")
    path = _importable_path(fn)
    if path is not None:
        return path, None
    if not allow_pickle:
        raise ConfigError(
            f"{getattr(fn, '__qualname__', fn)!r} cannot travel by import path (it lives in "
            "__main__ or is a lambda/closure); define it in an importable module, or give "
            "the cluster a key and allow_pickle=True so it can travel by value")
    try:
        import cloudpickle

        payload = cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except ImportError:
        payload = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    return "pickle:" + hashlib.sha256(payload).hexdigest()[:24], payload


PickleRefusal = Callable[[], "str | None"]
"""Why pickled functions may not be loaded right now (None: every side agreed)."""


class FunctionCache:
    """A worker's resolved functions, by id (imports and unpickles happen once).

    An id with shipped code (``@<packages>``) names that version of the function:
    resolve it inside ``CodeCache.active`` of those packages.

    ``pickle_refusal`` is asked before every unpickling; without it nothing is
    ever unpickled.
    """

    def __init__(self, pickle_refusal: PickleRefusal | None = None) -> None:
        self._fns: dict[str, Callable[..., Any]] = {}
        self._payloads: dict[str, bytes] = {}
        self._refusal = pickle_refusal or (lambda: "this process never accepts pickles")

    def add_payloads(self, payloads: dict[str, bytes]) -> None:
        self._payloads.update(payloads)

    def get(self, fn_id: str) -> Callable[..., Any]:
        fn = self._fns.get(fn_id)
        if fn is not None:
            return fn
        if fn_id.startswith("pickle:"):
            why = self._refusal()
            if why is not None:
                raise ConfigError(f"refusing to unpickle function {fn_id}: {why}")
            payload = self._payloads.get(fn_id)
            if payload is None:
                raise ConfigError(f"function {fn_id} was not sent along with its task")
            try:
                fn = pickle.loads(payload)
            except (ImportError, AttributeError) as e:  # it refers to a module we lack
                raise CannotImport(f"cannot load function {fn_id}: {e}") from None
        else:
            fn = resolve_path(split_code(fn_id)[0])  # "mod:fn@<packages>": in their context
        if not callable(fn):
            raise ConfigError(f"{fn_id} is not callable")
        self._fns[fn_id] = fn
        return fn  # type: ignore[no-any-return]


def run_chunk(fn: Callable[..., Any], chunk: list[list[Any]]) -> list[Any]:
    """Run ``fn`` over a chunk of argument lists (``map`` with chunksize > 1)."""
    return [fn(*args) for args in chunk]
