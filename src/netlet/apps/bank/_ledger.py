"""The bank's ledger: a double-entry journal in SQLite, committed in groups by one writer thread.

Every acknowledged command must survive a crash, so commits are fsync'd (WAL,
``synchronous=FULL``); one fsync per command would cap throughput, so one
writer thread gathers the commands that queue up while it commits into a single
transaction (a SAVEPOINT each, so one refusal spoils nothing else) and wakes
each caller after the commit. Readers use a small pool of their own
connections: WAL lets them read while the writer writes. Money moves only as
double entries, deposits and withdrawals against the system account ``@cash``,
so the journal always sums to zero; ``accounts.balance`` is a cache of each
account's journal sum, kept in the same transaction and checked by ``audit()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from netlet.apps.bank._commands import (
    BankError,
    Command,
    Fence,
    IdempotencyConflict,
    InvalidCommand,
    KeySettled,
    LedgerClosed,
    StorageError,
    UnknownAccount,
    check_key,
    command_from_record,
    command_record,
    error_from_record,
    error_to_record,
)
from netlet.apps.bank._journal import AuditReport, HeadFile, audit, link, prepare
from netlet.apps.bank._ledgerfile import open_ledger_file
from netlet.apps.bank._pinguard import PinGuard, PinRow, Ticket, next_pin_state
from netlet.apps.bank._pins import pin_check_is_cheap
from netlet.errors import ConfigError

__all__ = ["AccountInfo", "AuditReport", "Ledger", "LedgerStatistics", "Outcome", "StatementEntry"]

_json_str: Callable[[str], str] = json.encoder.encode_basestring
"""A str as JSON with non-ASCII kept, as ``json.dumps(..., ensure_ascii=False)`` writes it."""

_Done = tuple[Any, BaseException | None]
_Job = Callable[[sqlite3.Connection, float], _Done]
_Waiter = Future[Any] | tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
"""Who waits for a job: a thread (a concurrent Future) or a task on an event loop."""
_Item = tuple[_Job, _Waiter, bool]


@dataclass(frozen=True, slots=True)
class LedgerStatistics:
    """A snapshot of the writer: ``commits`` is also the number of fsyncs."""

    commands: int
    writes: int
    commits: int
    mean_batch_size: float
    max_batch_size: int
    pin_checks: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class Outcome:
    """What happened to the command journaled under ``key``: a result or a refusal."""

    seq: int
    key: str
    command: Command
    result: dict[str, Any] | None
    error: BankError | None
    at: float

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> dict[str, Any]:
        """The result, or raise the refusal."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@dataclass(frozen=True, slots=True)
class StatementEntry:
    """One line of a statement: ``amount`` > 0 is a credit, < 0 a debit."""

    key: str
    kind: str
    amount: int
    counterparty: str
    timestamp: float
    balance_after: int


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """One row of :meth:`Ledger.accounts`; ``status`` is ``open`` or ``closed``."""

    account: str
    owner: str
    status: str
    balance: int


class _Book:
    """The :class:`Book` a command sees: SQL on the writer's connection, inside its savepoint.

    Each account's status and balance are read once per command and kept up to date
    by ``move``, so a transfer reads two rows, not five.
    """

    def __init__(self, conn: sqlite3.Connection, key: str, seq: int) -> None:
        self.conn, self.key, self.seq = conn, key, seq
        self._rows: dict[str, list[Any]] = {}

    def _one(self, sql: str, *args: object) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def _row(self, account: str) -> list[Any]:
        """``[status, balance]`` of ``account`` (``[None, 0]`` if there is none)."""
        row = self._rows.get(account)
        if row is None:
            found = self.conn.execute(
                "SELECT status, balance FROM accounts WHERE account=?", (account,)).fetchone()
            row = self._rows[account] = [None, 0] if found is None else list(found)
        return row

    def status(self, account: str) -> str | None:
        status: str | None = self._row(account)[0]
        return None if status == "system" else status

    def balance(self, account: str) -> int:
        return int(self._row(account)[1])

    def create(self, account: str, owner: str, pin_hash: str) -> None:
        self.conn.execute(
            "INSERT INTO accounts(account, owner, pin_hash, status, opened_at)"
            " VALUES (?, ?, ?, 'open', ?)",
            (account, owner, pin_hash, time.time()),
        )
        self._rows[account] = ["open", 0]

    def close(self, account: str) -> None:
        self.conn.execute("UPDATE accounts SET status='closed' WHERE account=?", (account,))
        self._rows.pop(account, None)

    def move(self, src: str, dst: str, amount: int) -> None:
        self.conn.executemany(
            "INSERT INTO entries(seq, account, amount, counterparty) VALUES (?, ?, ?, ?)",
            [(self.seq, src, -amount, dst), (self.seq, dst, amount, src)],
        )
        self.conn.executemany(
            "UPDATE accounts SET balance = balance + ? WHERE account=?",
            [(-amount, src), (amount, dst)],
        )
        for account, change in ((src, -amount), (dst, amount)):
            row = self._rows.get(account)
            if row is not None:
                row[1] += change  # as the UPDATE just did

    def stored(self, key: str) -> tuple[Command, bool] | None:
        row = self.conn.execute("SELECT record, ok FROM commands WHERE key=?", (key,)).fetchone()
        return None if row is None else (command_from_record(json.loads(row[0])), bool(row[1]))

    def reversed_by(self, key: str) -> str | None:
        by: str | None = self._one("SELECT reversal_key FROM reversals WHERE original_key=?", key)
        return by

    def mark_reversed(self, key: str) -> None:
        self.conn.execute("INSERT INTO reversals VALUES (?, ?)", (key, self.key))


