"""The bank's ledger: a double-entry journal, committed in groups by one writer thread.

Every acknowledged command must survive a crash, so commits are durable before
anyone is answered; one durable commit per command would cap throughput, so one
writer thread gathers the commands that queue up while it commits into a single
transaction (applied in memory and written at once, ``_batch``; if that fails,
again with a SAVEPOINT each, so one failure spoils nothing else) and wakes
each caller after the commit. Readers use a small pool of their own
connections. Money moves only as double entries, deposits and withdrawals
against the system account ``@cash``, so the journal always sums to zero;
``accounts.balance`` is a cache of each account's journal sum, kept in the
same transaction and checked by ``audit()``.

The books live in a :class:`~netlet.apps.bank._store.Store`: an SQLite file
that this process alone writes (the default), or a PostgreSQL database that
several ledgers (front-ends) share; the rules here are the same for both.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from netlet.apps.bank._batch import CommandJob, run_fast
from netlet.apps.bank._commands import (
    BankError,
    Command,
    Fence,
    IdempotencyConflict,
    InvalidCommand,
    KeySettled,
    LedgerClosed,
    StorageError,
    check_key,
    command_record,
    error_from_record,
    error_to_record,
)
from netlet.apps.bank._journal import AuditReport, link
from netlet.apps.bank._ledgerpins import LedgerPins
from netlet.apps.bank._ledgerread import LedgerReads
from netlet.apps.bank._ledgerstats import LedgerMeter
from netlet.apps.bank._pinguard import PinGuard
from netlet.apps.bank._records import (
    OUTCOME_SQL,
    AccountInfo,
    Conn,
    LedgerStatistics,
    Outcome,
    SqlBook,
    StatementEntry,
    canonical,
    outcome_of,
)
from netlet.apps.bank._store import open_store
from netlet.clock import REAL_CLOCK, Clock, Waiter, queue_get, wake_all
from netlet.errors import ConfigError

__all__ = ["AccountInfo", "AuditReport", "Ledger", "LedgerStatistics", "Outcome", "StatementEntry"]

_Done = tuple[Any, BaseException | None]
_Job = Callable[[Conn, float], _Done]
_Item = tuple[_Job, Waiter, bool]
"""A job, who waits for it (a thread, or a task on an event loop), and whether it is a
command."""
_RETRIES = 5  # a batch that meets a serialization failure runs again this often


def _no_fence(command: Command) -> None:
    if isinstance(command, Fence):
        raise InvalidCommand("a fence is recorded by Ledger.settle, never executed")


class _Retry(Exception):
    """A job met a serialization failure: the whole batch runs again."""


class _Careful(Exception):
    """A batch run in memory failed somewhere: it runs again, job by job."""


class Ledger(LedgerPins, LedgerReads):
    """The journal of one bank, in the SQLite file (or PostgreSQL URL) ``path``; thread-safe.

    ``execute`` returns once its command is committed and durable. With
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
        clock: Clock = REAL_CLOCK,
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
        self._clock = clock  # group-commit waits, journal times, PIN lockouts
        self._store = open_store(self.path, max_pin_attempts=max_pin_attempts,
                                 lock_seconds=lock_seconds)
        self.location = self._store.location
        self._conn, self.journal_head = self._store.open(create)
        self._errors = self._store.errors
        self._pipelined = self._store.pipelined
        self._lock = threading.Lock()
        self._closed = False
        self._active = 0  # callers between submitting and being woken: the batch to wait for
        self._pool: list[Conn] = []
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._stats = [0, 0, 0, 0]  # commands, writes, commits, max batch
        self._meter = LedgerMeter()
        self._pins = PinGuard(max_pin_attempts, lock_seconds)
        self._pin_threads: ThreadPoolExecutor | None = None
        self._after_commit: list[Callable[[], None]] = []  # the writer's, run after each commit
        self._writer = threading.Thread(target=self._write_loop, name="netlet-ledger", daemon=True)
        self._writer.start()

    def _closed_error(self) -> LedgerClosed:
        return LedgerClosed(f"the ledger at {self.location!r} is closed")

    # -- writing ------------------------------------------------------------

    def execute(self, command: Command, idem_key: str) -> dict[str, Any]:
        """Apply ``command`` once under ``idem_key``; return its result after the commit.

        A malformed command raises InvalidCommand and is not journaled. A refusal
        (InsufficientFunds, ...) is journaled, so a retry with the same key gets
        it again; the same key with another command raises IdempotencyConflict.
        """
        with self._meter.timed(type(command).__name__):
            result: dict[str, Any] = self._submit(self._command_job(command, idem_key),
                                                  is_command=True)
        return result

    async def execute_aio(self, command: Command, idem_key: str) -> dict[str, Any]:
        """``execute`` for a task on an event loop: the loop thread never blocks.

        The writer wakes the loop once per commit for all of its tasks, not once each.
        """
        waiter = Waiter(asyncio.get_running_loop())
        self._enqueue(self._command_job(command, idem_key), waiter, True)
        result: dict[str, Any] = await self._meter.waited(type(command).__name__,
                                                          waiter.result_aio())
        return result

    def _command_job(self, command: Command, key: str) -> CommandJob:
        check_key(key)
        _no_fence(command)
        record = command_record(command)
        kind, text = record["type"], canonical(record)

        def run(conn: Conn, now: float) -> _Done:
            return self._apply(conn, now, command, key, kind, text)

        return CommandJob(command, key, kind, text, run)

    def _journal_row(self, conn: Conn, key: str, kind: str, text: str, ok: int,
                     outcome: str, now: float) -> int:
        """Insert the next command row, linked into the hash chain; its seq."""
        seq = self.journal_head[0] + 1
        chain = link(self.journal_head[1], seq, key, kind, text, ok, outcome, now)
        conn.execute("INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (seq, key, kind, text, ok, outcome, now, chain))
        self.journal_head = (seq, chain)
        return seq

    def _apply(self, conn: Conn, now: float, command: Command, key: str, kind: str,
               text: str) -> _Done:
        sql = "SELECT record, ok, outcome, kind FROM commands WHERE key=?"
        found = conn.execute(sql, (key,))
        seq = self.journal_head[0] + 1
        book = SqlBook(conn, key, seq)
        row = found.fetchone()
        if row is not None:  # nothing written: the refusals below need no rollback
            if row[3] == "Fence":
                return None, KeySettled(key)
            if row[0] != text:
                return None, IdempotencyConflict(key)
            stored = json.loads(row[2])
            return (stored, None) if row[1] else (None, error_from_record(stored))
        try:
            result = command.apply(book)
        except BankError as exc:
            conn.execute("ROLLBACK TO job")  # jobs run inside this savepoint (see _commit)
            self._journal_row(conn, key, kind, text, 0, canonical(error_to_record(exc)), now)
            return None, exc
        self._journal_row(conn, key, kind, text, 1, canonical(result), now)
        return result, None

    def _enqueue(self, job: _Job, waiter: Waiter, is_command: bool) -> None:
        """Hand ``job`` to the writer, which wakes ``waiter`` once it is committed.

        A thread's waiter counts in ``_active`` until the thread runs again (it may be
        back with its next job), a task's until the writer wakes its loop.
        """
        with self._lock:
            if self._closed:
                raise self._closed_error()
            self._active += 1
            self._queue.put((job, waiter, is_command))

    def _submit(self, job: _Job, *, is_command: bool = False) -> Any:
        """Run ``job`` in the writer and wait for its outcome (thread code)."""
        waiter = Waiter()
        self._enqueue(job, waiter, is_command)
        return self._wait_job(waiter)

    def _wait_job(self, waiter: Waiter) -> Any:
        """A thread waits for its queued job's outcome, then stops counting as active."""
        try:
            waiter.wait(None)
        finally:
            with self._lock:
                self._active -= 1
        return waiter.result()

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
                    deadline = deadline or self._clock.monotonic() + self._max_wait
                    try:
                        item = queue_get(self._clock, get, deadline - self._clock.monotonic())
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
        careful = False
        t0 = time.perf_counter()
        for attempt in range(_RETRIES + 1):
            try:
                done = self._run_batch(batch, careful)
                break
            except _Careful:
                careful = True
                self._meter.careful += 1
                continue
            except _Retry:
                if attempt == _RETRIES:
                    self._fail(batch, StorageError("ledger commit failed: too many "
                                                   "serialization failures; retry the key"))
                    return
            except Exception as exc:  # nothing of this batch was committed
                self._fail(batch, StorageError(f"ledger commit failed: {exc}"))
                return
        self._store.committed(self.journal_head)
        self._meter.committed(len(batch), time.perf_counter() - t0)
        self._run_after_commit()
        with self._lock:
            stats = self._stats
            stats[0] += sum(1 for item in batch if item[2])
            stats[1] += len(batch)
            stats[2] += 1
            stats[3] = max(stats[3], len(batch))
        self._wake(done)

    def _run_batch(self, batch: list[_Item], careful: bool
                   ) -> list[tuple[Waiter, Any, BaseException | None]]:
        """Run every job of ``batch`` in one transaction and commit it; their outcomes.

        At first the batch's commands are applied in memory and written at once
        (``_batch.run_fast``), so an error may surface at the COMMIT, far from the job
        that made it: then the batch is rolled back and runs again ``careful``ly, job by
        job in a savepoint each, each job's writes waited for before the next.
        """
        conn, first = self._conn, self.journal_head
        done: list[tuple[Waiter, Any, BaseException | None]] = []
        self._after_commit.clear()  # a batch that runs again adds its hooks again
        try:
            with self._store.pipeline(conn) as flush:
                if not careful:
                    done = run_fast(conn, self._store, batch, self, self._clock)
                else:
                    self._run_careful(conn, batch, flush, done)
                conn.execute("COMMIT")
                flush()
        except Exception as exc:
            self.journal_head = first
            if self._pipelined or self._store.broken(conn):
                # A pipeline that failed half-way may still owe answers: never reuse it
                # (closing it rolls the transaction back). The next try reconnects.
                self._reconnect()
            else:
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except self._errors:
                    pass
            if not careful and not isinstance(exc, _Retry):
                raise _Careful() from exc  # e.g. the last job's write failed at the COMMIT
            if not isinstance(exc, _Retry | _Careful) and self._store.retryable(exc):
                raise _Retry() from exc
            raise
        return done

    def _run_careful(self, conn: Conn, batch: list[_Item], flush: Callable[[], None],
                     done: list[tuple[Waiter, Any, BaseException | None]]) -> None:
        """Each job in a savepoint, its writes waited for: a failure is that job's alone."""
        head = self._store.begin_write(conn)
        if head is not None:
            self.journal_head = head  # another front-end may have journaled since
        now = self._clock.time()
        for job, future, _ in batch:
            conn.execute("SAVEPOINT job")
            before = self.journal_head
            try:
                value, error = job(conn, now)
                conn.execute("RELEASE job")
                flush()  # a pipelined write's error belongs to this job
            except Exception as exc:
                if self._store.retryable(exc):
                    raise _Retry() from exc
                self._undo_job(conn, flush)
                self.journal_head = before
                value, error = None, exc
                if isinstance(exc, self._errors):
                    error = StorageError(f"ledger storage failed: {exc}")
            done.append((future, value, error))

    def _undo_job(self, conn: Conn, flush: Callable[[], None]) -> None:
        """Roll the failed job back to its savepoint (past a pipeline's aborted part)."""
        try:
            flush()
        except self._errors:
            pass
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        flush()

    def _reconnect(self) -> None:
        try:
            self._conn.close()
        except self._errors:
            pass
        try:
            self._conn = self._store.connect_writer()
        except Exception:
            pass  # the next batch fails too, and tries again

    def _fail(self, batch: list[_Item], error: StorageError) -> None:
        self._run_after_commit()
        self._wake([(waiter, None, error) for _, waiter, _ in batch])

    def _run_after_commit(self) -> None:
        hooks, self._after_commit = self._after_commit, []
        for hook in hooks:
            hook()

    def _wake(self, done: list[tuple[Waiter, Any, BaseException | None]]) -> None:
        """Hand each job its outcome: threads directly, each loop's tasks in one call."""
        tasks = sum(1 for waiter, _, _ in done if waiter.loop is not None)
        if tasks:
            with self._lock:
                self._active -= tasks
        wake_all(done)

    # -- reading ----------------------------------------------------------------

    @contextmanager
    def _reader(self) -> Iterator[Conn]:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = self._store.connect_reader()
        try:
            yield conn
        finally:
            keep = not self._store.broken(conn)
            if keep and conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except self._errors:
                    keep = False
            with self._lock:
                keep = keep and not self._closed and len(self._pool) < 16
                if keep:
                    self._pool.append(conn)
            if not keep:
                conn.close()

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
        text = canonical(fence.to_record())

        def run(conn: Conn, now: float) -> _Done:
            found = []
            for key in checked:
                row = conn.execute(f"{OUTCOME_SQL} WHERE key=?", (key,)).fetchone()
                if row is None:
                    refusal = canonical(error_to_record(KeySettled(key)))
                    seq = self._journal_row(conn, key, "Fence", text, 0, refusal, now)
                    row = (seq, key, text, 0, refusal, now)
                found.append(outcome_of(row))
            return found, None

        result: list[Outcome] = self._submit(run)
        return result

    def statistics(self) -> LedgerStatistics:
        """A snapshot of how many commands, writes and commits the writer has done."""
        with self._lock:
            commands, writes, commits, largest = self._stats
        mean = writes / commits if commits else 0.0
        gate = self._store.pins
        checks = self._pins.checks if gate is None else gate.checks
        return LedgerStatistics(commands, writes, commits, mean, largest, checks,
                                *self._meter.snapshot())

    # -- lifetime ---------------------------------------------------------------

    def close(self, *, discard: bool = False) -> None:
        """Finish the commands already queued, stop the writer and close every connection.

        ``discard``: if this ledger created its file and committed nothing to it, remove
        it (a start that was refused); a ledger that took any command is always kept.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
            threads = self._pin_threads
        self._writer.join()
        if threads is not None:
            threads.shutdown(wait=True)
        with self._lock:
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()
        self._conn.close()
        with self._lock:
            # commits, or a journal that has anything: the queue above is finished now
            committed = self._stats[2] > 0 or self.journal_head[0] > 0
        self._store.close(discard=discard and not committed)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

