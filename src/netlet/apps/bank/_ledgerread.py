"""The ledger's reads: outcomes, the journal, balances, statements, the account list, audit.

Each runs on a connection of the reader pool, never on the writer's, so reads
wait for no commit (WAL on SQLite; MVCC snapshots on PostgreSQL).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from netlet.apps.bank._commands import InvalidCommand, UnknownAccount
from netlet.apps.bank._journal import AuditReport
from netlet.apps.bank._records import (
    OUTCOME_SQL,
    AccountInfo,
    Conn,
    Outcome,
    StatementEntry,
    outcome_of,
)
from netlet.apps.bank._store import Store

__all__ = ["LedgerReads"]


class LedgerReads:
    """The reading half of :class:`~netlet.apps.bank._ledger.Ledger`."""

    _store: Store

    def _reader(self) -> AbstractContextManager[Conn]:
        raise NotImplementedError

    def outcome(self, idem_key: str) -> Outcome | None:
        """What happened under ``idem_key``, or None if the ledger never saw it."""
        with self._reader() as conn:
            row = conn.execute(f"{OUTCOME_SQL} WHERE key=?", (idem_key,)).fetchone()
        return None if row is None else outcome_of(row)

    def journal(self, after: int = 0, limit: int = 1000) -> list[Outcome]:
        """Journaled commands with ``seq`` > ``after``, oldest first, for replay."""
        with self._reader() as conn:
            rows = conn.execute(
                f"{OUTCOME_SQL} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [outcome_of(row) for row in rows]

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
            self._store.begin_read(conn)
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
        with self._reader() as conn:
            return self._store.audit(conn)