def _settle_tasks(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in items:
        if future.done():  # cancelled: the caller stopped waiting, the outcome is journaled
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def _no_fence(command: Command) -> None:
    if isinstance(command, Fence):
        raise InvalidCommand("a fence is recorded by Ledger.settle, never executed")


def _canonical(record: dict[str, Any]) -> str:
    """The journal's text of ``record``: JSON, keys sorted, no spaces, non-ASCII kept.

    A flat record of str and int values (every movement and its result) is written
    here directly, the same text ``json.dumps`` gives for a fraction of its cost.
    """
    parts = []
    for name in sorted(record):
        value = record[name]
        kind = type(value)
        if kind is str:
            parts.append(f"{_json_str(name)}:{_json_str(value)}")
        elif kind is int:
            parts.append(f"{_json_str(name)}:{int.__repr__(value)}")
        else:
            return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "{" + ",".join(parts) + "}"


def _outcome(row: tuple[Any, ...]) -> Outcome:
    seq, key, record, ok, text, at = row
    value = json.loads(text)
    return Outcome(
        seq=seq,
        key=key,
        command=command_from_record(json.loads(record)),
        result=value if ok else None,
        error=None if ok else error_from_record(value),
        at=at,
    )


_OUTCOME_SQL = "SELECT seq, key, record, ok, outcome, at FROM commands"


class Ledger:
    """The journal of one bank, in the SQLite file at ``path``; thread-safe.

    ``execute`` returns once its command is committed and fsync'd. With
    ``group_commit`` one writer commits up to ``max_batch`` commands together,
    waiting at most ``max_wait`` seconds for callers that are on their way;
    without it every command gets its own transaction.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        group_commit: bool = True,
        max_batch: int = 256,
        max_wait: float = 0.002,
        lock_seconds: float = 300.0,
        max_pin_attempts: int = 3,
        create: bool = False,
    ) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch must be a positive int, not {max_batch!r}")
        if not 0 <= max_wait <= 1:
            raise ConfigError(f"max_wait must be between 0 and 1 second, not {max_wait!r}")
        if lock_seconds < 0 or max_pin_attempts < 1:
            raise ConfigError("lock_seconds must be >= 0 and max_pin_attempts >= 1")
        self.path = os.fspath(path)
        self._group_commit, self._max_batch, self._max_wait = group_commit, max_batch, max_wait
        self._lock_seconds, self._max_pin_attempts = lock_seconds, max_pin_attempts
        self._file = open_ledger_file(self.path)  # one process per ledger: refused here
        self._head_file = HeadFile(self.path)
        try:
            self._conn = self._connect()
            try:
                self._head = prepare(self._conn, self.path, created=self._file.created,
                                     create=create, head=self._head_file)
            except BaseException:
                self._conn.close()
                raise
        except BaseException:
            self._file.release(remove=self._file.created)  # a refused start leaves nothing
            raise
        self._noted = self._head
        self._lock = threading.Lock()
        self._closed = False
        self._active = 0  # callers between submitting and being woken: the batch to wait for
        self._pool: list[sqlite3.Connection] = []
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._stats = [0, 0, 0, 0]  # commands, writes, commits, max batch
        self._pins = PinGuard(max_pin_attempts, lock_seconds)
        self._after_commit: list[Callable[[], None]] = []  # the writer's, run after each commit
        self._writer = threading.Thread(target=self._write_loop, name="netlet-ledger", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)

    # -- writing ------------------------------------------------------------

    def execute(self, command: Command, idem_key: str) -> dict[str, Any]:
        """Apply ``command`` once under ``idem_key``; return its result after the commit.

        A malformed command raises InvalidCommand and is not journaled. A refusal
        (InsufficientFunds, ...) is journaled, so a retry with the same key gets
        it again; the same key with another command raises IdempotencyConflict.
        """
        check_key(idem_key)
        _no_fence(command)
        record = command_record(command)
        text = _canonical(record)

        def run(conn: sqlite3.Connection, now: float) -> _Done:
            return self._apply(conn, now, command, idem_key, record["type"], text)

        result: dict[str, Any] = self._submit(run, is_command=True)
        return result

    async def execute_async(self, command: Command, idem_key: str) -> dict[str, Any]:
        """``execute`` for a task on an event loop: the loop thread never blocks.

        The writer wakes the loop once per commit for all of its tasks, not once each.
        """
        check_key(idem_key)
        _no_fence(command)
        record = command_record(command)
        text = _canonical(record)

        def run(conn: sqlite3.Connection, now: float) -> _Done:
            return self._apply(conn, now, command, idem_key, record["type"], text)

        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        with self._lock:
            if self._closed:
                raise LedgerClosed(f"the ledger at {self.path!r} is closed")
            self._active += 1
            self._queue.put((run, (loop, future), True))
        return await future

    def _journal_row(self, conn: sqlite3.Connection, key: str, kind: str, text: str, ok: int,
                     outcome: str, now: float) -> int:
        """Insert the next command row, linked into the hash chain; its seq."""
        seq = self._head[0] + 1
        chain = link(self._head[1], seq, key, kind, text, ok, outcome, now)
        conn.execute("INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (seq, key, kind, text, ok, outcome, now, chain))
        self._head = (seq, chain)
        return seq

    def _apply(
        self, conn: sqlite3.Connection, now: float, command: Command, key: str, kind: str,
        text: str
    ) -> _Done:
        sql = "SELECT record, ok, outcome, kind FROM commands WHERE key=?"
        row = conn.execute(sql, (key,)).fetchone()
        if row is not None:
            if row[3] == "Fence":
                raise KeySettled(key)
            if row[0] != text:
                raise IdempotencyConflict(key)
            stored = json.loads(row[2])
            return (stored, None) if row[1] else (None, error_from_record(stored))
        seq = self._head[0] + 1
        try:
            result = command.apply(_Book(conn, key, seq))
        except BankError as exc:
            conn.execute("ROLLBACK TO job")  # jobs run inside this savepoint (see _commit)
            self._journal_row(conn, key, kind, text, 0, _canonical(error_to_record(exc)), now)
            return None, exc
        self._journal_row(conn, key, kind, text, 1, _canonical(result), now)
        return result, None

    def _submit(self, job: _Job, *, is_command: bool = False) -> Any:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise LedgerClosed(f"the ledger at {self.path!r} is closed")
            self._active += 1
            self._queue.put((job, future, is_command))
        try:
            return future.result()
        finally:
            with self._lock:
                self._active -= 1

    def _write_loop(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            item = get()
            if item is None:
                return
            batch, stop, deadline = [item], False, 0.0
            while self._group_commit and len(batch) < self._max_batch:
                try:
                    item = get_nowait()
                except queue.Empty:
                    if len(batch) >= self._active:  # nobody else is on the way: commit now
                        break
                    deadline = deadline or time.monotonic() + self._max_wait
                    try:
                        item = get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Item]) -> None:
        conn, done, first = self._conn, [], self._head
        try:
            conn.execute("BEGIN IMMEDIATE")
            now = time.time()
            for job, future, _ in batch:
                conn.execute("SAVEPOINT job")
                before = self._head
                try:
                    value, error = job(conn, now)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO job")
                    self._head = before
                    value, error = None, StorageError(f"ledger storage failed: {exc}")
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    self._head = before
                    value, error = None, exc
                conn.execute("RELEASE job")
                done.append((future, value, error))
            conn.execute("COMMIT")
        except Exception as exc:  # nothing of this batch was committed
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._head = first
            error = StorageError(f"ledger commit failed: {exc}")
            self._run_after_commit()
            self._wake([(waiter, None, error) for _, waiter, _ in batch])
            return
        if self._head != self._noted:
            self._note_head()
        self._run_after_commit()
        with self._lock:
            stats = self._stats
            stats[0] += sum(1 for item in batch if item[2])
            stats[1] += len(batch)
            stats[2] += 1
            stats[3] = max(stats[3], len(batch))
        self._wake(done)

    def _note_head(self) -> None:
        """Tell the head file what is committed now (see ``_journal``); best effort."""
        try:
            self._head_file.write(*self._head)
            self._noted = self._head
        except OSError:
            pass  # the check it allows is lost, not the commit

    def _run_after_commit(self) -> None:
        hooks, self._after_commit = self._after_commit, []
        for hook in hooks:
            hook()

    def _wake(self, done: list[tuple[_Waiter, Any, BaseException | None]]) -> None:
        """Hand each job its outcome: threads directly, each loop's tasks in one call."""
        loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
        for waiter, value, error in done:
            if isinstance(waiter, Future):
                if error is None:
                    waiter.set_result(value)
                else:
                    waiter.set_exception(error)
            else:
                loops.setdefault(waiter[0], []).append((waiter[1], value, error))
        if loops:
            with self._lock:
                self._active -= sum(len(items) for items in loops.values())
        for loop, items in loops.items():
            try:
                loop.call_soon_threadsafe(_settle_tasks, items)
            except RuntimeError:  # that loop is closed: nobody waits there any more
                pass

    # -- PINs -----------------------------------------------------------------

    def check_pin(self, account: str, pin: str, now: float | None = None) -> bool:
        """True if ``pin`` is right; else WrongPin, or CardLocked after too many wrong ones.

        An unknown or closed account answers as a card with a wrong PIN would (see
        ``_pinguard``), in about the same time.
        """
        now = time.time() if now is None else now
        ticket = self._pins.begin(account, lambda: self._pin_row(account), now)
        queued = False
        try:
            good = self._pins.verify(ticket, pin)  # slow on purpose: outside the writer
            if good and self._pins.alone(ticket):
                return True
            queued = True
            try:
                ok: bool = self._submit(self._pin_job(ticket, good, now))
            except LedgerClosed:
                self._pins.end(ticket)  # never queued
                raise
            return ok
        finally:
            if not queued:
                self._pins.end(ticket)

    async def check_pin_async(self, account: str, pin: str, now: float | None = None) -> bool:
        """``check_pin`` for a task on an event loop.

        A costly hash (the default, tens of milliseconds) is checked on a worker
        thread; a cheap one (``pin_check_is_cheap``: scrypt over at most 64 KiB,
        tens of microseconds, as the swarm's synthetic accounts use) right here,
        which costs less than the hand-off. A wrong PIN is recorded by the writer.
        """
        now = time.time() if now is None else now
        loop = asyncio.get_running_loop()
        while True:
            ticket = self._pins.begin_async(account, lambda: self._pin_row(account), now, loop)
            if isinstance(ticket, Ticket):
                break
            await ticket  # other attempts on this card are being checked
        queued = False
        try:
            if pin_check_is_cheap(ticket.pin_hash):
                good = self._pins.verify(ticket, pin)
            else:
                good = await loop.run_in_executor(None, self._pins.verify, ticket, pin)
            if good and self._pins.alone(ticket):
                return True
            future: asyncio.Future[bool] = loop.create_future()
            with self._lock:
                if self._closed:
                    raise LedgerClosed(f"the ledger at {self.path!r} is closed")
                self._active += 1
                self._queue.put((self._pin_job(ticket, good, now), (loop, future), False))
                queued = True
            return await future
        finally:
            if not queued:
                self._pins.end(ticket)

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

        def record(conn: sqlite3.Connection, _now: float) -> _Done:
            self._after_commit.append(lambda: self._pins.end(ticket))
            if ticket.ghost:
                return None, self._pins.record_ghost(ticket, now)
            return self._record_pin(conn, ticket.account, good, now)

        return record

    def _record_pin(self, conn: sqlite3.Connection, account: str, good: bool, now: float) -> _Done:
        row = conn.execute(
            "SELECT failed_pins, locked_until FROM accounts WHERE account=?", (account,)
        ).fetchone()
        failed, locked_until, error = next_pin_state(
            account, row[0], row[1], good, now, self._max_pin_attempts, self._lock_seconds)
        if (failed, locked_until) != (row[0], row[1]):
            conn.execute("UPDATE accounts SET failed_pins=?, locked_until=? WHERE account=?",
                         (failed, locked_until, account))
        return (None, error) if error else (True, None)

    # -- reading ----------------------------------------------------------------

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise LedgerClosed(f"the ledger at {self.path!r} is closed")
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            with self._lock:
                keep = not self._closed and len(self._pool) < 16
                if keep:
                    self._pool.append(conn)
            if not keep:
                conn.close()

    def outcome(self, idem_key: str) -> Outcome | None:
        """What happened under ``idem_key``, or None if the ledger never saw it."""
        with self._reader() as conn:
            row = conn.execute(f"{_OUTCOME_SQL} WHERE key=?", (idem_key,)).fetchone()
        return None if row is None else _outcome(row)

    def settle(self, keys: list[str], account: str = "") -> list[Outcome]:
        """The outcome of each key, fencing those the ledger never saw; in commit order.

        Runs on the writer, after every request queued before it: a key it finds
        unseen gets a journaled :class:`Fence` (asked by ``account``, "" for an
        operator), so a request with that key that comes later is refused with
        KeySettled. The answer is final and survives restarts. A fence's outcome
        has ``command`` a Fence and ``error`` KeySettled.
        """
        checked = [check_key(key) for key in keys]
        fence = Fence(account)
        fence.validate()
        text = _canonical(fence.to_record())

        def run(conn: sqlite3.Connection, now: float) -> _Done:
            found = []
            for key in checked:
                row = conn.execute(f"{_OUTCOME_SQL} WHERE key=?", (key,)).fetchone()
                if row is None:
                    refusal = _canonical(error_to_record(KeySettled(key)))
                    seq = self._journal_row(conn, key, "Fence", text, 0, refusal, now)
                    row = (seq, key, text, 0, refusal, now)
                found.append(_outcome(row))
            return found, None

        result: list[Outcome] = self._submit(run)
        return result

    def journal(self, after: int = 0, limit: int = 1000) -> list[Outcome]:
        """Journaled commands with ``seq`` > ``after``, oldest first, for replay."""
        with self._reader() as conn:
            rows = conn.execute(
                f"{_OUTCOME_SQL} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [_outcome(row) for row in rows]

    def balance(self, account: str) -> int:
        """The account's balance in minor units (zero once closed)."""
        with self._reader() as conn:
            row = conn.execute(
                "SELECT balance FROM accounts WHERE account=? AND status != 'system'", (account,)
            ).fetchone()
        if row is None:
            raise UnknownAccount(account)
        return int(row[0])

    def statement(self, account: str, limit: int = 10) -> list[StatementEntry]:
        """The account's last ``limit`` entries, newest first."""
        if not isinstance(limit, int) or limit < 0:
            raise InvalidCommand(f"limit must be an int >= 0, not {limit!r}")
        with self._reader() as conn:
            conn.execute("BEGIN")
            row = conn.execute(
                "SELECT balance FROM accounts WHERE account=? AND status != 'system'", (account,)
            ).fetchone()
            if row is None:
                raise UnknownAccount(account)
            rows = conn.execute(
                "SELECT c.key, c.kind, e.amount, e.counterparty, c.at FROM entries e"
                " JOIN commands c ON c.seq = e.seq WHERE e.account=? ORDER BY e.id DESC LIMIT ?",
                (account, limit),
            ).fetchall()
        balance, entries = int(row[0]), []
        for key, kind, amount, counterparty, at in rows:
            entries.append(StatementEntry(key, kind, amount, counterparty, at, balance))
            balance -= amount
        return entries

    def accounts(self) -> list[AccountInfo]:
        """Every customer account, open or closed, by id."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT account, owner, status, balance FROM accounts"
                " WHERE status != 'system' ORDER BY account"
            ).fetchall()
        return [AccountInfo(*row) for row in rows]

    def audit(self) -> AuditReport:
        """Recompute every balance and link of the journal and check the books (``_journal``)."""
        noted = self._head_file.read()  # before the snapshot: it never leads what it sees
        with self._reader() as conn:
            conn.execute("BEGIN")
            return audit(conn, noted)

    def statistics(self) -> LedgerStatistics:
        """A snapshot of how many commands, writes and commits the writer has done."""
        with self._lock:
            commands, writes, commits, largest = self._stats
        mean = writes / commits if commits else 0.0
        return LedgerStatistics(commands, writes, commits, mean, largest, self._pins.checks)

    # -- lifetime ---------------------------------------------------------------

    def close(self, *, discard: bool = False) -> None:
        """Finish the commands already queued, stop the writer and close every connection.

        ``discard``: if this ledger created its file, remove it (a start that was refused).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._writer.join()
        with self._lock:
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()
        self._conn.close()
        self._head_file.close()
        discard = discard and self._file.created
        self._file.release(remove=discard)
        if discard:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._head_file.path)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
