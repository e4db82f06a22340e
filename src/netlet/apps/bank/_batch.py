"""A run of commands in one group commit, applied in memory and written in a few statements.

Statement by statement, a transfer costs a savepoint, two reads, six writes and
a release: on PostgreSQL each read is a round trip, and in the serving process
each statement is CPU that the event loop waits for (one GIL). So the writer
applies a run of commands to a :class:`Run` instead: the run reads every key
and account its commands name in two queries sent with the batch's ``BEGIN``
(one round trip), keeps balances and statuses in memory as the commands move
money, and writes all their rows at the end in a handful of statements
(``Store.write_many``) that go out with the ``COMMIT``. A command sees exactly
what it would have seen statement by statement: the writer holds the ledger's
write lock for the whole batch, so nobody else changes what the run read, and
everything the run itself journals is looked up in its own memory first.

A command refused by the bank leaves no rows but its journal line. If any
statement fails, the batch is rolled back and runs again job by job
(``_ledger``), where a failure belongs to one job.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from netlet.apps.bank._commands import (
    BankError,
    Command,
    IdempotencyConflict,
    KeySettled,
    command_from_record,
    error_from_record,
    error_to_record,
)
from netlet.apps.bank._journal import link
from netlet.apps.bank._records import Conn, RowBook, account_row, canonical
from netlet.apps.bank._store import Head, Store
from netlet.clock import Clock

__all__ = ["CommandJob", "Run", "Writer", "run_fast"]

_Done = tuple[Any, BaseException | None]
_Item = tuple[Callable[[Conn, float], _Done], Any, bool]
"""A queued job, who waits for it, and whether it is a command (as ``_ledger`` queues it)."""


def _nothing() -> None:
    pass


class Writer(Protocol):
    """The ledger as ``run_fast`` sees it: the journal's head, which the jobs that are not
    commands (a fence) move as they journal, and the fast runs move in between."""

    journal_head: Head


def run_fast(conn: Conn, store: Store, batch: list[_Item], writer: Writer, clock: Clock
             ) -> list[tuple[Any, Any, BaseException | None]]:
    """Begin the writer's transaction and run ``batch`` in it: each run of command jobs
    applied in memory and written at once, any other job statement by statement (in a
    savepoint). Each job's waiter and outcome; ``writer.journal_head`` follows. A failure raises."""
    done: list[tuple[Any, Any, BaseException | None]] = []
    head = writer.journal_head
    now, position, started = 0.0, 0, False
    while position < len(batch):
        end = position
        while end < len(batch) and isinstance(batch[end][0], CommandJob):
            end += 1
        jobs: list[CommandJob] = [item[0] for item in batch[position:end]]  # type: ignore[misc]
        run = Run(conn, store, head, now)
        if not started:
            moved = store.begin_write(conn, functools.partial(run.send_reads, jobs) if jobs
                                      else _nothing)
            head = moved or head  # another front-end may have journaled since
            run.head, run.now = head, (now := clock.time())
            started = True
        elif jobs:
            run.send_reads(jobs)
        if jobs:
            run.take_reads()
            for job, (_, waiter, _) in zip(jobs, batch[position:end], strict=True):
                done.append((waiter, *run.apply(job)))
            run.send_writes()
            head = run.head
        writer.journal_head = head
        if end < len(batch):
            other, waiter, _ = batch[end]
            conn.execute("SAVEPOINT job")
            value, error = other(conn, now)  # journals after ``writer.journal_head``, and moves it
            conn.execute("RELEASE job")
            done.append((waiter, value, error))
            head = writer.journal_head
            end += 1
        position = end
    return done


class CommandJob:
    """A command queued for the writer: ``run`` applies it statement by statement (the
    careful way); a :class:`Run` applies it in memory from the fields."""

    __slots__ = ("accounts", "command", "key", "kind", "run", "text")

    def __init__(self, command: Command, key: str, kind: str, text: str,
                 run: Callable[[Conn, float], _Done]) -> None:
        self.command, self.key, self.kind, self.text, self.run = command, key, kind, text, run
        movement = getattr(command, "movement", None)
        self.accounts: tuple[str, ...] = movement()[:2] if movement is not None else ()

    def __call__(self, conn: Conn, now: float) -> _Done:
        return self.run(conn, now)


