"""docs/bank.md, the ledger on PostgreSQL: which schema becomes a ledger.

An empty schema is a new ledger only with ``--create`` (as an empty file is);
a schema that holds other tables is refused, and nothing is written to it.
Against the private PostgreSQL server of ``conftest.pg_server``.
"""

from __future__ import annotations

import secrets

import pytest

from netlet.apps.bank import Ledger
from netlet.errors import ConfigError
from tests.apps.bank.bank_server import netlet
from tests.apps.bank.conftest import raw_sql
from tests.apps.bank.pgserver import PgServer
from tests.apps.bank.test_ledger_file import _refused


def _schema(pg_server: PgServer, *setup: str) -> tuple[str, str]:
    """A new schema, set up with ``setup`` (``{s}`` is its name); its name and ledger URL."""
    name = f"s{secrets.token_hex(4)}"
    raw_sql(pg_server.url, f"CREATE SCHEMA {name}", *(sql.format(s=name) for sql in setup))
    return name, f"{pg_server.url}?options=-csearch_path%3D{name}"


def _tables(pg_server: PgServer, schema: str) -> set[str]:
    rows = raw_sql(pg_server.url, "SELECT table_name FROM information_schema.tables "
                                  f"WHERE table_schema = '{schema}'")
    return {str(row[0]) for row in rows}


@pytest.mark.timeout(60)
def test_an_empty_schema_needs_create(pg_server: PgServer) -> None:
    schema, url = _schema(pg_server)
    with pytest.raises(ConfigError, match=r"empty, not a ledger.*--create"):
        Ledger(url)
    assert _tables(pg_server, schema) == set()  # the refusal wrote nothing
    Ledger(url, create=True).close()
    assert "commands" in _tables(pg_server, schema)


@pytest.mark.timeout(60)
def test_a_schema_with_other_tables_is_refused_untouched(pg_server: PgServer) -> None:
    schema, url = _schema(pg_server, "CREATE TABLE {s}.customers (id int)",
                          "INSERT INTO {s}.customers VALUES (1)")
    for create in (False, True):
        with pytest.raises(ConfigError, match="holds tables but is not a bank ledger"):
            Ledger(url, create=create)
    _refused(netlet("bank", "audit", "--db", url), "no ledger in schema")
    assert _tables(pg_server, schema) == {"customers"}
    assert raw_sql(url, "SELECT id FROM customers") == [(1,)]
