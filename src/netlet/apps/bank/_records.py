"""What the ledger hands out (outcomes, statements, statistics) and the book commands see.

Shared by every storage backend: the SQL here is the portable subset SQLite
and PostgreSQL both speak, with ``?`` placeholders (a PostgreSQL connection
of ``_pgstore`` turns them into its own).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from netlet.apps.bank._commands import (
    BankError,
    Command,
    command_from_record,
    error_from_record,
)
from netlet.cluster import Histogram
from netlet.codec import record

__all__ = [
    "OUTCOME_SQL",
    "AccountInfo",
    "Conn",
    "LedgerStatistics",
    "Outcome",
    "RowBook",
    "SqlBook",
    "StatementEntry",
    "account_row",
    "canonical",
    "outcome_of",
]

_json_str: Callable[[str], str] = json.encoder.encode_basestring
"""A str as JSON with non-ASCII kept, as ``json.dumps(..., ensure_ascii=False)`` writes it."""


class Conn(Protocol):
    """The part of a DB-API connection the ledger uses (sqlite3's, or ``_pgstore.PgConn``)."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LedgerStatistics:
    """A snapshot of the writer: ``commits`` is also the number of fsyncs."""

    commands: int
    writes: int
    commits: int
    mean_batch_size: float
    max_batch_size: int
    pin_checks: int = 0
    ops: tuple[tuple[str, str, int], ...] = ()
    """Commands by kind and outcome ("ok" or the refusal's type): (kind, outcome, count)."""
    latency: Histogram | None = None
    """Seconds from a command's submit to its answer (after the commit)."""
    batch_sizes: Histogram | None = None
    """Jobs per commit."""
    commit_seconds: Histogram | None = None
    """Time each commit took (its fsync included)."""
    careful_batches: int = 0
    """Batches that failed as a whole and ran again one command at a time (each in a
    savepoint; see ``_batch``): a write the database refused, a lost connection."""


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


@record(107)
@dataclass(frozen=True, slots=True)
class StatementEntry:
    """One line of a statement (``statement`` answers a list of them, newest first):
    ``amount`` > 0 is a credit, < 0 a debit; ``timestamp`` is when it was journaled."""

    key: str
    kind: str
    amount: int
    counterparty: str
    timestamp: float
    balance_after: int


@record(108)
@dataclass(frozen=True, slots=True)
class AccountInfo:
    """One row of :meth:`Ledger.accounts` (and of the ``accounts`` answer); ``status`` is
    ``open`` or ``closed``."""

    account: str
    owner: str
    status: str
    balance: int


def account_row(conn: Conn, rows: dict[str, list[Any]], account: str) -> list[Any]:
    """``[status, balance]`` of ``account`` (``[None, 0]`` if there is none), read once
    into ``rows`` and kept there, so later moves update it in place."""
    row = rows.get(account)
    if row is None:
        found = conn.execute(
            "SELECT status, balance FROM accounts WHERE account=?", (account,)).fetchone()
        row = rows[account] = [None, 0] if found is None else list(found)
    return row


class RowBook:
    """What every :class:`Book` reads the same way: an account's ``[status, balance]``
    row, from ``_row`` (the system account's status reads as None: not a customer's)."""

    __slots__ = ()

    def _row(self, account: str) -> list[Any]:
        raise NotImplementedError

    def status(self, account: str) -> str | None:
        status: str | None = self._row(account)[0]
        return None if status == "system" else status

    def balance(self, account: str) -> int:
        return int(self._row(account)[1])


class SqlBook(RowBook):
    """The :class:`Book` a command sees: SQL on the writer's connection, inside its savepoint.

    Each account's status and balance are read once per command and kept up to date
    by ``move``, so a transfer reads two rows, not five.
    """

    def __init__(self, conn: Conn, key: str, seq: int) -> None:
        self.conn, self.key, self.seq = conn, key, seq
        self._rows: dict[str, list[Any]] = {}

    def _one(self, sql: str, *args: object) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def _row(self, account: str) -> list[Any]:
        return account_row(self.conn, self._rows, account)

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


def canonical(record: dict[str, Any]) -> str:
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


def outcome_of(row: tuple[Any, ...]) -> Outcome:
    """The :class:`Outcome` of one row of :data:`OUTCOME_SQL`."""
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


OUTCOME_SQL = "SELECT seq, key, record, ok, outcome, at FROM commands"
