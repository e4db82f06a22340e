"""PIN attempts decided in PostgreSQL, so the lockout holds across every front-end.

The same rule as ``_pinguard``, with the database as the only memory: an
attempt first *reserves* a row in ``pin_attempts``, in a transaction that
holds the card's row lock (``SELECT ... FOR UPDATE``) while it reads the card's
count and lock and counts the reservations still running; it is refused
(CardLocked) when the card is locked, and waits (polling) while wrong PINs on
record plus running reservations reach the limit. Only then is the PIN checked
(slow on purpose, outside any transaction), and the result is recorded, and the
reservation deleted, in one more transaction under the same row lock. So at
most ``max_attempts`` PINs are checked per lock window, however many arrive at
however many front-ends.

A reservation carries an expiry: one whose front-end died while checking frees
its place after ``RESERVATION_SECONDS``. Unknown (and closed) accounts are
*ghosts* counted in ``pin_ghosts`` like real cards, so sign-in does not tell
which accounts exist; ghost rows older than a day are pruned as new ones come.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from netlet.apps.bank._commands import CardLocked
from netlet.apps.bank._pinguard import PIN_THREADS, next_pin_state
from netlet.apps.bank._pins import DEFAULT_SCRYPT_N, hash_pin, verify_pin
from netlet.apps.bank._records import Conn
from netlet.clock import Backoff

__all__ = ["RESERVATION_SECONDS", "PgPinGate"]

RESERVATION_SECONDS = 60.0
"""How long a reservation holds its place if its front-end never records a result."""
_GHOST_DAYS = 86_400.0


@dataclass(frozen=True, slots=True)
class _Reservation:
    id: int
    account: str
    pin_hash: str
    ghost: bool


def _verify(pin: str, pin_hash: str) -> bool:
    try:
        return verify_pin(pin, pin_hash)
    except ValueError:
        return False


class PgPinGate:
    """The PIN lockout over a pool of connections of its own; thread-safe."""

    def __init__(self, connect: Callable[[], Conn], max_attempts: int, lock_seconds: float,
                 broken: Callable[[Conn], bool]) -> None:
        self._connect, self._broken = connect, broken
        self.max_attempts, self.lock_seconds = max_attempts, lock_seconds
        self._lock = threading.Lock()
        self._pool: list[Conn] = []
        self._dummy: str | None = None
        self._closed = False
        self.checks = 0
        """PIN hashes checked by this front-end (dummy ones included)."""

    @contextmanager
    def _conn(self) -> Iterator[Conn]:
        with self._lock:
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            try:
                if not self._broken(conn) and conn.in_transaction:
                    conn.execute("ROLLBACK")
            except Exception:
                conn.close()
                raise
            raise
        finally:
            if self._broken(conn):
                conn.close()
            elif not conn.in_transaction:
                with self._lock:
                    # One for each PIN thread (``_ledgerpins``): none opened twice.
                    keep = not self._closed and len(self._pool) < PIN_THREADS
                    if keep:
                        self._pool.append(conn)
                if not keep:
                    conn.close()

    def check(self, account: str, pin: str, now: float) -> bool:
        """True for the right PIN; else WrongPin, or CardLocked (see the module docstring)."""
        backoff = Backoff(0.002, 0.1)
        while (ticket := self._reserve(account, now)) is None:
            time.sleep(backoff.next())  # other attempts on this card are checked, somewhere
        try:
            with self._lock:
                self.checks += 1
            good = _verify(pin, ticket.pin_hash) and not ticket.ghost
        except BaseException:
            with self._conn() as conn:
                conn.execute("DELETE FROM pin_attempts WHERE id=?", (ticket.id,))
            raise
        return self._record(ticket, good, now)

    def _card(self, conn: Conn, account: str, now: float) -> tuple[str, int, float, bool]:
        """``(pin_hash, failed, locked_until, ghost)``, the card's row locked till the end."""
        row = conn.execute(
            "SELECT status, pin_hash, failed_pins, locked_until FROM accounts"
            " WHERE account=? AND status != 'system' FOR UPDATE", (account,)).fetchone()
        if row is not None and row[0] == "open":
            return str(row[1]), int(row[2]), float(row[3]), False
        conn.execute("INSERT INTO pin_ghosts VALUES (?, 0, 0, ?) ON CONFLICT DO NOTHING",
                     (account, time.time()))
        failed, locked_until = conn.execute(
            "SELECT failed, locked_until FROM pin_ghosts WHERE account=? FOR UPDATE",
            (account,)).fetchone()
        return self._dummy_hash(), int(failed), float(locked_until), True

    def _reserve(self, account: str, now: float) -> _Reservation | None:
        with self._conn() as conn:
            conn.execute("BEGIN")
            pin_hash, failed, locked_until, ghost = self._card(conn, account, now)
            if locked_until > now:
                conn.execute("COMMIT")
                raise CardLocked(account, locked_until - now)
            if locked_until:
                failed = 0  # an expired lock starts afresh
            wall = time.time()
            conn.execute("DELETE FROM pin_attempts WHERE account=? AND expires < ?",
                         (account, wall))
            running = conn.execute("SELECT count(*) FROM pin_attempts WHERE account=?",
                                   (account,)).fetchone()[0]
            if failed + running >= self.max_attempts:
                conn.execute("COMMIT")
                return None
            (ident,) = conn.execute(
                "INSERT INTO pin_attempts(account, expires) VALUES (?, ?) RETURNING id",
                (account, wall + RESERVATION_SECONDS)).fetchone()
            conn.execute("COMMIT")
        return _Reservation(int(ident), account, pin_hash, ghost)

    def _record(self, ticket: _Reservation, good: bool, now: float) -> bool:
        account = ticket.account
        with self._conn() as conn:
            conn.execute("BEGIN")
            table, columns = (("pin_ghosts", "failed, locked_until") if ticket.ghost else
                              ("accounts", "failed_pins, locked_until"))
            row = conn.execute(f"SELECT {columns} FROM {table} WHERE account=? FOR UPDATE",
                               (account,)).fetchone()
            before = (0, 0.0) if row is None else (int(row[0]), float(row[1]))
            failed, locked_until, error = next_pin_state(
                account, *before, good, now, self.max_attempts, self.lock_seconds)
            if (failed, locked_until) != before and row is not None:
                first, second = columns.split(", ")
                conn.execute(f"UPDATE {table} SET {first}=?, {second}=? WHERE account=?",
                             (failed, locked_until, account))
            conn.execute("DELETE FROM pin_attempts WHERE id=?", (ticket.id,))
            if ticket.ghost:
                conn.execute("DELETE FROM pin_ghosts WHERE at < ?", (time.time() - _GHOST_DAYS,))
            conn.execute("COMMIT")
        if error is not None:
            raise error
        return True

    def _dummy_hash(self) -> str:
        with self._lock:
            if self._dummy is None:  # once: about 30 ms
                import secrets

                self._dummy = hash_pin(f"{secrets.randbelow(10**12):012d}", n=DEFAULT_SCRYPT_N)
            return self._dummy

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()
