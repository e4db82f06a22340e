"""The head's durable state in SQLite: submitted tasks, their results, names.

With ``netlet head --state PATH`` every task is on disk before its submit is
acknowledged, and stays until its client acknowledged the result; a head
killed and restarted on the same file loses no submitted task. WAL with
``synchronous=NORMAL`` survives the process dying at any point (the OS still
holds what was written); surviving a power cut would need ``FULL``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from netlet.codec import RemoteRef
from netlet.errors import CallCancelled, ConfigError, NetletError, WorkerLost

if TYPE_CHECKING:
    from netlet.cluster._head import Task

__all__ = ["HeadStore", "StoredTask"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, client TEXT NOT NULL, fn TEXT NOT NULL, body BLOB NOT NULL,
    retries INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL, result BLOB);
CREATE TABLE IF NOT EXISTS functions (id TEXT PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, node TEXT NOT NULL, ref BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS actors (name TEXT PRIMARY KEY, spec BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class StoredTask:
    id: str
    client: str
    fn: str
    body: bytes
    retries: int
    attempts: int
    state: str
    result: tuple[Any, ...] | None


_HEAD_ERRORS: dict[str, type[NetletError]] = {
    cls.__name__: cls for cls in (WorkerLost, ConfigError, CallCancelled)}
"""The errors a head makes itself (a task's own errors travel encoded in its body)."""


def _pack_result(result: tuple[str, bool, bytes | None, BaseException | None]) -> bytes:
    tid, ok, body, error = result
    # A head-made error is kept as its type's name and its text.
    kept = None if error is None else [type(error).__name__, str(error)]
    return msgpack.packb([tid, ok, body, kept])  # type: ignore[no-any-return]


def _unpack_result(data: bytes) -> tuple[Any, ...]:
    """A stored result, its error made again (PROTOCOL.md 16.4: an exception, not text)."""
    tid, ok, body, error = msgpack.unpackb(data)
    if isinstance(error, str):  # written by an older head: only WorkerLost was kept so
        error = WorkerLost(error)
    elif isinstance(error, list) and len(error) == 2:
        error = _HEAD_ERRORS.get(str(error[0]), WorkerLost)(str(error[1]))
    return (tid, ok, body, error)


def _own_private_file(path: str) -> None:
    """Create ``path`` 0600, or check an existing one is ours and make it 0600.

    It holds every queued task's arguments and every result (another local user
    must not read them), and the queue a restarted head runs (a file another
    user planted, in a shared directory, must not become it). SQLite keeps the
    newest writes in the -wal file and uses a -wal or -shm it finds as it is:
    those are made here, 0600, or must be ours too.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        st = os.fstat(fd)
        _check_ours(path, st)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for side in (path + "-wal", path + "-shm"):
        try:  # made now, it is ours: a planted one cannot take its place in a sticky dir
            os.close(os.open(side, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except FileExistsError:
            _check_ours(side, os.lstat(side))
            os.chmod(side, 0o600)


def _check_ours(path: str, st: os.stat_result) -> None:
    if st.st_uid != os.getuid():
        raise ConfigError(f"{path} belongs to uid {st.st_uid}, not to us (uid "
                          f"{os.getuid()}): another user could read or change the queue; "
                          "give a --state file of your own")


class HeadStore:
    """Synchronous SQLite writes from the head's loop; each call is one transaction."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        _own_private_file(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _tx(self, statements: Iterable[tuple[str, Any]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for sql, args in statements:
                    if isinstance(args, list):
                        self._db.executemany(sql, args)
                    else:
                        self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add_tasks(self, tasks: list[Task], functions: dict[str, bytes]) -> None:
        self._tx([
            ("INSERT OR IGNORE INTO functions VALUES (?, ?)", list(functions.items())),
            ("INSERT OR IGNORE INTO tasks (id, client, fn, body, retries, attempts, state)"
             " VALUES (?, ?, ?, ?, ?, ?, 'queued')",
             [(t.id, t.client, t.fn, t.body, t.retries, t.attempts) for t in tasks]),
        ])

    def finish(self, tid: str, result: tuple[str, bool, bytes | None, BaseException | None]
               ) -> None:
        self._tx([("UPDATE tasks SET state='done', result=? WHERE id=?",
                   (_pack_result(result), tid))])

    def forget(self, tids: list[str]) -> None:
        self._tx([("DELETE FROM tasks WHERE id=?", [(t,) for t in tids])])

    def put_name(self, name: str, ref: RemoteRef, node: str) -> None:
        blob = msgpack.packb([ref.node, ref.address, ref.name, ref.kind])
        self._tx([("INSERT OR REPLACE INTO names VALUES (?, ?, ?)", (name, node, blob))])

    def drop_name(self, name: str) -> None:
        self._tx([("DELETE FROM names WHERE name=?", (name,))])

    def put_actor(self, name: str, cls: str, body: bytes, restart: str | None,
                  functions: dict[str, bytes], worker: str) -> None:
        """What ``spawn`` placed, so a restarted head can place it again (its restart policy)."""
        blob = msgpack.packb([cls, body, restart, functions, worker])
        self._tx([("INSERT OR REPLACE INTO actors VALUES (?, ?)", (name, blob))])

    def drop_actor(self, name: str) -> None:
        self._tx([("DELETE FROM actors WHERE name=?", (name,))])

    def actors(self) -> list[tuple[str, str, bytes, str | None, dict[str, bytes], str]]:
        """``(name, cls, body, restart, functions, worker)`` of every spawned actor."""
        with self._lock:
            rows = self._db.execute("SELECT name, spec FROM actors").fetchall()
        return [(r[0], *msgpack.unpackb(r[1])) for r in rows]

    def tasks(self) -> list[StoredTask]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, client, fn, body, retries, attempts, state, result FROM tasks"
                " ORDER BY rowid").fetchall()
        return [StoredTask(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6],
                           _unpack_result(r[7]) if r[7] is not None else None)
                for r in rows]

    def epoch_floor(self) -> int:
        """No worker epoch handed out so far (by any run of the head) is above this."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='epochs'").fetchone()
        return int(row[0]) if row else 0

    def reserve_epochs(self, upto: int) -> None:
        """The head may hand out epochs up to ``upto``; a restarted head starts above."""
        self._tx([("INSERT INTO meta VALUES ('epochs', ?) ON CONFLICT(key) DO UPDATE "
                   "SET value = max(value, excluded.value)", [(upto,)])])

    def functions(self) -> dict[str, bytes]:
        with self._lock:
            rows = self._db.execute("SELECT id, payload FROM functions").fetchall()
        return {r[0]: bytes(r[1]) for r in rows}

    def names(self) -> list[tuple[str, RemoteRef, str]]:
        with self._lock:
            rows = self._db.execute("SELECT name, ref, node FROM names").fetchall()
        return [(r[0], RemoteRef(*msgpack.unpackb(r[1])), r[2]) for r in rows]
