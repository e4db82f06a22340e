"""The prime search's state file: finished chunks in SQLite, so a run can resume.

Finished chunks are recorded in a small SQLite file (each chunk's count and
which host and pid did it), committed together once per progress interval
(a quarter of a second by default), and all of them when a run fails or is
interrupted; so a coordinator that dies loses at most the chunks in flight and
those of its last interval. A search that ends within its first interval never
writes the file (creating it costs milliseconds). ``resume=True`` opens the file of an
earlier, unfinished run of the same search (same range, method, output file
and chunk size) and submits only the chunks it does not list: the answer is
the same, and finished chunks are not computed again. The file is removed after
a successful run unless ``keep_state``. A run that finds an unfinished run's
file refuses to start unless told to resume it, rather than throw its work away.

The schema, its version and the refusal to overwrite an unfinished run change
with the file's format, not with how chunks are scheduled; the coordinator
only opens a ``ChunkLog``, records rows and flushes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from array import array
from pathlib import Path
from typing import Final

from netlet.apps.primes._config import SearchConfig
from netlet.clock import REAL_CLOCK, Clock
from netlet.errors import ConfigError

__all__ = ["ChunkLog", "check_state"]

STATE_VERSION: Final = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    idx INTEGER PRIMARY KEY, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    count INTEGER NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, seconds REAL NOT NULL
);
"""


_TABLES = {"meta", "chunks"}
"""The tables of a state file (``_SCHEMA``): a file with others is not one."""


