"""Large receive buffers kept for the next frame once the values that used them are gone.

Receiving into fresh memory costs more than the copy from the kernel: every page
is faulted in and zeroed, then unmapped when the value dies (about 1.5 GB/s
here, against 5 GB/s into memory already mapped). So a large frame's buffer is
kept after its call: an anonymous map (numpy arrays and other buffers view it)
or, on the direct path, the ``bytes`` object a ``bytes`` argument was received
into. The next frame of a fitting size reuses it, once nothing refers to it any
more: the entry's reference count, which every view of the memory raises, says
so (CPython; elsewhere nothing is kept).

What the cache keeps counts in the node's ``Budget`` (``cached``), whether or not
the application still holds the value, and never past ``limit``: a frame that
needs the room drops entries first (oldest first), so the cache never makes a
frame wait. A dropped entry the application still holds is freed with its value.
"""

from __future__ import annotations

import mmap
import struct
import sys
from typing import Any

__all__ = ["BufferCache", "bytes_api", "bytes_window", "fresh_bytes", "reset_bytes_hash"]

MIN_CACHED = 256 * 1024
"""Smaller buffers are cheap to allocate; they are not kept."""
MAX_ENTRIES = 8

_CPYTHON = (sys.implementation.name == "cpython"
            and getattr(sys, "_is_gil_enabled", lambda: True)())
"""Reference counts tell when a buffer is free (not in free-threaded builds: kept none)."""
_BYTES_HASH = bytes.__basicsize__ - 1 - struct.calcsize("n")  # n: Py_ssize_t
"""Where a bytes object caches its hash (``ob_shash``, just before its data)."""


def reset_bytes_hash(obj: bytes) -> None:
    """Forget the hash a reused ``bytes`` object may have cached (CPython)."""
    import ctypes  # here, not at import: ~1 ms of every process's start, used for big frames

    ctypes.c_ssize_t.from_address(id(obj) + _BYTES_HASH).value = -1


def _refs(entry: list[Any]) -> int:
    return sys.getrefcount(entry[0])


def _calibrate() -> int:
    probe = [mmap.mmap(-1, mmap.PAGESIZE), 0]
    return _refs(probe)


_UNUSED = _calibrate()
"""The reference count of an entry's object that nothing outside the cache refers to."""


class BufferCache:
    """Buffers kept for reuse, each ``[obj, size]``, oldest first.

    Not thread-safe on its own: the ``Budget`` calls it under its lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit if _CPYTHON else 0
        self.size = 0
        """Bytes of every kept buffer (in use by a value or not)."""
        self._entries: list[list[Any]] = []

    def take(self, kind: type, n: int) -> Any:
        """A kept ``kind`` (``mmap.mmap`` or ``bytes``) nothing refers to, that holds
        ``n`` bytes (a map up to half as much again; bytes exactly), removed from
        the cache; or None."""
        best: list[Any] | None = None
        for e in self._entries:
            size = e[1]
            if (type(e[0]) is kind and n <= size and (size == n or kind is mmap.mmap)
                    and size <= n + n // 2 and (best is None or size < best[1])
                    and _refs(e) == _UNUSED):
                best = e
        if best is None:
            return None
        self._entries.remove(best)
        self.size -= best[1]
        return best[0]

    def put(self, obj: Any, size: int) -> list[Any]:
        """Keep ``obj`` (``size`` bytes); returns what had to go to make room
        (drop it outside the lock: unmapping takes a while)."""
        if size < MIN_CACHED or size > self.limit:
            return [obj]
        self._entries.append([obj, size])
        self.size += size
        return self.shrink(self.limit)

    def shrink(self, keep: int) -> list[Any]:
        """Drop the oldest entries until at most ``keep`` bytes stay; returns them."""
        dropped: list[Any] = []
        while self._entries and (self.size > keep or len(self._entries) > MAX_ENTRIES):
            obj, size = self._entries.pop(0)
            self.size -= size
            dropped.append(obj)
        return dropped


_BYTES_HEADER = bytes.__basicsize__ - 1  # where a bytes object's data starts (CPython)
_new_bytes: Any = None
_bytes_api_made = False


def bytes_api() -> Any:
    """CPython's ``PyBytes_FromStringAndSize`` through ctypes (None elsewhere), made on
    first use: importing ctypes costs every process ~1 ms at start."""
    global _new_bytes, _bytes_api_made
    if not _bytes_api_made:
        if sys.implementation.name == "cpython":
            import ctypes

            fn = ctypes.pythonapi.PyBytes_FromStringAndSize
            fn.restype = ctypes.py_object
            fn.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
            _new_bytes = fn
        _bytes_api_made = True
    return _new_bytes


def bytes_window(obj: bytes) -> memoryview:
    """A writable view of a bytes object's data: only while nothing else refers to it."""
    import ctypes  # loaded by bytes_api already: a dictionary lookup

    window = (ctypes.c_char * len(obj)).from_address(id(obj) + _BYTES_HEADER)
    return memoryview(window).cast("B")


def fresh_bytes(n: int) -> tuple[bytes, memoryview] | None:
    """A new, still private bytes object of length ``n`` and a writable view of it.

    Exactly what CPython's own ``socket.recv`` does inside: allocate the bytes
    object, then let the kernel fill it. Only valid until the object is shared;
    the caller fills it completely before handing it out. None off CPython.
    """
    new_bytes = bytes_api()
    if new_bytes is None:
        return None
    obj = new_bytes(None, n)
    return obj, bytes_window(obj)
