"""numpy arrays as an extension type: dtype and shape in the body, the data out of band.

numpy is optional and never imported here until an array is sent or received;
an array is recognised by its type's name, so a process without numpy pays
nothing. What a dtype may be (no object arrays: they would need pickle) and
how it is written as plain data change with numpy, not with the rest of the
codec, so this is its own module.
"""

from __future__ import annotations

from typing import Any

from netlet.codec._guard import short
from netlet.codec._types import Buffer
from netlet.errors import DecodeError

__all__ = ["is_ndarray", "ndarray_fields", "ndarray_from"]


def is_ndarray(obj: object) -> bool:
    """True for a ``numpy.ndarray`` (checked without importing numpy)."""
    cls = type(obj)
    return cls.__name__ == "ndarray" and cls.__module__ == "numpy"


def ndarray_fields(arr: Any, buffers: list[Buffer], oob_threshold: int,
                   max_buffers: int) -> list[Any] | None:
    """``[dtype, shape, data]`` of an array, its data appended to ``buffers`` when large
    (``data`` is then the buffer's index); None for an array of Python objects."""
    if arr.dtype.hasobject:
        return None
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
    data: Any
    if arr.nbytes >= oob_threshold and len(buffers) < max_buffers:
        buffers.append(memoryview(arr).cast("B"))
        data = len(buffers) - 1
    else:
        data = arr.tobytes()
    return [_dtype_descr(arr.dtype), list(arr.shape), data]


def ndarray_from(descr: Any, shape: list[Any], raw: Buffer) -> Any:
    """The array of dtype ``descr`` and ``shape`` over ``raw`` (copied if read-only)."""
    try:
        import numpy as np
    except ImportError:
        raise DecodeError("received a numpy array but numpy is not installed") from None
    try:
        dtype = np.lib.format.descr_to_dtype(_tuples(descr))
    except (TypeError, ValueError) as e:
        raise DecodeError(f"bad numpy dtype {short(descr)}: {str(e)[:200]}") from None
    if dtype.hasobject:
        raise DecodeError("numpy object arrays are not accepted")
    arr = np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))
    return arr if arr.flags.writeable else arr.copy()


def _dtype_descr(dtype: Any) -> Any:
    """A dtype as plain data: a string, or a list of fields for structured dtypes."""
    import numpy as np

    descr = np.lib.format.dtype_to_descr(dtype)
    return [list(f) for f in descr] if isinstance(descr, list) else descr


def _tuples(descr: Any) -> Any:
    """Inverse of ``_dtype_descr``'s list-of-lists (msgpack has no tuples)."""
    if isinstance(descr, list):
        return [tuple(_tuples(x) for x in f) if isinstance(f, list) else f for f in descr]
    return descr