class ChunkLog:
    """The finished chunks of one search, in SQLite (WAL, one commit per ``commit_every``).

    A fresh run's file is created at its first commit, not up front: creating it
    costs milliseconds (SQLite syncs the new file and its switch to WAL), which a
    short search would otherwise spend before its first chunk and again on
    removing the file.
    """

    def __init__(self, path: Path, params: dict[str, str], resume: bool, *,
                 check_chunk: bool, commit_every: float = 0.0,
                 clock: Clock = REAL_CLOCK) -> None:
        self.path = path
        self.commit_every = commit_every
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._rows: list[tuple[int, int, int, int, str, int, float]] = []
        self._offset: int | None = None
        self._committed = clock.monotonic()
        _refuse_foreign(path)
        _refuse_not_state(path)
        if path.exists() and not resume:
            _refuse_unfinished(path)
            _remove(path)  # a finished run's kept state: a new run replaces it
        db = self._connect() if path.exists() else None
        stored = dict(db.execute("SELECT key, value FROM meta").fetchall()) if db else {}
        self.resumed = bool(stored)
        if stored:
            self._check(stored, params, check_chunk)
            self.meta = stored
        else:
            self.meta = {**params, "version": STATE_VERSION, "out_offset": "0"}
            if db is not None:  # an empty file someone left: fill it now
                self._create()

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.path)
            # WAL first: the schema and every commit after it then skip the fsyncs.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()
            raise ConfigError(f"{self.path} is not a prime-search state file ({e})") from None
        self._db = db
        return db

    def _create(self) -> sqlite3.Connection:
        db = self._db if self._db is not None else self._connect()
        with db:
            db.executemany("INSERT INTO meta VALUES (?, ?)", self.meta.items())
        return db

    def _writer(self) -> sqlite3.Connection:
        """The open database, created with this run's parameters if it is not yet."""
        return self._db if self._db is not None else self._create()

    def _check(self, stored: dict[str, str], params: dict[str, str], check_chunk: bool) -> None:
        if stored.get("version") != STATE_VERSION:
            self.close()
            raise ConfigError(f"{self.path} was written by another version of netlet; "
                              "delete it to start over")
        for key, value in params.items():
            if key == "chunk" and not check_chunk:
                continue  # the caller left the chunk size to us: the stored one holds
            if stored.get(key) != value:
                self.close()
                raise ConfigError(
                    f"{self.path} belongs to a different search ({key} was "
                    f"{stored.get(key) or 'unset'!s}, now {value or 'unset'}); "
                    "give the same parameters to resume it, or delete it to start over")

    def done(self) -> array[int]:
        """Indices of the finished chunks, ascending."""
        found = array("q")
        if self._db is not None:
            for (idx,) in self._db.execute("SELECT idx FROM chunks ORDER BY idx"):
                found.append(idx)
        return found

    def shares(self) -> list[tuple[str, int, int, int, int, float]]:
        """(host, pid, chunks, numbers, primes, seconds) per worker, from the finished chunks."""
        if self._db is None:
            return []
        return self._db.execute(
            "SELECT host, pid, COUNT(*), SUM(hi - lo), SUM(count), SUM(seconds) FROM chunks"
            " GROUP BY host, pid").fetchall()

    def record(self, rows: list[tuple[int, int, int, int, str, int, float]],
               out_offset: int | None) -> None:
        """Add finished chunks ``(idx, lo, hi, count, host, pid, seconds)``.

        They are committed together with those before them once ``commit_every``
        seconds have passed since the last commit (or the log was opened), or by
        ``flush``: a search shorter than that never writes its state file.
        """
        self._rows.extend(rows)
        if out_offset is not None:
            self._offset = out_offset
        if self._clock.monotonic() - self._committed >= self.commit_every:
            self.flush()

    def flush(self) -> None:
        """Commit the chunks recorded since the last commit, in one transaction."""
        self._committed = self._clock.monotonic()
        if not self._rows and self._offset is None:
            return
        db = self._writer()
        with db:
            db.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
                           self._rows)
            if self._offset is not None:
                db.execute("UPDATE meta SET value = ? WHERE key = 'out_offset'",
                           (str(self._offset),))
        self._rows, self._offset = [], None

    def finish(self) -> None:
        """Commit what is pending and mark the run finished: a later run may replace
        this file without --resume."""
        self.flush()
        db = self._writer()
        with db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('finished', '1')")

    def close(self, remove: bool = False) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        if remove:
            _remove(self.path)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def _refuse_not_state(path: Path) -> None:
    """A file at ``path`` that is neither empty nor a state file holds someone's data: a
    search must not add its tables to it, nor remove it when done."""
    try:
        if path.stat().st_size == 0:
            return
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in
                      db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except FileNotFoundError:
        return
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{path} is in the way and is not a prime-search state file ({e}); "
                          "move it, or give another --state") from None
    if not tables <= _TABLES:
        raise ConfigError(f"{path} is in the way and is not a prime-search state file (it "
                          f"holds tables {', '.join(sorted(tables - _TABLES))}); move it, or "
                          "give another --state")


def _refuse_unfinished(path: Path) -> None:
    """Raise ``ConfigError`` unless the state file at ``path`` records a finished run."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'finished'").fetchone()
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{path} is in the way and is not a prime-search state file ({e}); "
                          "move it, or give another --state") from None
    if row is None:
        raise ConfigError(
            f"an unfinished run of this search left its state in {path}: add --resume "
            "to continue it, or delete that file to start over")


def _refuse_foreign(path: Path) -> None:
    """A state file of another user (planted where we run) must not steer the run.

    It says which chunks are done and how long the --out file is (a resume cuts the
    file back to that length).
    """
    with contextlib.suppress(FileNotFoundError):
        owner = os.stat(path).st_uid
        if owner != os.getuid():
            raise ConfigError(f"{path} belongs to uid {owner}, not to us (uid {os.getuid()}): "
                              "another user's state cannot steer this search; move it, or "
                              "give another --state")


def check_state(config: SearchConfig) -> None:
    """Refuse now what ``PrimeSearch.run`` would: another run's unfinished state, no resume,
    another user's file.

    Lets a caller fail before it starts a cluster.
    """
    path = config.state_path()
    _refuse_foreign(path)
    _refuse_not_state(path)
    if path.exists() and not config.resume:
        _refuse_unfinished(path)
