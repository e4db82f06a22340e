"""A stop signal never deadlocks its own handler (netlet.cli._signals).

The handler runs on the main thread, possibly while that thread holds the lock
``Event.set`` needs (inside ``Event.wait``). Reproduced here by calling the
handler with the event's lock held, as the interpreter could: the old
``lambda *_: stop.set()`` then waited on itself for ever.
"""

from __future__ import annotations

import threading

import pytest

from netlet.cli._signals import set_on_signal


@pytest.mark.timeout(10)
def test_the_handler_returns_while_the_main_thread_holds_the_events_lock() -> None:
    stop = threading.Event()
    handler = set_on_signal(stop)
    returned = threading.Event()

    def as_the_interpreter_would() -> None:
        with stop._cond:
            handler(2, None)
            returned.set()

    t = threading.Thread(target=as_the_interpreter_would, daemon=True)
    t.start()
    assert returned.wait(5), "the signal handler deadlocked on the event's own lock"
    assert stop.wait(5)  # and the event is set once the lock is free
    t.join(5)


@pytest.mark.timeout(10)
def test_a_plain_set_in_the_handler_would_deadlock() -> None:
    """The control: with the event's lock held, the lock ``set()`` takes is not free."""
    stop = threading.Event()
    blocked = threading.Event()

    def direct() -> None:
        with stop._cond:
            lock = stop._cond._lock  # type: ignore[attr-defined]
            if lock.acquire(timeout=0.5):  # set() would wait here without a timeout
                lock.release()
            else:
                blocked.set()

    t = threading.Thread(target=direct, daemon=True)
    t.start()
    t.join(5)
    assert blocked.is_set(), "the event's lock is reentrant: the test above proves nothing"
