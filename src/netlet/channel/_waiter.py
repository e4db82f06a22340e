"""One-shot waiters: how a blocked channel operation is found, claimed and woken.

A waiter may sit in several channels' queues at once (``select``): whoever
claims it first completes it, everyone else skips it. Claiming is a
non-blocking lock acquire, the cheapest atomic test-and-set Python has. A
waiter wakes a thread (a lock) or an asyncio future (on its own loop).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

__all__ = ["Waiter"]


class Waiter:
    """Completed at most once with (case index, value) or an exception."""

    __slots__ = ("_claim", "_future", "_loop", "_wake", "error", "index", "value")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._claim = threading.Lock()
        self.index = -1
        self.value: Any = None
        self.error: BaseException | None = None
        self._loop = loop
        self._future: asyncio.Future[None] | None = None
        self._wake: threading.Lock | None = None
        if loop is None:
            self._wake = threading.Lock()
            self._wake.acquire()
        else:
            self._future = loop.create_future()

    @property
    def claimed(self) -> bool:
        return self._claim.locked()

    def claim(self) -> bool:
        """Take the right to complete this waiter; True for exactly one caller."""
        return self._claim.acquire(blocking=False)

    def complete(self, index: int, value: Any = None, error: BaseException | None = None) -> None:
        """Wake the waiter; only after a successful ``claim``."""
        self.index, self.value, self.error = index, value, error
        if self._wake is not None:
            self._wake.release()
            return
        assert self._future is not None
        assert self._loop is not None
        fut = self._future
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            if not fut.done():
                fut.set_result(None)
        else:
            self._loop.call_soon_threadsafe(_settle, fut)

    def wait(self, timeout: float | None) -> bool:
        """Block a thread until completed; False on timeout (the waiter may still win)."""
        assert self._wake is not None
        return self._wake.acquire(timeout=-1 if timeout is None else max(timeout, 0))

    async def wait_async(self, timeout: float | None) -> bool:
        assert self._future is not None
        if timeout is None:
            await asyncio.shield(self._future)
            return True
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._future)
        except TimeoutError:
            return self._future.done()
        return True


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
