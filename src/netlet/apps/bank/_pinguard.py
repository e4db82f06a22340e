"""The PIN lockout's gate: an attempt is counted before its PIN is checked.

Three wrong PINs lock a card. The ledger keeps the count and the lock, but a
burst of sign-ins that all read "not locked" before any of them is recorded
would each get its PIN checked (hundreds of guesses per lock window). So every
attempt first takes a *reservation* here, atomically with reading the card's
record: it is refused (CardLocked) when the card is locked, and it waits while the
wrong PINs on record plus the attempts still being checked reach the limit.
A reservation is released only once its result is committed, so at most
``max_attempts`` PINs are ever checked per lock window, however many arrive.
Attempts that wait stand in a line per card and are reserved in the order they
came, so a later one never overtakes an earlier one (see ``Place``).

An unknown (or closed) account is a *ghost*: its attempts are checked against
a dummy hash of the default cost and counted in memory like a real card's, so
it gets the same answers (WrongPin, then CardLocked) in about the same time,
and a caller cannot tell which accounts exist.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from netlet.apps.bank._commands import BankError, CardLocked, WrongPin
from netlet.apps.bank._pins import DEFAULT_SCRYPT_N, hash_pin, verify_pin
from netlet.clock import Waiter

__all__ = ["PIN_THREADS", "PinGuard", "PinRow", "Place", "Ticket", "next_pin_state"]

PIN_THREADS = 32
"""Threads that check slow PINs (and, on PostgreSQL, whole attempts) at once, per ledger."""

_MAX_GHOSTS = 10_000

PinRow = tuple[str, str, int, float] | None
"""``(status, pin_hash, failed_pins, locked_until)`` of an account, or None if unknown."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """One reserved attempt: the hash to check it against and what it may skip."""

    account: str
    pin_hash: str
    ghost: bool
    clean: bool  # no wrong PIN or lock on record and no other attempt running
    generation: int


def next_pin_state(account: str, failed: int, locked_until: float, good: bool, now: float,
                   max_attempts: int, lock_seconds: float
                   ) -> tuple[int, float, BankError | None]:
    """The card's ``(failed, locked_until)`` after one attempt, and its refusal if any."""
    if locked_until > now:
        return failed, locked_until, CardLocked(account, locked_until - now)
    failed = 0 if good or locked_until else failed  # an expired lock starts afresh
    failed += 0 if good else 1
    if failed >= max_attempts:
        return 0, now + lock_seconds, CardLocked(account, lock_seconds)
    return failed, 0.0, None if good else WrongPin(account, max_attempts - failed)


class Place:
    """A place in a card's line of attempts waiting to be reserved (first come, first served).

    Without a line, an attempt that arrives while others wait could be reserved
    first: a right PIN sent after three wrong ones could then be checked before the
    third, and sign in on a card those three were about to lock.
    """

    __slots__ = ("account", "future", "loop", "ready")

    def __init__(self, account: str, loop: asyncio.AbstractEventLoop | None) -> None:
        self.account = account
        self.loop = loop  # None: a thread waits on the guard's condition
        self.future: Waiter | None = None
        """A task's: completed when the attempt may try again (``await future.result_aio()``)."""
        self.ready = False

    def arm(self) -> Waiter:
        assert self.loop is not None
        self.ready = False
        self.future = Waiter(self.loop)
        return self.future

    def wake(self) -> None:
        """Let this attempt try again (the guard's lock is held)."""
        self.ready = True
        if self.future is not None:
            self.future(True, None)


def _verify(pin: str, pin_hash: str) -> bool:
    try:
        return verify_pin(pin, pin_hash)
    except ValueError:
        return False