class Run:
    """Consecutive command jobs of one batch: their reads in one go, their writes in a few."""

    def __init__(self, conn: Conn, store: Store, head: Head, now: float) -> None:
        self.conn, self.store, self.head, self.now = conn, store, head, now
        self.keys: dict[str, tuple[Any, ...] | None] = {}  # key -> (record, ok, outcome, kind)
        self.rows: dict[str, list[Any]] = {}  # account -> [status, balance], as of now
        self.commands: list[tuple[Any, ...]] = []
        self.entries: list[tuple[Any, ...]] = []
        self.deltas: dict[str, int] = {}
        self.created: list[tuple[Any, ...]] = []
        self.closed: list[tuple[str]] = []
        self.reversals: dict[str, str] = {}  # original key -> reversal key, this run's
        self._ahead: list[tuple[Any, Any]] = []

    def send_reads(self, jobs: list[CommandJob]) -> None:
        """Send the queries for every key and account ``jobs`` name; ``take_reads`` reads them."""
        keys = list(dict.fromkeys(job.key for job in jobs))
        accounts = list(dict.fromkeys(a for job in jobs for a in job.accounts))
        where, params = self.store.any_of("key", keys)
        found = self.conn.execute(
            f"SELECT key, record, ok, outcome, kind FROM commands WHERE {where}", params)
        ahead = None
        if accounts:
            where, params = self.store.any_of("account", accounts)
            ahead = self.conn.execute(
                f"SELECT account, status, balance FROM accounts WHERE {where}", params)
        self._ahead = [(found, keys), (ahead, accounts)]

    def take_reads(self) -> None:
        (found, keys), (ahead, accounts) = self._ahead
        self._ahead = []
        self.keys.update(dict.fromkeys(keys))
        for key, record, ok, outcome, kind in found.fetchall():
            self.keys[key] = (record, ok, outcome, kind)
        for account in accounts:
            self.rows[account] = [None, 0]
        if ahead is not None:
            for account, status, balance in ahead.fetchall():
                self.rows[account] = [status, balance]

    def apply(self, job: CommandJob) -> _Done:
        """What ``Ledger._apply`` does for ``job``, in memory."""
        key, text = job.key, job.text
        row = self.keys.get(key) if key in self.keys else self.stored_row(key)
        if row is not None:
            record, ok, outcome, kind = row
            if kind == "Fence":
                return None, KeySettled(key)
            if record != text:
                return None, IdempotencyConflict(key)
            stored = json.loads(outcome)
            return (stored, None) if ok else (None, error_from_record(stored))
        book = _Book(self, key, self.head[0] + 1)
        try:
            result = job.command.apply(book)
        except BankError as exc:  # changed nothing: the book's changes are dropped
            self._journal(key, job.kind, text, 0, canonical(error_to_record(exc)))
            return None, exc
        book.keep()
        self._journal(key, job.kind, text, 1, canonical(result))
        return result, None

    def _journal(self, key: str, kind: str, text: str, ok: int, outcome: str) -> None:
        seq = self.head[0] + 1
        chain = link(self.head[1], seq, key, kind, text, ok, outcome, self.now)
        self.commands.append((seq, key, kind, text, ok, outcome, self.now, chain))
        self.keys[key] = (text, ok, outcome, kind)
        self.head = (seq, chain)

    def stored_row(self, key: str) -> tuple[Any, ...] | None:
        """The journaled command under ``key`` as stored, or None (kept in ``keys``)."""
        row = self.conn.execute("SELECT record, ok, outcome, kind FROM commands WHERE key=?",
                                (key,)).fetchone()
        self.keys[key] = found = None if row is None else tuple(row)
        return found

    def row(self, account: str) -> list[Any]:
        return account_row(self.conn, self.rows, account)

    def send_writes(self) -> None:
        """Send every row this run made (without waiting for them: a failure surfaces at
        the batch's next sync)."""
        conn, write = self.conn, self.store.write_many
        if self.created:
            conn.executemany("INSERT INTO accounts(account, owner, pin_hash, status, opened_at)"
                             " VALUES (?, ?, ?, 'open', ?)", self.created)
        if self.closed:
            conn.executemany("UPDATE accounts SET status='closed' WHERE account=?", self.closed)
        if self.entries:
            write(conn, "entries", self.entries)
        changes = [(delta, account) for account, delta in self.deltas.items() if delta]
        if changes:  # moves may cancel out: no empty statement (PostgreSQL refuses one)
            write(conn, "balances", changes)
        if self.reversals:
            conn.executemany("INSERT INTO reversals VALUES (?, ?)", list(self.reversals.items()))
        if self.commands:
            write(conn, "commands", self.commands)


class _Book(RowBook):
    """The :class:`~netlet.apps.bank._commands.Book` one command of a :class:`Run` sees:
    its changes stay its own until ``keep`` (a refusal leaves nothing behind)."""

    __slots__ = ("_rows", "created", "entries", "key", "reversed", "run", "seq", "status_of")

    def __init__(self, run: Run, key: str, seq: int) -> None:
        self.run, self.key, self.seq = run, key, seq
        self._rows: dict[str, list[Any]] = {}
        self.entries: list[tuple[Any, ...]] = []
        self.created: list[tuple[Any, ...]] = []
        self.reversed: str | None = None
        self.status_of: dict[str, str] = {}

    def _row(self, account: str) -> list[Any]:
        row = self._rows.get(account)
        if row is None:
            row = self._rows[account] = list(self.run.row(account))
        return row

    def create(self, account: str, owner: str, pin_hash: str) -> None:
        self._rows[account] = ["open", 0]
        self.created.append((account, owner, pin_hash, time.time()))  # as SqlBook.create

    def close(self, account: str) -> None:
        self._row(account)[0] = "closed"
        self.status_of[account] = "closed"

    def move(self, src: str, dst: str, amount: int) -> None:
        self.entries.append((self.seq, src, -amount, dst))
        self.entries.append((self.seq, dst, amount, src))
        self._row(src)[1] -= amount
        self._row(dst)[1] += amount

    def stored(self, key: str) -> tuple[Command, bool] | None:
        run = self.run
        row = run.keys.get(key) if key in run.keys else run.stored_row(key)
        return None if row is None else (command_from_record(json.loads(row[0])), bool(row[1]))

    def reversed_by(self, key: str) -> str | None:
        by = self.run.reversals.get(key)
        if by is None:
            row = self.run.conn.execute(
                "SELECT reversal_key FROM reversals WHERE original_key=?", (key,)).fetchone()
            by = None if row is None else str(row[0])
        return by

    def mark_reversed(self, key: str) -> None:
        self.reversed = key

    def keep(self) -> None:
        """Make this command's changes the run's."""
        run = self.run
        for account, row in self._rows.items():
            old = run.rows.get(account)
            change = row[1] - (old[1] if old is not None else 0)
            if change:
                run.deltas[account] = run.deltas.get(account, 0) + change
            run.rows[account] = row
        run.entries += self.entries
        run.created += self.created
        run.closed += [(account,) for account in self.status_of]
        if self.reversed is not None:
            run.reversals[self.reversed] = self.key
