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
