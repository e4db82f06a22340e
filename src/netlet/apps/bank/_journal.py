"""The ledger's SQLite file: schema, checks at start, the hash chain and the audit.

**The hash chain.** Every journaled command carries ``chain``, the SHA-256 of
the previous command's ``chain`` and this command's row (seq, key, kind,
record, ok, outcome, time), so editing or deleting any command in the middle
breaks every link after it. Entries are tied to their command: the audit
recomputes the two entries each successful movement must have. After every
commit the writer also notes the last ``seq`` and ``chain`` in the *head
file* (``<db>-head``, written without fsync: it may lag after a power loss,
never lead), so a journal that lost committed commands at its end (a
truncated ``-wal``, an older copy of the file) is caught too: the ledger ends
before the head, or differs at it.

**At start** the file must be empty and new (or ``create`` is given), or a
ledger that passes SQLite's ``quick_check``, matches the head file and whose
last links recompute; anything else is refused with a clear message
(:class:`NotALedger`, :class:`LedgerDamaged`) and left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sqlite3
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlet.apps.bank._commands import CASH, Reversal, command_from_record
from netlet.apps.bank._ledgerfile import LedgerDamaged, NotALedger
from netlet.apps.bank._records import Conn
from netlet.codec import record
from netlet.errors import ConfigError

__all__ = [
    "SCHEMA_VERSION", "AuditReport", "HeadFile", "audit", "audit_file", "check_tail", "link",
    "prepare",
]

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY, owner TEXT NOT NULL, pin_hash TEXT NOT NULL,
    status TEXT NOT NULL,                  -- open, closed or system
    balance INTEGER NOT NULL DEFAULT 0,    -- cache of SUM(entries.amount)
    opened_at REAL NOT NULL,
    failed_pins INTEGER NOT NULL DEFAULT 0, locked_until REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS commands (
    seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    record TEXT NOT NULL,                  -- canonical JSON of Command.to_record()
    ok INTEGER NOT NULL, outcome TEXT NOT NULL, at REAL NOT NULL,
    chain TEXT NOT NULL DEFAULT '');       -- hash chain: see _journal
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, account TEXT NOT NULL,
    amount INTEGER NOT NULL,               -- credit > 0, debit < 0
    counterparty TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_by_account ON entries(account, id);
CREATE TABLE IF NOT EXISTS reversals (original_key TEXT PRIMARY KEY, reversal_key TEXT NOT NULL);
"""
_ROW_SQL = "SELECT seq, key, kind, record, ok, outcome, at, chain FROM commands"
_TAIL = 1000  # links recomputed at every start
_MAX_REPORTED = 20  # violations of one kind listed by the audit


