"""Where a ledger keeps its books: the storage seam, and its SQLite side.

The ledger's rules (commands, idempotency, the fence, the hash chain, group
commit) are written once, in ``_ledger``, against a :class:`Store`: how to
connect, begin a batch and a read, what to do after a commit, how to audit and
how to let go. Two stores exist. :class:`SqliteStore` is one file and one
writer: an exclusive ``flock`` on the file (``_ledgerfile``) makes this process
the only one that writes it, so the writer thread may keep the head of the hash
chain in memory and the PIN reservations in memory (``_pinguard``).
``_pgstore.PostgresStore`` is a PostgreSQL database that several front-ends
share: there the head is read under a table lock at the start of every batch,
and the PIN reservations are rows (``_pgpins``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from netlet.apps.bank._journal import AuditReport, HeadFile, audit, audit_file, prepare
from netlet.apps.bank._ledgerfile import LedgerFile, open_ledger_file
from netlet.apps.bank._records import Conn

__all__ = ["PinGate", "SqliteStore", "Store", "audit_ledger", "is_postgres", "open_store"]

Head = tuple[int, str]
"""The last journaled command's ``(seq, chain)``."""


class PinGate(Protocol):
    """PIN attempts decided in the database (PostgreSQL), instead of ``_pinguard``'s memory."""

    checks: int

    def check(self, account: str, pin: str, now: float) -> bool:
        """True for the right PIN; else WrongPin or CardLocked (see ``Ledger.check_pin``)."""

    def close(self) -> None: ...


class Store(Protocol):
    """One ledger's storage, as the ledger's rules need it."""

    location: str
    """The ledger as shown in messages (a path, or a URL without its password)."""
    errors: tuple[type[Exception], ...]
    """What the database's driver raises."""
    pins: PinGate | None
    """None: the ledger keeps PIN reservations in memory (one process per ledger)."""
    pipelined: bool
    """Whether statements are sent ahead (``pipeline``): then a connection whose batch
    failed may still owe answers, and is replaced rather than reused."""

    def pipeline(self, conn: Conn) -> AbstractContextManager[Callable[[], None]]:
        """A batch's statements, sent without waiting where no answer is needed; it gives
        ``flush()``, which waits until everything sent so far is done (or raises)."""

    def open(self, create: bool) -> tuple[Conn, Head]:
        """Check (or create) the ledger; the writer's connection and the chain's head.

        Raises NotALedger, LedgerDamaged or LedgerInUse (ConfigError) having changed nothing.
        """

    def connect_reader(self) -> Conn: ...

    def connect_writer(self) -> Conn:
        """A new connection for the writer, when the old one was lost (``broken``)."""

    def begin_write(self, conn: Conn, ahead: Callable[[], None] = ...) -> Head | None:
        """Begin the writer's transaction; the head if another process may have moved it.

        ``ahead`` sends the batch's first reads, after the write lock is taken and before
        the head is waited for (on PostgreSQL: the same round trip).
        """

    def any_of(self, column: str, values: list[str]) -> tuple[str, Any]:
        """SQL that ``column`` is one of ``values``, and its parameters."""

    def write_many(self, conn: Conn, table: str, rows: list[tuple[Any, ...]]) -> None:
        """Write ``rows`` in as few statements as the database allows: ``commands`` and
        ``entries`` rows (their columns in order, ``entries`` without its id), or
        ``balances``: ``(change, account)`` added to each account's balance."""

    def begin_read(self, conn: Conn) -> None:
        """Begin a read transaction: one snapshot for several statements."""

    def committed(self, head: Head) -> None:
        """After each commit of the writer, with the head it left."""

    def audit(self, conn: Conn) -> AuditReport:
        """``_journal.audit`` on ``conn`` (a reader), with what this store knows besides."""

    def retryable(self, exc: BaseException) -> bool:
        """Whether a failed batch may simply run again (a serialization failure)."""

    def broken(self, conn: Conn) -> bool:
        """Whether ``conn`` is lost (the server went away) and must be replaced."""

    def close(self, *, discard: bool) -> None: ...


