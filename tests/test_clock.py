"""netlet.clock: the real clock is the system's, the virtual one moves only when told.

The virtual clock's promise is exactness: a timer due at ``t`` fires in the
``advance`` that reaches ``t``, never in one that stops short of it, for asyncio
code on another thread's loop, for asyncio code on the caller's own loop, and
for threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Iterator

import pytest

from netlet.clock import (
    REAL_CLOCK,
    Backoff,
    Clock,
    RealClock,
    VirtualClock,
    queue_get,
    sleep_blocking,
    wait_future,
)
from netlet.testing import VirtualClock as PublicVirtualClock
from tests._support import wait_until


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop on a thread of its own, as a node's."""
    lp = asyncio.new_event_loop()
    thread = threading.Thread(target=lp.run_forever, daemon=True)
    thread.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    thread.join(10)
    lp.close()


def test_both_clocks_are_clocks_and_testing_exports_the_virtual_one() -> None:
    assert isinstance(REAL_CLOCK, Clock)
    assert isinstance(RealClock(), Clock)
    assert isinstance(VirtualClock(), Clock)
    assert PublicVirtualClock is VirtualClock


def test_the_real_clock_is_the_systems() -> None:
    assert abs(REAL_CLOCK.monotonic() - time.monotonic()) < 1.0
    assert abs(REAL_CLOCK.time() - time.time()) < 1.0
    assert REAL_CLOCK.io_slice(3.0) == 3.0
    assert REAL_CLOCK.wait(lambda t: t == 2.5, 2.5)  # the timeout goes straight through
    seen: list[float | None] = []

    def look(t: float | None) -> bool:
        seen.append(t)
        return False

    since = time.monotonic() - 10.0  # ten seconds ago: 2.5 s from then is already past
    assert not REAL_CLOCK.wait(look, 2.5, since)
    assert seen == [0.0]
    assert not REAL_CLOCK.wait(look, 2.5, time.monotonic())
    assert seen[1] is not None
    assert 2.0 < seen[1] <= 2.5


def test_virtual_time_moves_only_when_advanced() -> None:
    clock = VirtualClock(start=10.0, wall=1000.0)
    assert (clock.monotonic(), clock.time()) == (10.0, 1000.0)
    clock.advance(2.5)
    assert (clock.monotonic(), clock.time()) == (12.5, 1002.5)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


@pytest.mark.timeout(20)
def test_a_sleep_on_another_loop_ends_exactly_when_due(loop: asyncio.AbstractEventLoop) -> None:
    clock = VirtualClock()
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(1.0)
        woke.append(clock.monotonic())

    fut = asyncio.run_coroutine_threadsafe(sleeper(), loop)
    wait_until(lambda: clock.pending == 1, what="the sleep to be armed")
    clock.advance(0.75)
    assert woke == []
    clock.advance(0.25)  # advance returns once the woken task has run
    assert woke == [1001.0]
    fut.result(5)
    assert clock.pending == 0


@pytest.mark.timeout(20)
def test_call_later_fires_in_deadline_order_and_cancel_holds(
        loop: asyncio.AbstractEventLoop) -> None:
    clock = VirtualClock()
    fired: list[str] = []
    clock.call_later(loop, 2.0, fired.append, "b")
    clock.call_later(loop, 1.0, fired.append, "a")
    cancelled = clock.call_later(loop, 1.5, fired.append, "never")
    cancelled.cancel()
    clock.advance(1.0)
    assert fired == ["a"]
    clock.advance(5.0)
    assert fired == ["a", "b"]
    assert clock.next_deadline() is None


@pytest.mark.timeout(20)
def test_a_timeout_block_expires_exactly_when_due(loop: asyncio.AbstractEventLoop) -> None:
    clock = VirtualClock()
    outcome: list[str] = []

    async def guarded() -> None:
        try:
            async with clock.timeout(3.0):
                await asyncio.Event().wait()
        except TimeoutError:
            outcome.append("timed out")

    fut = asyncio.run_coroutine_threadsafe(guarded(), loop)
    wait_until(lambda: clock.pending == 1, what="the timeout to be armed")
    clock.advance(2.75)
    assert outcome == []
    clock.advance(0.25)
    fut.result(5)
    assert outcome == ["timed out"]


