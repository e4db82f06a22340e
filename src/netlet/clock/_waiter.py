"""The one way netlet wakes whoever waits: a thread or an asyncio future.

A :class:`Waiter` is completed at most once, with (case index, value) or an
exception, by any thread. It wakes a thread (a bare lock: the cheapest
wake-up Python has) or a task (a future on its own loop, settled in place on
that loop's thread, else through ``call_soon_threadsafe``). A waiter may sit in
several queues at once (a channel ``select``): whoever claims it first
completes it, everyone else skips it. Claiming is a non-blocking lock acquire,
the cheapest atomic test-and-set Python has; a waiter that timed out claims
itself to withdraw (:meth:`Waiter.wait_or_withdraw`), so a timeout and a
completion never both win. It lives in the clock layer, the lowest one that
waits, so every layer above (node calls, channels, the bank's ledger) uses it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["Waiter", "settle_future", "wake_all"]


class Waiter:
    """Completed at most once with (case index, value) or an exception; one party waits.

    ``Waiter()`` wakes a thread, ``Waiter(loop)`` a task on ``loop``. Calling it
    as ``waiter(ok, value)`` completes it (claim included) with a call's outcome:
    ``value`` is the result, or the exception when ``ok`` is false.
    """

    __slots__ = ("_claim", "_future", "_wake", "error", "index", "loop", "value")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._claim = threading.Lock()
        self.index = -1
        self.value: Any = None
        self.error: BaseException | None = None
        self.loop = loop
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
        fut = self._future
        assert fut is not None
        assert self.loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            if not fut.done():
                fut.set_result(None)
            return
        self.loop.call_soon_threadsafe(settle_future, fut)  # RuntimeError: its loop is closed

    def __call__(self, ok: bool, value: Any) -> None:
        """Complete with a call's outcome, unless someone completed or withdrew it first.

        Unlike :meth:`complete` it never raises: a task's loop that is closed has
        nobody waiting there any more.
        """
        if not self._claim.acquire(False):
            return
        wake = self._wake
        if wake is not None:  # a thread: the hot path of every blocking call
            self.index = 0
            if ok:
                self.value = value
            else:
                self.error = value
            wake.release()
            return
        try:
            self.complete(0, value if ok else None, None if ok else value)
        except RuntimeError:  # a task's loop that is closed: nobody waits there
            pass

    def result(self) -> Any:
        """The value completed with, or its exception raised."""
        if self.error is not None:
            raise self.error
        return self.value

    # -- waiting ----------------------------------------------------------------

    def wait(self, timeout: float | None) -> bool:
        """Block a thread until completed; False on timeout (the waiter may still win)."""
        assert self._wake is not None
        return self._wake.acquire(timeout=-1 if timeout is None else max(timeout, 0))

    async def wait_aio(self, timeout: float | None) -> bool:
        """:meth:`wait` for a task. Cancelling the task stops only the waiting: the
        waiter's fields still get its completion (a completer skips a cancelled future)."""
        assert self._future is not None
        if timeout is None:
            await self._future
            return True
        if timeout <= 0:  # as a thread's: look, do not wait
            return self._future.done()
        try:  # shielded: after a timeout the future must still tell a late completion
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._future)
        except TimeoutError:
            return self._future.done()
        return True

    def wait_or_withdraw(self, timeout: float | None) -> bool:
        """Block until completed (True), or until ``timeout`` passed and this waiter
        withdrew (False: claimed by its own waiting side, nobody completes it now).

        A peer that claimed it just before the timeout wins: then the completion,
        which follows at once, is waited for.
        """
        if self.wait(timeout):
            return True
        if self.claim():
            return False
        self.wait(None)
        return True

    async def wait_or_withdraw_aio(self, timeout: float | None) -> bool:
        """:meth:`wait_or_withdraw` for a task (a cancellation withdraws nothing)."""
        if await self.wait_aio(timeout):
            return True
        if self.claim():
            return False
        await self.wait_aio(None)
        return True

    async def result_aio(self) -> Any:
        """Await completion; the value, or its exception raised."""
        assert self._future is not None
        await self._future
        return self.result()


def settle_future(fut: asyncio.Future[Any], value: Any = None,
                  error: BaseException | None = None) -> None:
    """Complete ``fut`` unless it is done already (cancelled by its awaiter); loop thread."""
    if not fut.done():
        if error is None:
            fut.set_result(value)
        else:
            fut.set_exception(error)


def wake_all(done: Iterable[tuple[Waiter, Any, BaseException | None]]) -> None:
    """Complete many waiters with (value, error) each, from a thread that is not their
    loop's: threads at once, and each loop's tasks with one ``call_soon_threadsafe`` (a
    batch of N tasks on a loop costs one wake-up, not N). A waiter claimed by someone
    else is skipped."""
    loops: dict[asyncio.AbstractEventLoop, list[tuple[Waiter, Any, BaseException | None]]] = {}
    for waiter, value, error in done:
        if not waiter.claim():
            continue
        if waiter.loop is None:
            waiter.complete(0, value, error)
        else:
            loops.setdefault(waiter.loop, []).append((waiter, value, error))
    for loop, items in loops.items():
        try:
            loop.call_soon_threadsafe(_complete_all, items)
        except RuntimeError:  # that loop is closed: nobody waits there any more
            pass


def _complete_all(items: list[tuple[Waiter, Any, BaseException | None]]) -> None:
    for waiter, value, error in items:  # on their loop: each settles its future in place
        waiter.complete(0, value, error)