def is_postgres(location: str) -> bool:
    """Whether ``--db`` names a PostgreSQL database rather than an SQLite file."""
    return location.startswith(("postgresql://", "postgres://"))


def open_store(location: str | os.PathLike[str], *, max_pin_attempts: int,
               lock_seconds: float) -> Store:
    """The store for ``location``: a PostgreSQL URL, or the path of an SQLite file."""
    text = os.fspath(location)
    if is_postgres(text):
        from netlet.apps.bank._pgstore import PostgresStore  # psycopg: an optional extra

        return PostgresStore(text, max_pin_attempts=max_pin_attempts, lock_seconds=lock_seconds)
    return SqliteStore(text)


def audit_ledger(location: str) -> AuditReport:
    """Audit the ledger at ``location`` read-only: safe while banks run on it."""
    if is_postgres(location):
        from netlet.apps.bank._pgstore import audit_url

        return audit_url(location)
    return audit_file(location)


def _nothing() -> None:
    pass


_SQLITE_MANY = {
    "commands": "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "entries": "INSERT INTO entries(seq, account, amount, counterparty) VALUES (?, ?, ?, ?)",
    "balances": "UPDATE accounts SET balance = balance + ? WHERE account=?",
}


class SqliteStore:
    """The ledger in one SQLite file (WAL, ``synchronous=FULL``), held by this process alone."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    pins: PinGate | None = None
    pipelined = False

    def __init__(self, path: str) -> None:
        self.location = self.path = path
        self._file: LedgerFile | None = None
        self._head_file = HeadFile(path)
        self._noted: Head = (0, "")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None,
                               check_same_thread=False)

    def open(self, create: bool) -> tuple[Conn, Head]:
        self._file = file = open_ledger_file(self.path)  # one process per ledger: refused here
        try:
            conn = self._connect()
            try:
                head = prepare(conn, self.path, created=file.created, create=create,
                               head=self._head_file)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            file.release(remove=file.created)  # a refused start leaves nothing
            raise
        self._noted = head
        return conn, head

    def connect_reader(self) -> Conn:
        conn = self._connect()
        conn.execute("PRAGMA query_only=ON")
        return conn

    def connect_writer(self) -> Conn:
        return self._connect()

    @contextlib.contextmanager
    def pipeline(self, conn: Conn) -> Iterator[Callable[[], None]]:
        yield _nothing  # an embedded database: every statement is done when it returns

    def begin_write(self, conn: Conn, ahead: Callable[[], None] = _nothing) -> Head | None:
        conn.execute("BEGIN IMMEDIATE")
        ahead()
        return None  # this process is the only writer: the ledger's own head is right

    def any_of(self, column: str, values: list[str]) -> tuple[str, Any]:
        return f"{column} IN ({','.join('?' * len(values))})", values

    def write_many(self, conn: Conn, table: str, rows: list[tuple[Any, ...]]) -> None:
        conn.executemany(_SQLITE_MANY[table], rows)

    def begin_read(self, conn: Conn) -> None:
        conn.execute("BEGIN")

    def committed(self, head: Head) -> None:
        """Tell the head file what is committed now (see ``_journal``); best effort."""
        if head != self._noted:
            try:
                self._head_file.write(*head)
                self._noted = head
            except OSError:
                pass  # the check it allows is lost, not the commit

    def audit(self, conn: Conn) -> AuditReport:
        noted = self._head_file.read()  # before the snapshot: it never leads what it sees
        conn.execute("BEGIN")
        return audit(conn, noted)

    def retryable(self, exc: BaseException) -> bool:
        return False  # one writer: nobody to conflict with

    def broken(self, conn: Conn) -> bool:
        return False

    def close(self, *, discard: bool) -> None:
        """Let go of the file; ``discard``: if this process created it, remove it too."""
        self._head_file.close()
        file, self._file = self._file, None
        if file is None:
            return
        discard = discard and file.created
        file.release(remove=discard)
        if discard:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._head_file.path)