@pytest.mark.timeout(20)
def test_a_timeout_left_in_time_fires_nothing(loop: asyncio.AbstractEventLoop) -> None:
    clock = VirtualClock()

    async def quick() -> str:
        async with clock.timeout(1.0):
            await asyncio.sleep(0)
        return "done"

    assert asyncio.run_coroutine_threadsafe(quick(), loop).result(5) == "done"
    clock.advance(10)  # the cancelled timer does not touch the finished block


def test_advance_async_on_the_callers_own_loop() -> None:
    clock = VirtualClock()

    async def main() -> list[float]:
        woke: list[float] = []

        async def sleeper() -> None:
            await clock.sleep(0.5)
            woke.append(clock.monotonic())

        task = asyncio.get_running_loop().create_task(sleeper())
        await asyncio.sleep(0)
        await clock.advance_aio(0.25)
        assert woke == []
        await clock.advance_aio(0.25)
        await task
        return woke

    assert asyncio.run(main()) == [1000.5]


@pytest.mark.timeout(20)
def test_a_thread_wait_ends_exactly_when_due() -> None:
    clock = VirtualClock()
    event = threading.Event()
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(clock.wait(event.wait, 2.0)))
    thread.start()
    wait_until(lambda: clock.pending == 1, what="the thread to wait")
    clock.advance(1.5)
    assert results == []
    clock.advance(0.5)  # returns once the thread saw it
    assert results == [False]
    thread.join(5)


@pytest.mark.timeout(20)
def test_a_thread_wait_counts_from_since_when_given() -> None:
    # Time that moved after ``since`` (before the thread got to wait) counts.
    clock = VirtualClock()
    since = clock.monotonic()
    clock.advance(1.5)
    event = threading.Event()
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(clock.wait(event.wait, 2.0, since)))
    thread.start()
    wait_until(lambda: clock.pending == 1, what="the thread to wait")
    assert clock.next_deadline() == since + 2.0
    clock.advance(0.5)  # two seconds after ``since``
    assert results == [False]
    thread.join(5)
    clock.advance(5.0)  # already past: it only looks, and arms nothing
    assert clock.wait(lambda t: t == 0, 2.0, since) is True
    assert clock.pending == 0


@pytest.mark.timeout(20)
def test_a_thread_wait_ends_early_when_its_event_comes() -> None:
    clock = VirtualClock()
    event = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(clock.wait, event.wait, 60.0)
        event.set()
        assert waiting.result(5) is True
    assert clock.pending == 0  # its timer went with it


@pytest.mark.timeout(20)
def test_thread_helpers_follow_the_virtual_clock() -> None:
    clock = VirtualClock()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        slept = pool.submit(sleep_blocking, clock, 5.0)
        q: queue.SimpleQueue[int] = queue.SimpleQueue()
        got = pool.submit(queue_get, clock, q.get, 5.0)
        never: concurrent.futures.Future[int] = concurrent.futures.Future()
        result = pool.submit(wait_future, clock, never, 5.0)
        wait_until(lambda: clock.pending == 3, what="three waits")
        clock.advance(4.0)
        assert [slept.done(), got.done(), result.done()] == [False, False, False]
        clock.advance(1.0)
        slept.result(5)
        with pytest.raises(queue.Empty):
            got.result(5)
        with pytest.raises(TimeoutError):
            result.result(5)
    q.put(7)
    assert queue_get(clock, q.get, 0) == 7


def test_io_slice_bounds_a_blocking_read_by_the_poll() -> None:
    clock = VirtualClock(io_poll=0.01)
    assert clock.io_slice(None) is None
    assert clock.io_slice(30.0) == 0.01
    assert clock.io_slice(0.001) == 0.001


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.05, 0.3)
    assert [b.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    b.reset()
    assert b.next() == 0.05
    with pytest.raises(ValueError, match="first <= cap"):
        Backoff(1.0, 0.5)


def test_a_node_and_its_transport_share_one_clock() -> None:
    from netlet import NodeConfig, TransportConfig
    from netlet.errors import ConfigError
    from netlet.node._config import make_config

    a, b = VirtualClock(), VirtualClock()
    assert NodeConfig().clock is REAL_CLOCK
    assert NodeConfig(clock=a).transport.clock is a
    assert NodeConfig(transport=TransportConfig(clock=a)).clock is a
    assert make_config(NodeConfig(clock=a), {"clock": b}).transport.clock is b
    with pytest.raises(ConfigError, match="give the clock once"):
        NodeConfig(clock=a, transport=TransportConfig(clock=b))
