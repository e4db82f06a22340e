"""A clock a test moves by hand: timers fire when ``advance`` says, not when time passes.

Timers armed on it (asyncio sleeps, ``call_later``, ``timeout`` blocks and thread
waits) fire only inside :meth:`VirtualClock.advance`, in deadline order, and
``advance`` returns once their effects ran: it waits for each event loop it
woke to run what was ready (its callbacks and the tasks they woke), and for
each thread it woke to return from its wait. So after ``clock.advance(2.9)`` a
test may assert "still alive" and mean it.

``advance(s)`` is a jump: time moves to ``now + s`` at once and every timer due
by then fires with the clock already there, like a suspended process resuming.
A periodic task therefore ticks once per ``advance``; step in smaller increments
to see each tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from netlet.clock._waiter import Waiter, settle_future

__all__ = ["VirtualClock"]

_LOOP, _THREAD = 0, 1


class _Entry:
    """One armed timer; ``cancel()`` from any thread."""

    __slots__ = ("args", "callback", "cancelled", "fired", "kind", "loop", "when")

    def __init__(self, when: float, kind: int, loop: asyncio.AbstractEventLoop | None,
                 callback: Callable[..., object] | None, args: tuple[Any, ...]) -> None:
        self.when, self.kind, self.loop = when, kind, loop
        self.callback, self.args = callback, args
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True

    def run(self) -> None:
        """On the loop: call back unless cancelled meanwhile (asyncio's own promise)."""
        if not self.cancelled and self.callback is not None:
            self.callback(*self.args)


class VirtualClock:
    """A :class:`netlet.clock.Clock` whose time moves only when a test calls ``advance``.

    ``start`` is its first ``monotonic()`` value, ``wall`` its first ``time()``.
    A thread waiting on it looks at the clock every ``poll`` real seconds (what a
    thread wait costs in real time once it is due). A blocking socket read that
    cannot wait on it (a direct connection's) reads in slices of ``io_poll`` real
    seconds and then looks: longer, since a frame that stalls for that long in
    its middle counts as a broken connection. ``settle`` bounds, in real
    seconds, how long ``advance`` waits for what it woke.
    """

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0, *,
                 poll: float = 0.002, io_poll: float = 0.05, settle: float = 5.0) -> None:
        self._now = float(start)
        self._offset = float(wall) - self._now
        self._poll = poll
        self._io_poll = io_poll
        self._settle_limit = settle
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._unacked = 0  # thread waiters woken, not yet back from their wait
        self._advancing = threading.Lock()

    def __repr__(self) -> str:
        return f"<VirtualClock at {self._now:.6f}, {self.pending} timer(s) armed>"

    # -- reading ------------------------------------------------------------------

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._offset

    @property
    def pending(self) -> int:
        """Timers armed and not cancelled (poll it to know a task is waiting)."""
        with self._cond:
            return sum(1 for _, _, e in self._heap if not e.cancelled)

    def next_deadline(self) -> float | None:
        """When the earliest armed timer is due (``None``: none armed)."""
        with self._cond:
            live = [w for w, _, e in self._heap if not e.cancelled]
        return min(live) if live else None

    # -- arming -------------------------------------------------------------------

    def _arm(self, delay: float, kind: int, loop: asyncio.AbstractEventLoop | None,
             callback: Callable[..., object] | None, args: tuple[Any, ...]) -> _Entry:
        with self._cond:
            entry = _Entry(self._now + delay, kind, loop, callback, args)
            heapq.heappush(self._heap, (entry.when, next(self._seq), entry))
        return entry

    def _arm_at(self, since: float | None, timeout: float) -> _Entry | None:
        """A thread's timer ``timeout`` s after ``since`` (else now): None if already due.
        The check and the arming are one step, so an ``advance`` cannot fall between."""
        with self._cond:
            when = (self._now if since is None else since) + timeout
            if when <= self._now:
                return None
            entry = _Entry(when, _THREAD, None, None, ())
            heapq.heappush(self._heap, (entry.when, next(self._seq), entry))
        return entry

    def call_later(self, loop: asyncio.AbstractEventLoop, delay: float,
                   callback: Callable[..., object], *args: Any) -> Any:
        if delay <= 0:
            return loop.call_soon_threadsafe(callback, *args)
        return self._arm(delay, _LOOP, loop, callback, args)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = self._arm(seconds, _LOOP, loop, settle_future, (fut,))
        try:
            await fut
        finally:
            entry.cancel()

    @contextlib.asynccontextmanager
    async def timeout(self, seconds: float | None) -> AsyncIterator[Any]:
        if seconds is None:
            yield None
            return
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as cm:
            entry = self.call_later(loop, seconds, _expire, cm, loop)
            try:
                yield cm
            finally:
                entry.cancel()

    def wait(self, block: Callable[[float | None], bool], timeout: float | None,
             since: float | None = None) -> bool:
        if timeout is None:
            return block(None)
        entry = self._arm_at(since, timeout)
        if entry is None:
            return block(0)
        try:
            while True:
                if block(self._poll):
                    return True
                if entry.fired:
                    return block(0)
        finally:
            with self._cond:
                entry.cancelled = True
                if entry.fired:
                    self._unacked -= 1
                    self._cond.notify_all()

    def io_slice(self, timeout: float | None) -> float | None:
        return None if timeout is None else min(timeout, self._io_poll)

    # -- moving -------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move time ``seconds`` ahead and fire every timer due by then, in order.

        Returns once what they woke has run (see the module docstring). Called on
        an event loop's own thread, that loop's callbacks run after the caller
        yields: use :meth:`advance_aio` there.
        """
        if seconds < 0:
            raise ValueError("a clock only moves forward: advance() takes seconds >= 0")
        with self._advancing:
            with self._cond:
                target = self._now + seconds
            for _ in range(100_000):  # timers armed by what fired, due by target too
                with self._cond:
                    self._now = max(self._now, target)
                    due: list[_Entry] = []
                    while self._heap and self._heap[0][0] <= target:
                        entry = heapq.heappop(self._heap)[2]
                        if not entry.cancelled:
                            due.append(entry)
                            if entry.kind == _THREAD:
                                entry.fired = True
                                self._unacked += 1
                if not due:
                    return
                self._fire(due)

    async def advance_aio(self, seconds: float) -> None:
        """``advance`` from a coroutine: lets this loop run what it woke before returning."""
        self.advance(seconds)
        for _ in range(5):
            await asyncio.sleep(0)

    def _fire(self, due: list[_Entry]) -> None:
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        loops: list[asyncio.AbstractEventLoop] = []
        for entry in due:
            loop = entry.loop
            if loop is None:
                continue
            if loop is here:
                loop.call_soon(entry.run)
                continue
            try:
                loop.call_soon_threadsafe(entry.run)
            except RuntimeError:  # its loop is closed: nothing left to wake
                continue
            if loop not in loops:
                loops.append(loop)
        limit = self._settle_limit
        for loop in loops:
            # Three round trips: the callbacks, the tasks they woke, what those started.
            for _ in range(3):
                done = Waiter()
                try:
                    loop.call_soon_threadsafe(done, True, None)
                except RuntimeError:
                    break
                if not done.wait(limit):
                    break
        with self._cond:
            self._cond.wait_for(lambda: self._unacked <= 0, timeout=limit)


def _expire(cm: asyncio.Timeout, loop: asyncio.AbstractEventLoop) -> None:
    if cm.expired():
        return
    try:
        cm.reschedule(loop.time())
    except RuntimeError:  # the block was left meanwhile
        pass