class PinGuard:
    """Reservations of PIN attempts per account, and the ghosts' counts; thread-safe."""

    def __init__(self, max_attempts: int, lock_seconds: float) -> None:
        self.max_attempts, self.lock_seconds = max_attempts, lock_seconds
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._lines: dict[str, deque[Place]] = {}  # attempts waiting, per card, in order
        self._pending: dict[str, list[int]] = {}  # account -> [attempts running, generation]
        self._ghosts: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._dummy: str | None = None
        self.checks = 0
        """PIN hashes checked so far (dummy ones included)."""

    def begin(self, account: str, read: Callable[[], PinRow], now: float) -> Ticket:
        """Reserve an attempt on ``account``, waiting (in line) while the limit is taken by
        attempts still being checked; CardLocked if the card is locked.

        ``read`` gives the card's record; it is called under this guard's lock, so no
        result can be committed between the read and the reservation.
        """
        with self._cond:
            place: Place | None = None
            while True:
                got = self._take(account, read, now, place, None)
                if isinstance(got, Ticket):
                    return got
                place = got
                place.ready = False
                while not place.ready:
                    self._cond.wait()

    def begin_aio(self, account: str, read: Callable[[], PinRow], now: float,
                    loop: asyncio.AbstractEventLoop, place: Place | None = None
                    ) -> Ticket | Place:
        """:meth:`begin` for a task: a ticket, or a place in line whose ``future`` to await
        before calling again with that place (or :meth:`leave` if the task gives up)."""
        with self._cond:
            got = self._take(account, read, now, place, loop)
            if isinstance(got, Place):
                got.arm()
            return got

    def leave(self, place: Place) -> None:
        """An attempt waiting in line gives up (cancelled): the next one moves up."""
        with self._cond:
            self._step_out(place)

    def _take(self, account: str, read: Callable[[], PinRow], now: float,
              place: Place | None, loop: asyncio.AbstractEventLoop | None) -> Ticket | Place:
        """A ticket if nobody waits ahead of ``place`` and the limit allows; else the
        place in line (new at its end, or kept)."""
        line = self._lines.get(account)
        if not line or line[0] is place:
            try:
                ticket = self._try_begin(account, read, now)
            except BaseException:
                if place is not None:
                    self._step_out(place)
                raise
            if ticket is not None:
                if place is not None:
                    self._step_out(place)
                return ticket
        if place is None:
            place = Place(account, loop)
            self._lines.setdefault(account, deque()).append(place)
        return place

    def _step_out(self, place: Place) -> None:
        """Take ``place`` out of its line; the attempt now first may try (lock held)."""
        line = self._lines.get(place.account)
        if line is None or place not in line:
            return
        first = line[0] is place
        line.remove(place)
        if not line:
            del self._lines[place.account]
        elif first:
            line[0].wake()
            self._cond.notify_all()

    def _try_begin(self, account: str, read: Callable[[], PinRow], now: float) -> Ticket | None:
        row = read()
        ghost = row is None or row[0] != "open"
        if ghost:
            failed, locked_until = self._ghosts.get(account, (0, 0.0))
            pin_hash = self._dummy_hash()
        else:
            assert row is not None
            _, pin_hash, failed, locked_until = row
        if locked_until > now:
            raise CardLocked(account, locked_until - now)
        if locked_until:
            failed = 0
        entry = self._pending.get(account)
        running = 0 if entry is None else entry[0]
        if failed + running >= self.max_attempts:
            return None  # wait: the attempts being checked may lock the card
        if entry is None:
            entry = self._pending[account] = [0, 0]
        entry[0] += 1
        entry[1] += 1
        clean = not ghost and failed == 0 and locked_until == 0 and entry[0] == 1
        return Ticket(account, pin_hash, ghost, clean, entry[1])

    def verify(self, ticket: Ticket, pin: str) -> bool:
        """Check ``pin`` (slow on purpose); a ghost's check is never good."""
        with self._lock:
            self.checks += 1
        good = _verify(pin, ticket.pin_hash)
        return good and not ticket.ghost

    def alone(self, ticket: Ticket) -> bool:
        """Whether a right PIN may sign in without recording anything: the card was clean
        and no other attempt started since."""
        with self._lock:
            entry = self._pending.get(ticket.account)
            return ticket.clean and entry is not None and entry[1] == ticket.generation

    def end(self, ticket: Ticket) -> None:
        """Release the reservation (after its result, if any, was committed); the first
        attempt in the card's line may try again."""
        with self._cond:
            entry = self._pending.get(ticket.account)
            if entry is not None:
                entry[0] -= 1
                if entry[0] <= 0:
                    del self._pending[ticket.account]
            line = self._lines.get(ticket.account)
            if line:
                line[0].wake()
                self._cond.notify_all()

    def record_ghost(self, ticket: Ticket, now: float) -> BankError:
        """Count a ghost's attempt as a wrong PIN; its answer, as a real card's would be."""
        with self._lock:
            failed, locked_until = self._ghosts.pop(ticket.account, (0, 0.0))
            failed, locked_until, error = next_pin_state(
                ticket.account, failed, locked_until, False, now, self.max_attempts,
                self.lock_seconds)
            self._ghosts[ticket.account] = (failed, locked_until)
            while len(self._ghosts) > _MAX_GHOSTS:
                self._ghosts.popitem(last=False)
        assert error is not None
        return error

    def _dummy_hash(self) -> str:
        if self._dummy is None:  # once, under the lock: about 30 ms
            self._dummy = hash_pin(f"{secrets.randbelow(10**12):012d}", n=DEFAULT_SCRYPT_N)
        return self._dummy
