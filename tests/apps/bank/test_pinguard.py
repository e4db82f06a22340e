"""The PIN guard's line: attempts on one card are reserved in the order they came.

Pure tests of ``PinGuard`` (no I/O): the card's record is a variable the test sets.
They reproduce the race behind a flaky attack test: a right PIN sent after three
wrong ones overtook the third (which waited while the first was committed but not
yet released) and signed in on a card the three were about to lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from netlet.apps.bank import CardLocked
from netlet.apps.bank._pinguard import PinGuard, PinRow, Place, Ticket

NOW = 1_000_000.0


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()  # only makes futures here; never run
    yield loop
    loop.close()


class Card:
    def __init__(self) -> None:
        self.row: PinRow = ("open", "hash", 0, 0.0)

    def read(self) -> PinRow:
        return self.row

    def failed(self, n: int, locked_until: float = 0.0) -> None:
        self.row = ("open", "hash", n, locked_until)


def test_an_attempt_that_arrives_later_waits_behind_one_already_waiting(
        loop: asyncio.AbstractEventLoop) -> None:
    guard, card = PinGuard(3, 120), Card()
    first, second = (guard.begin_aio("a", card.read, NOW, loop) for _ in range(2))
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    card.failed(1)  # the first is committed, not yet released: it counts twice, so...
    third = guard.begin_aio("a", card.read, NOW, loop)
    assert isinstance(third, Place)  # ...the third waits
    guard.end(first)
    assert third.future is not None
    assert third.ready
    # The fourth comes before the third tried again: it must not go first.
    fourth = guard.begin_aio("a", card.read, NOW, loop)
    assert isinstance(fourth, Place), "a later attempt overtook one waiting in line"
    assert not fourth.ready
    got = guard.begin_aio("a", card.read, NOW, loop, third)
    assert isinstance(got, Ticket)
    assert fourth.ready  # the line moved up
    # Running: second and third, with one wrong PIN on record: the fourth waits on.
    assert isinstance(guard.begin_aio("a", card.read, NOW, loop, fourth), Place)
    card.failed(0, NOW + 120)  # second and third were wrong: locked
    guard.end(second)
    guard.end(got)
    with pytest.raises(CardLocked):
        guard.begin_aio("a", card.read, NOW, loop, fourth)
    with pytest.raises(CardLocked):  # and nobody is left in line
        guard.begin_aio("a", card.read, NOW, loop)


def test_one_that_gives_up_lets_the_next_move_up(loop: asyncio.AbstractEventLoop) -> None:
    guard, card = PinGuard(1, 120), Card()
    running = guard.begin_aio("a", card.read, NOW, loop)
    assert isinstance(running, Ticket)
    waiting = guard.begin_aio("a", card.read, NOW, loop)
    after = guard.begin_aio("a", card.read, NOW, loop)
    assert isinstance(waiting, Place)
    assert isinstance(after, Place)
    guard.leave(waiting)
    assert after.ready
    guard.end(running)
    assert isinstance(guard.begin_aio("a", card.read, NOW, loop, after), Ticket)


@pytest.mark.timeout(10)
def test_threads_wait_in_line_too() -> None:
    guard, card = PinGuard(1, 120), Card()
    running = guard.begin("a", card.read, NOW)
    order: list[int] = []
    started = [threading.Event() for _ in range(3)]

    def attempt(i: int) -> None:
        started[i].set()
        ticket = guard.begin("a", card.read, NOW)
        order.append(i)
        guard.end(ticket)

    threads = []
    for i in range(3):
        t = threading.Thread(target=attempt, args=(i,))
        t.start()
        threads.append(t)
        started[i].wait(5)
        # Wait until this thread stands in line before starting the next one.
        for _ in range(500):
            with guard._lock:
                line = guard._lines.get("a")
                if line is not None and len(line) == i + 1:
                    break
            threading.Event().wait(0.01)
    guard.end(running)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2]
