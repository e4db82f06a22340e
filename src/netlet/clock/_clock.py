"""The Clock protocol and the real clock (the system's, at no extra cost)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

__all__ = ["REAL_CLOCK", "Clock", "RealClock", "Timer", "queue_get", "sleep_blocking",
           "wait_future"]


class Timer(Protocol):
    """What arming a timer returns: it can be called off (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """The time, and every way netlet waits for it.

    * ``monotonic()``: seconds for intervals and deadlines (never jumps back);
    * ``time()``: wall seconds since the epoch, only where a date is shown or stored;
    * ``sleep(s)``, ``call_later(loop, s, fn, *args)``, ``timeout(s)``: asyncio timers
      (``timeout`` is ``asyncio.timeout``: it raises ``TimeoutError`` in the block);
    * ``wait(block, timeout)``: a thread waits; ``block(t)`` blocks up to ``t`` real
      seconds (``None``: for ever) and returns True once what it waits for happened;
      ``wait`` returns False when ``timeout`` seconds of this clock passed first,
      counted from ``since`` (an earlier ``monotonic()``: when what is waited for
      began, so time that moved since then counts) or else from now;
    * ``io_slice(t)``: the real seconds a blocking I/O call that cannot ask the clock
      (a socket read) may wait before it looks at the clock again.
    """

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, loop: asyncio.AbstractEventLoop, delay: float,
                   callback: Callable[..., object], *args: Any) -> Timer: ...

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[Any]: ...

    def wait(self, block: Callable[[float | None], bool], timeout: float | None,
             since: float | None = None) -> bool: ...

    def io_slice(self, timeout: float | None) -> float | None: ...


class RealClock:
    """The system's clocks and asyncio's own timers, called straight through."""

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)
    sleep = staticmethod(asyncio.sleep)
    timeout = staticmethod(asyncio.timeout)

    @staticmethod
    def call_later(loop: asyncio.AbstractEventLoop, delay: float,
                   callback: Callable[..., object], *args: Any) -> Timer:
        return loop.call_later(delay, callback, *args)

    @staticmethod
    def wait(block: Callable[[float | None], bool], timeout: float | None,
             since: float | None = None) -> bool:
        if since is not None and timeout is not None:
            timeout = max(since + timeout - time.monotonic(), 0.0)
        return block(timeout)

    @staticmethod
    def io_slice(timeout: float | None) -> float | None:
        return timeout

    def __repr__(self) -> str:
        return "REAL_CLOCK"


REAL_CLOCK: Clock = RealClock()
"""The default clock of every node, head, worker and bank."""

_NEVER = threading.Event()  # never set: waiting on it is sleeping


def sleep_blocking(clock: Clock, seconds: float) -> None:
    """``time.sleep`` on ``clock``, for a thread (a retry loop's pause)."""
    clock.wait(_NEVER.wait, seconds)


def queue_get(clock: Clock, get: Callable[..., Any], timeout: float | None) -> Any:
    """``queue.get(timeout=...)`` (pass the queue's ``get``) with ``timeout`` in ``clock``
    seconds; raises ``queue.Empty`` as ``get`` does."""
    got: list[Any] = []

    def block(t: float | None) -> bool:
        try:
            got.append(get(timeout=t) if t is None or t > 0 else get(False))
        except queue.Empty:
            return False
        return True

    if not clock.wait(block, None if timeout is None else max(0.0, timeout)):
        raise queue.Empty
    return got[0]


def wait_future(clock: Clock, fut: concurrent.futures.Future[Any], timeout: float | None) -> Any:
    """``fut.result(timeout)`` with ``timeout`` in ``clock`` seconds."""
    if timeout is not None and not clock.wait(
            lambda t: bool(concurrent.futures.wait([fut], t)[0]), timeout):
        raise TimeoutError(f"no result in {timeout} s")
    return fut.result()
