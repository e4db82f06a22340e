"""The ledger's PIN attempts: three wrong PINs lock a card, however many arrive at once.

On SQLite the reservations are ``_pinguard``'s, in this process's memory, and
each attempt's result is recorded by the writer in commit order. On PostgreSQL
several front-ends share the cards, so the whole attempt is decided in the
database (the store's ``pins``, see ``_pgpins``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

from netlet.apps.bank._commands import LedgerClosed
from netlet.apps.bank._pinguard import PIN_THREADS, PinGuard, PinRow, Place, Ticket, next_pin_state
from netlet.apps.bank._pins import pin_check_is_cheap
from netlet.apps.bank._records import Conn
from netlet.apps.bank._store import Store
from netlet.clock import Clock, Waiter

__all__ = ["LedgerPins"]

_Done = tuple[Any, BaseException | None]
_Job = Callable[[Conn, float], _Done]


class LedgerPins:
    """The PIN half of :class:`~netlet.apps.bank._ledger.Ledger` (which sets these up)."""

    _store: Store
    _pins: PinGuard
    _pin_threads: ThreadPoolExecutor | None
    _lock: threading.Lock
    _closed: bool
    _after_commit: list[Callable[[], None]]
    _max_pin_attempts: int
    _lock_seconds: float
    _clock: Clock

    def _closed_error(self) -> LedgerClosed:
        raise NotImplementedError

    def _wait_job(self, waiter: Waiter) -> Any:
        raise NotImplementedError

    def _enqueue(self, job: _Job, waiter: Waiter, is_command: bool) -> None:
        raise NotImplementedError

    def _reader(self) -> AbstractContextManager[Conn]:
        raise NotImplementedError

    # -- PINs -----------------------------------------------------------------

    def check_pin(self, account: str, pin: str, now: float | None = None) -> bool:
        """True if ``pin`` is right; else WrongPin, or CardLocked after too many wrong ones.

        An unknown or closed account answers as a card with a wrong PIN would (see
        ``_pinguard``), in about the same time.
        """
        now = self._clock.time() if now is None else now
        gate = self._store.pins
        if gate is not None:  # decided in the database, shared by every front-end
            if self._closed:
                raise self._closed_error()
            return gate.check(account, pin, now)
        ticket = self._pins.begin(account, lambda: self._pin_row(account), now)
        try:
            good = self._pins.verify(ticket, pin)  # slow on purpose: outside the writer
        except BaseException:
            self._pins.end(ticket)
            raise
        waiter = self._settle_attempt(ticket, good, now, None)
        if waiter is None:
            return True
        recorded: bool = self._wait_job(waiter)
        return recorded

    async def check_pin_aio(self, account: str, pin: str, now: float | None = None) -> bool:
        """``check_pin`` for a task on an event loop.

        A costly hash (the default, tens of milliseconds) is checked on a worker
        thread; a cheap one (``pin_check_is_cheap``: scrypt over at most 64 KiB,
        tens of microseconds, as the swarm's synthetic accounts use) right here,
        which costs less than the hand-off. A wrong PIN is recorded by the writer.
        On PostgreSQL the whole attempt runs on a worker thread: it waits for the
        database.
        """
        now = self._clock.time() if now is None else now
        loop = asyncio.get_running_loop()
        if self._store.pins is not None:
            with self._lock:
                if self._closed:
                    raise self._closed_error()
                if self._pin_threads is None:
                    self._pin_threads = ThreadPoolExecutor(PIN_THREADS, "netlet-ledger-pins")
                threads = self._pin_threads
            ok: bool = await loop.run_in_executor(threads, self.check_pin, account, pin, now)
            return ok
        place: Place | None = None
        while True:
            got = self._pins.begin_aio(account, lambda: self._pin_row(account), now, loop,
                                       place)
            if isinstance(got, Ticket):
                ticket = got
                break
            place = got
            assert place.future is not None
            try:
                await place.future.result_aio()  # attempts ahead of this one, or being checked
            except BaseException:
                self._pins.leave(place)
                raise
        try:
            if pin_check_is_cheap(ticket.pin_hash):
                good = self._pins.verify(ticket, pin)
            else:
                good = await loop.run_in_executor(None, self._pins.verify, ticket, pin)
        except BaseException:
            self._pins.end(ticket)
            raise
        waiter = self._settle_attempt(ticket, good, now, loop)
        if waiter is None:
            return True
        recorded: bool = await waiter.result_aio()
        return recorded

    def _settle_attempt(self, ticket: Ticket, good: bool, now: float,
                        loop: asyncio.AbstractEventLoop | None) -> Waiter | None:
        """What ``check_pin`` and ``check_pin_aio`` share once the PIN is checked: a right
        one on a clean card, alone, records nothing (None; its reservation ends here);
        any other attempt is queued to the writer, which ends the reservation after the
        commit: the waiter (for a thread, or a task on ``loop``) of that record."""
        if good and self._pins.alone(ticket):
            self._pins.end(ticket)
            return None
        waiter = Waiter(loop)
        try:
            self._enqueue(self._pin_job(ticket, good, now), waiter, False)
        except BaseException:  # never queued (LedgerClosed)
            self._pins.end(ticket)
            raise
        return waiter

    def _pin_row(self, account: str) -> PinRow:
        with self._reader() as conn:
            row = conn.execute(
                "SELECT status, pin_hash, failed_pins, locked_until FROM accounts"
                " WHERE account=? AND status != 'system'",
                (account,),
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def _pin_job(self, ticket: Ticket, good: bool, now: float) -> _Job:
        """Record one attempt in commit order; its reservation ends once that is committed."""

        def record(conn: Conn, _now: float) -> _Done:
            self._after_commit.append(lambda: self._pins.end(ticket))
            if ticket.ghost:
                return None, self._pins.record_ghost(ticket, now)
            return self._record_pin(conn, ticket.account, good, now)

        return record

    def _record_pin(self, conn: Conn, account: str, good: bool, now: float) -> _Done:
        row = conn.execute(
            "SELECT failed_pins, locked_until FROM accounts WHERE account=?", (account,)
        ).fetchone()
        failed, locked_until, error = next_pin_state(
            account, row[0], row[1], good, now, self._max_pin_attempts, self._lock_seconds)
        if (failed, locked_until) != (row[0], row[1]):
            conn.execute("UPDATE accounts SET failed_pins=?, locked_until=? WHERE account=?",
                         (failed, locked_until, account))
        return (None, error) if error else (True, None)
