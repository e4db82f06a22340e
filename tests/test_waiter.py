"""netlet.clock.Waiter: the one primitive that wakes a thread or a task, once.

Its promises: exactly one of the parties that race to complete it (or to
withdraw it on a timeout) wins; a thread and a task on any loop are woken
from any thread; a task that stops waiting (cancelled) leaves the waiter's
outcome readable; and ``wake_all`` wakes a loop's tasks with one hand-off.
Each test takes well under a second.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from netlet.clock import Waiter, wake_all
from tests._support import STEP

pytestmark = pytest.mark.timeout(30)


def test_a_thread_is_woken_from_another_thread_with_the_value() -> None:
    waiter = Waiter()
    threading.Thread(target=waiter, args=(True, 42)).start()
    assert waiter.wait_or_withdraw(STEP)
    assert waiter.result() == 42


def test_an_error_outcome_is_raised_by_result() -> None:
    waiter = Waiter()
    waiter(False, KeyError("k"))
    assert waiter.wait(0)
    with pytest.raises(KeyError):
        waiter.result()


def test_only_the_first_completion_counts() -> None:
    waiter = Waiter()
    waiter(True, 1)
    waiter(True, 2)  # claimed already: skipped, never a second release
    assert waiter.wait(0)
    assert waiter.result() == 1
    assert not waiter.wait(0)


def test_a_timeout_withdraws_it_and_a_late_completer_cannot_claim() -> None:
    waiter = Waiter()
    assert not waiter.wait_or_withdraw(0.01)
    assert waiter.claimed
    assert not waiter.claim()  # the completer that comes late skips it
    waiter(True, "late")  # and so does a call's outcome
    assert waiter.value is None


def test_a_completer_that_claimed_before_the_timeout_wins() -> None:
    waiter = Waiter()
    assert waiter.claim()  # a peer claimed it; its completion follows a moment later
    timer = threading.Timer(0.05, waiter.complete, (3, "won"))
    timer.start()
    assert waiter.wait_or_withdraw(0)  # the timeout passed, but the peer won: waited for
    assert (waiter.index, waiter.value) == (3, "won")
    timer.join()


@pytest.mark.parametrize("timeout", [None, STEP])
def test_a_task_is_woken_from_another_thread(timeout: float | None) -> None:
    async def main() -> Any:
        waiter = Waiter(asyncio.get_running_loop())
        threading.Thread(target=waiter, args=(True, "hi")).start()
        assert await waiter.wait_or_withdraw_aio(timeout)
        return waiter.result()

    assert asyncio.run(main()) == "hi"


def test_a_task_is_woken_on_its_own_loop_and_withdraws_on_timeout() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiter = Waiter(loop)
        loop.call_soon(waiter, True, 7)  # completed on the loop's own thread
        assert await waiter.result_aio() == 7
        late, now = Waiter(loop), Waiter(loop)
        assert not await late.wait_or_withdraw_aio(0.01)
        assert not late.claim()
        assert not await now.wait_or_withdraw_aio(0)  # zero: looks, does not wait
        assert now.claimed

    asyncio.run(main())


def test_a_cancelled_task_leaves_the_outcome_readable() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiter = Waiter(loop)
        task = loop.create_task(waiter.wait_aio(None))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        done = threading.Thread(target=waiter, args=(True, "kept"))
        done.start()  # completing a waiter whose task gave up raises nowhere
        done.join()
        await asyncio.sleep(0)
        assert waiter.value == "kept"

    asyncio.run(main())


def test_a_closed_loop_is_not_an_error_for_a_calls_outcome() -> None:
    loop = asyncio.new_event_loop()
    waiter = Waiter(loop)
    loop.close()
    waiter(True, 1)  # nobody waits there any more: dropped, no RuntimeError
    assert waiter.claimed
    other_loop = asyncio.new_event_loop()
    other = Waiter(other_loop)
    other_loop.close()
    with pytest.raises(RuntimeError):  # complete() itself tells (a channel's sender must know)
        other.complete(0)


def test_wake_all_hands_each_loop_its_tasks_in_one_call() -> None:
    loop = asyncio.new_event_loop()
    handoffs: list[Any] = []
    real = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        handoffs.append(callback)
        return real(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        tasks = [Waiter(loop) for _ in range(5)]
        thread, taken = Waiter(), Waiter(loop)
        assert taken.claim()  # someone else's already: skipped
        wake_all([(w, i, None) for i, w in enumerate(tasks)]
                 + [(thread, "t", None), (taken, "x", None)])
        assert len(handoffs) == 1
        assert thread.wait(0)
        assert thread.result() == "t"

        async def results() -> list[Any]:
            return [await w.result_aio() for w in tasks]

        assert loop.run_until_complete(results()) == list(range(5))
        assert taken.value is None
    finally:
        loop.close()
