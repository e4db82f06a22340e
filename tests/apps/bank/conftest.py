"""The bank's fixtures: every ledger test runs on SQLite and on PostgreSQL.

``pg_server`` is one private PostgreSQL server for the whole session
(``pgserver.PgServer``: initdb in a temporary directory, run as an
unprivileged user, on a free loopback port). ``backend`` is ``"sqlite"`` or
``"postgresql"``; ``new_db()`` gives the location of a new, empty ledger of
that backend (a file path, or a URL with a schema of its own), for
``Ledger(...)`` and ``bank serve --db``. Without PostgreSQL's binaries the
PostgreSQL half is skipped, saying how to install them (``make test`` does).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.apps.bank.pgserver import PgServer, pg_bin


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                    "`make test` installs it, or apt-get install postgresql")
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_db(backend: str, tmp_path: Path,
           request: pytest.FixtureRequest) -> Callable[[], str]:
    if backend == "sqlite":
        names = iter(range(1, 1000))
        return lambda: str(tmp_path / f"bank{next(names)}.db")
    server: PgServer = request.getfixturevalue("pg_server")
    return server.new_db


def raw_sql(location: str, *statements: str) -> list[tuple[object, ...]]:
    """Run ``statements`` on the ledger's database behind its back (as an intruder
    would); the rows of the last one, if it returns any."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                cursor = conn.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
            return rows
    conn2 = sqlite3.connect(location, isolation_level=None)
    try:
        rows = []
        for statement in statements:
            rows = conn2.execute(statement).fetchall()
        return rows
    finally:
        conn2.close()


@contextlib.contextmanager
def hold_writer(location: str) -> Iterator[None]:
    """Take the ledger's write lock from another connection (a slow disk, a long commit):
    its writer waits until the block ends."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE commands IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
        return
    holder = sqlite3.connect(location, isolation_level=None, timeout=1)
    try:
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
    finally:
        holder.close()