def link(prev: str, seq: int, key: str, kind: str, record: str, ok: int, outcome: str,
         at: float) -> str:
    """The chain value of one command row, given the previous row's."""
    text = f"{prev}\n{seq}\n{key}\n{kind}\n{record}\n{int(ok)}\n{outcome}\n{float(at)!r}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class HeadFile:
    """``<db>-head``: the last committed ``seq`` and ``chain``, rewritten after each commit."""

    def __init__(self, db: str) -> None:
        self.path = db + "-head"
        self._fd = -1

    def read(self) -> tuple[int, str] | None:
        try:
            with open(self.path) as f:
                text = f.read(200)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerDamaged(f"cannot read {self.path!r}: {exc.strerror or exc}") from None
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 64:
            raise LedgerDamaged(f"{self.path!r} is not a ledger head file ({text[:40]!r}); "
                                "if the ledger itself is sound, remove it and start again")
        return int(parts[0]), parts[1]

    def write(self, seq: int, chain: str) -> None:
        """Overwrite in place (a fixed-size record): one syscall, no fsync."""
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.pwrite(self._fd, f"{seq:020d} {chain}\n".encode("ascii"), 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def prepare(conn: sqlite3.Connection, path: str, *, created: bool, create: bool,
            head: HeadFile) -> tuple[int, str]:
    """Check (or create) the ledger in ``conn``; its last ``(seq, chain)``.

    Raises NotALedger or LedgerDamaged, having changed nothing, when the file
    is not a sound ledger; an existing empty file needs ``create``.
    """
    if not created and os.path.getsize(path) == 0 and not create:
        raise NotALedger(f"{path!r} is an empty file, not a ledger; to start a new, empty "
                         "bank in it, pass --create")
    fresh, version = _inspect(conn, path)
    if fresh and not created and not create:
        raise NotALedger(f"{path!r} is an empty database, not a ledger; to start a new, "
                         "empty bank in it, pass --create")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise ConfigError(f"{path!r} cannot use a write-ahead log (journal_mode={mode})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version == 1:
            _chain_all(conn)  # schema 1 had no chain: link what is there
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            "INSERT OR IGNORE INTO accounts(account, owner, pin_hash, status, opened_at)"
            " VALUES (?, 'the bank', '', 'system', ?)", (CASH, time.time()))
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        last = check_tail(conn, path, head.read())
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return last


def _inspect(conn: sqlite3.Connection, path: str) -> tuple[bool, int]:
    """Whether the database is new (no tables) and its schema version; refuse the rest."""
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        check = [row[0] for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise NotALedger(f"{path!r} is not a bank ledger (not an SQLite database)") from None
        raise LedgerDamaged(f"the ledger {path!r} is damaged ({exc}); restore it from a "
                            "backup") from None
    if check != ["ok"]:
        raise LedgerDamaged(f"the ledger {path!r} is damaged (SQLite integrity check: "
                            f"{'; '.join(check[:3])}); restore it from a backup")
    fresh = not tables and version == 0
    if not fresh and ({"accounts", "commands", "entries"} - tables or version == 0):
        raise NotALedger(f"{path!r} is an SQLite database but not a bank ledger")
    if version > SCHEMA_VERSION:
        raise ConfigError(f"{path!r} has ledger schema {version}, newer than this code")
    return fresh, version


def audit_file(path: str) -> AuditReport:
    """:func:`audit` of the ledger at ``path``, read-only: safe while a bank runs on it."""
    if not os.path.isfile(path):
        raise ConfigError(f"there is no ledger at {path!r}")
    if os.path.getsize(path) == 0:
        raise NotALedger(f"{path!r} is an empty file, not a ledger")
    noted = HeadFile(path).read()  # before the snapshot: it never leads what it sees
    conn = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro",
                           uri=True, timeout=30)
    try:
        fresh, version = _inspect(conn, path)
        if fresh or version < SCHEMA_VERSION:
            raise NotALedger(f"{path!r} is not a ledger of this version; start a bank on it "
                             "once to bring it up to date")
        conn.execute("BEGIN")
        return audit(conn, noted)
    except sqlite3.DatabaseError as exc:
        raise LedgerDamaged(f"the ledger {path!r} is damaged ({exc})") from None
    finally:
        conn.close()


def _chain_all(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE commands ADD COLUMN chain TEXT NOT NULL DEFAULT ''")
    prev = ""
    rows = conn.execute(_ROW_SQL + " ORDER BY seq").fetchall()
    for row in rows:
        prev = link(prev, *row[:7])
        conn.execute("UPDATE commands SET chain=? WHERE seq=?", (prev, row[0]))


def check_tail(conn: Conn, path: str,
                noted: tuple[int, str] | None) -> tuple[int, str]:
    """Recompute the last links and compare with the head file; the last ``(seq, chain)``."""
    rows = conn.execute(_ROW_SQL + " ORDER BY seq DESC LIMIT ?", (_TAIL + 1,)).fetchall()
    rows.reverse()
    for before, row in itertools.pairwise(rows):
        if row[0] != before[0] + 1 or link(before[7], *row[:7]) != row[7]:
            raise LedgerDamaged(f"the ledger {path!r} is damaged: its hash chain breaks at "
                                f"command {row[0]} (edited or missing commands); run "
                                "`netlet bank audit` and restore it from a backup")
    if rows:  # and the tail's entries: the ones its commands must have, no others
        first = rows[1][0] if len(rows) > 1 else rows[0][0]
        found: dict[int, Counter[tuple[str, int]]] = {}
        for seq, account, amount in conn.execute(
                "SELECT seq, account, amount FROM entries WHERE seq >= ?", (first,)):
            found.setdefault(seq, Counter())[(account, amount)] += 1
        v = _Violations()
        for row in rows[1:] if len(rows) > 1 else rows:
            seq, key, kind, record, ok = row[:5]
            expected = _expected_entries(seq, key, kind, record, ok,
                                         lambda k: _movement_of(conn, k), v)
            if v or found.pop(seq, Counter()) != expected:
                raise LedgerDamaged(f"the ledger {path!r} is damaged: the entries of command "
                                    f"{seq} do not match it; run `netlet bank audit` and "
                                    "restore it from a backup")
        if found:
            raise LedgerDamaged(f"the ledger {path!r} is damaged: entries belong to no "
                                "command; run `netlet bank audit` and restore it from a backup")
    last = (rows[-1][0], rows[-1][7]) if rows else (0, "")
    if noted is not None:
        seq, chain = noted
        if seq > last[0]:
            raise LedgerDamaged(
                f"the ledger {path!r} ends at command {last[0]}, but command {seq} was "
                "committed (see its -head file): acknowledged commands are missing (a "
                "truncated -wal, or an older copy of the file); restore it from a backup")
        row = conn.execute("SELECT chain FROM commands WHERE seq=?", (seq,)).fetchone()
        if seq and (row is None or row[0] != chain):
            raise LedgerDamaged(f"the ledger {path!r} differs at command {seq} from what was "
                                "committed (see its -head file); restore it from a backup")
    return last


@record(109)
@dataclass(frozen=True, slots=True)
class AuditReport:
    """``ok`` when the journal balances, nobody is overdrawn, the caches agree and the
    hash chain holds."""

    ok: bool
    n_entries: int
    n_commands: int
    total: int
    violations: tuple[str, ...]


class _Violations(list[str]):
    def __init__(self) -> None:
        super().__init__()
        self.kinds: Counter[str] = Counter()

    def add(self, kind: str, text: str) -> None:
        self.kinds[kind] += 1
        if self.kinds[kind] <= _MAX_REPORTED:
            self.append(text)
        elif self.kinds[kind] == _MAX_REPORTED + 1:
            self.append(f"(more {kind} violations not listed)")


def audit(conn: Conn, noted: tuple[int, str] | None) -> AuditReport:
    """Recompute every balance and link from the journal in ``conn`` (inside a read
    transaction) and check the books; ``noted`` is the head file's record."""
    v = _Violations()
    sums: dict[str, int] = {}
    by_seq: dict[int, Counter[tuple[str, int]]] = {}
    n_entries = total = 0
    for seq, account, amount in conn.execute("SELECT seq, account, amount FROM entries"):
        by_seq.setdefault(seq, Counter())[(account, amount)] += 1
        total += amount
        n_entries += 1
        sums[account] = sums.get(account, 0) + amount
    for seq, moved in by_seq.items():
        running = sum(amount * n for (_, amount), n in moved.items())
        if running:
            v.add("sum", f"transaction {seq} sums to {running}, not 0")
    for account, status, cached in conn.execute("SELECT account, status, balance FROM accounts"):
        journal = sums.pop(account, 0)
        if cached != journal:
            v.add("cache", f"{account}: cached balance {cached} != journal {journal}")
        if status != "system" and journal < 0:
            v.add("negative", f"{account}: negative balance {journal}")
    for account in sorted(sums):
        v.add("account", f"entries for unknown account {account!r}")
    prev, last_seq, n_commands = "", 0, 0
    movements: dict[str, tuple[str, str, int]] = {}
    for row in conn.execute(_ROW_SQL + " ORDER BY seq"):
        seq, key, kind, record, ok = row[:5]
        n_commands += 1
        if seq != last_seq + 1:
            v.add("chain", f"commands {last_seq + 1} to {seq - 1} are missing")
        if link(prev, *row[:7]) != row[7]:
            v.add("chain", f"command {seq} ({key!r}) does not match the hash chain: edited, "
                  "or an earlier one is missing")
        prev, last_seq = row[7], seq
        if ok and kind in ("Deposit", "Withdraw", "Transfer"):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                movements[key] = _movement_of_record(record)
        expected = _expected_entries(seq, key, kind, record, ok, movements.get, v)
        found = by_seq.pop(seq, Counter())
        if found != expected:
            v.add("entries", f"command {seq} ({key!r}) has entries {dict(found)}, "
                  f"not {dict(expected)}")
    for seq in sorted(by_seq):
        v.add("entries", f"entries of transaction {seq} belong to no command")
    if noted is not None and (noted[0] > last_seq or (
            noted[0] and conn.execute("SELECT chain FROM commands WHERE seq=?",
                                      (noted[0],)).fetchone() != (noted[1],))):
        v.add("head", f"command {noted[0]} was committed (the -head file) but the journal "
              f"{'ends at ' + str(last_seq) if noted[0] > last_seq else 'differs there'}: "
              "acknowledged commands are missing or changed")
    if total:
        v.add("sum", f"the journal sums to {total}, not 0")
    return AuditReport(not v, n_entries, n_commands, total, tuple(v))


def _movement_of_record(record: str) -> tuple[str, str, int]:
    data = json.loads(record)
    if data.get("type") == "Transfer":
        return data["src"], data["dst"], data["amount"]
    if data.get("type") == "Deposit":
        return CASH, data["account"], data["amount"]
    return data["account"], CASH, data["amount"]


def _movement_of(conn: Conn, key: str) -> tuple[str, str, int] | None:
    row = conn.execute("SELECT record FROM commands WHERE key=? AND ok=1", (key,)).fetchone()
    try:
        command: Any = None if row is None else command_from_record(json.loads(row[0]))
    except (ValueError, TypeError):
        return None
    return command.movement() if hasattr(command, "movement") else None


def _expected_entries(seq: int, key: str, kind: str, record: str, ok: int,
                      movement_of: Callable[[str], tuple[str, str, int] | None],
                      v: _Violations) -> Counter[tuple[str, int]]:
    """The entries command ``seq`` must have: two per successful movement, else none.

    ``movement_of(key)`` is the ``(src, dst, amount)`` of an earlier movement (for a
    reversal); the audit's own walk records each one it passes in ``movements``.
    """
    if not ok or kind in ("OpenAccount", "CloseAccount", "Fence"):
        return Counter()
    try:
        command: Any = command_from_record(json.loads(record))
    except (ValueError, TypeError) as exc:
        v.add("record", f"command {seq} ({key!r}) has an unreadable record: {exc}")
        return Counter()
    if isinstance(command, Reversal):
        original = movement_of(command.original_key)
        if original is None:
            v.add("entries", f"reversal {seq} ({key!r}) reverses no earlier movement")
            return Counter()
        src, dst, amount = original[1], original[0], original[2]
    else:
        src, dst, amount = command.movement()
    return Counter({(src, -amount): 1, (dst, amount): 1})
