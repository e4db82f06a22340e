"""An event loop whose time is virtual and jumps: the simulation's whole world runs on it.

Every node of a simulation (head, workers, clients) starts on one ``SimLoop``
(``Node(start=False)`` then ``await node.astart()``) and reads its time from a
``SimClock`` over it. The loop never sleeps: when nothing is ready to run, its
clock jumps to the next armed timer, as if the machine had waited for it. So a
run that covers minutes of heartbeats and timeouts takes a fraction of a second,
and, because nothing runs on another thread and every random choice is drawn from
one seed, the same seed gives the same run, event for event.

Work asyncio would hand to a thread (``asyncio.to_thread``, ``run_in_executor``)
runs inline instead, at once: it is short in a simulation, and a thread would
finish at a real moment the virtual clock cannot order. Work that still runs on a
thread of its own and wakes the loop when done (``call_soon_threadsafe`` from
another thread) would make a run differ from its replay, so the loop counts
each such wake-up in ``foreign_wakeups``, and a simulation reports it. A loop
with nothing ready and no timer armed can never move again: ``select`` raises
``Stalled`` then, rather than hanging.
"""

from __future__ import annotations

import asyncio
import contextvars
import selectors
import threading
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple, Unpack

from netlet.clock import RealClock

__all__ = ["Livelock", "SimClock", "SimLoop", "Stalled"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Stalled(RuntimeError):
    """Nothing is ready and no timer is armed: the simulated world stopped for ever."""


class Livelock(Stalled):
    """The loop kept running callbacks without time ever moving on: a busy loop."""


_SPINS = 2_000_000
"""Loop turns at one instant before it counts as a busy loop (a burst of thousands of
frames at one instant takes a few per frame)."""


class _JumpSelector(selectors.DefaultSelector):
    """A real selector (asyncio's self-pipe lives in it) that jumps time instead of waiting."""

    def __init__(self, spins: int) -> None:
        super().__init__()
        self.now = 0.0
        self._spins = 0
        self._limit = spins

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        events: list[tuple[Any, int]] = super().select(0)
        if events or timeout == 0:
            self._spins += 1
            if self._spins > self._limit:
                raise Livelock(f"{self._limit:,} turns of the loop at t={self.now:.6f} "
                               "without time moving on: something loops without waiting")
            return events
        if timeout is None:
            raise Stalled("nothing is ready to run and no timer is armed")
        self._spins = 0
        self.now += timeout
        return events


class SimLoop(asyncio.SelectorEventLoop):
    """``asyncio``'s selector loop on virtual time; see the module docstring."""

    def __init__(self, start: float = 1000.0, *, spins: int = _SPINS) -> None:
        self._jump = _JumpSelector(spins)
        self._jump.now = start
        self._owner = threading.get_ident()
        self.foreign_wakeups: list[str] = []
        """What threads other than the loop's scheduled on it (see the module docstring)."""
        super().__init__(self._jump)

    def time(self) -> float:
        return float(self._jump.now)

    def jump(self, seconds: float) -> None:
        """Time leaps ``seconds`` ahead (a paused machine resuming): timers due fire next."""
        if seconds < 0:
            raise ValueError("monotonic time never goes back")
        self._jump.now += seconds

    def run_in_executor(self, executor: Any, func: Callable[..., T],  # type: ignore[override]
                        *args: Any) -> asyncio.Future[T]:
        """Run ``func`` here and now (no thread in a simulation); its outcome is the future's."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as e:  # the caller's await raises it, as with a thread
            future.set_exception(e)
        return future

    def call_soon_threadsafe(self, callback: Callable[[Unpack[Ts]], object],
                             *args: *Ts,
                             context: contextvars.Context | None = None) -> asyncio.Handle:
        if threading.get_ident() != self._owner:
            self.foreign_wakeups.append(f"{getattr(callback, '__qualname__', callback)} "
                                        f"from thread {threading.current_thread().name}")
        return super().call_soon_threadsafe(callback, *args, context=context)

    def _write_to_self(self) -> None:
        """No thread can be waiting for this loop, so a wake-up byte is never needed."""


class SimClock(RealClock):
    """The ``netlet.clock.Clock`` of a simulation: the time of the ``SimLoop`` it runs on.

    Its timers are the loop's own (``RealClock``'s, on virtual time). ``time()``
    (wall time) can be moved apart from ``monotonic()`` to simulate a wall clock
    stepped by NTP or by hand: ``step_wall(seconds)``, either way.
    """

    __slots__ = ("_loop", "_offset")

    def __init__(self, loop: SimLoop, wall: float = 1_700_000_000.0) -> None:
        self._loop = loop
        self._offset = wall - loop.time()

    def monotonic(self) -> float:
        return self._loop.time()

    def time(self) -> float:
        return self._loop.time() + self._offset

    def step_wall(self, seconds: float) -> None:
        self._offset += seconds

    def wait(self, block: Callable[[float | None], bool],  # type: ignore[override]
             timeout: float | None, since: float | None = None) -> bool:
        """A thread would wait here; a simulation has none, so only look."""
        return block(0)

    def __repr__(self) -> str:
        return f"<SimClock at {self._loop.time():.6f}>"

