"""Bad input to the bank's command line: refused clearly, before anything is sent.

Every test runs the real ``netlet`` commands against a real ``netlet bank
serve`` in a child process.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlet.apps.bank import BankClient
from tests._support import STEP, LineReader
from tests.apps.bank.bank_server import ENV, NETLET, BankProcess, free_port, netlet
from tests.security._spawn import Servers

PIN = "4321\n"


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankProcess]:
    with BankProcess(tmp_path / "bank.db") as proc:
        opened = netlet("bank", "open", "alice", "--bank", proc.address, "--pin-stdin",
                        stdin=PIN)
        assert opened.returncode == 0, opened.stderr
        yield proc


def _journal_size(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM commands").fetchone()[0])


@pytest.mark.timeout(60)
def test_an_empty_key_is_refused_not_replaced(bank: BankProcess) -> None:
    before = _journal_size(bank.db)
    for key in ("", "  "):
        r = netlet("atm", "--bank", bank.address, "--account", "alice", "--pin-stdin",
                   "deposit", "5", "--key", key, stdin=PIN)
        assert r.returncode == 2, r.stderr
        assert "empty key" in r.stderr
    assert _journal_size(bank.db) == before


@pytest.mark.timeout(60)
def test_no_terminal_and_no_pin_stdin_says_use_pin_stdin(bank: BankProcess) -> None:
    r = netlet("atm", "--bank", bank.address, "--account", "alice", "balance", stdin="")
    assert r.returncode == 2, r.stderr
    assert "--pin-stdin" in r.stderr
    assert "GetPassWarning" not in r.stderr
    opened = netlet("bank", "open", "bob", "--bank", bank.address, stdin="")
    assert opened.returncode == 2, opened.stderr
    assert "--pin-stdin" in opened.stderr
    interactive = netlet("atm", "--bank", bank.address, stdin="")
    assert interactive.returncode == 2, interactive.stderr
    assert "needs a terminal" in interactive.stderr


@pytest.mark.timeout(90)
def test_atm_options_are_accepted_after_the_subcommand(tmp_path: Path) -> None:
    key = tmp_path / "bank.key"
    made = netlet("keygen", key)
    assert made.returncode == 0, made.stderr
    with BankProcess(tmp_path / "bank.db", "--key-file", str(key)) as bank:
        opened = netlet("bank", "open", "alice", "--bank", bank.address, "--key-file", key,
                        "--pin-stdin", stdin=PIN)
        assert opened.returncode == 0, opened.stderr
        dep = netlet("atm", "deposit", "5", "--bank", bank.address, "--key-file", key,
                     "--account", "alice", "--pin-stdin", stdin=PIN)
        assert dep.returncode == 0, dep.stderr
        assert "balance 5.00" in dep.stdout
        swarm = netlet("atm", "swarm", "--bank", bank.address, "--key-file", key, "--atms", "2",
                       "--seconds", "1", "--accounts", "4", "--grace", "5", "--plain")
        assert swarm.returncode == 0, swarm.stderr


@pytest.mark.timeout(60)
def test_a_password_in_a_postgresql_url_is_never_printed(tmp_path: Path) -> None:
    """docs/bank.md: a password given in the URL anyway is never printed: in the user
    part, or as libpq's ``password`` parameter in the query (its name percent-encoded too)."""
    pytest.importorskip("psycopg")
    port = free_port()  # nothing listens: every command fails and says where it tried
    urls = [f"postgresql://bank:SECRET1@127.0.0.1:{port}/x",
            f"postgresql://bank@127.0.0.1:{port}/x?password=SECRET2&connect_timeout=2",
            f"postgresql://127.0.0.1:{port}/x?user=bank&pass%77ord=SECRET3",
            f"postgresql:///x?host=127.0.0.1&port={port}&PASSWORD=x&password=SECRET4"]
    for n, url in enumerate(urls, 1):
        for args in (("bank", "audit", "--db", url),
                     ("bank", "serve", "--listen", f"tcp://127.0.0.1:{free_port()}",
                      "--db", url)):
            r = netlet(*args)
            assert r.returncode == 1, r.stderr
            assert "127.0.0.1" in r.stderr, r.stderr  # it says which database it tried
            assert f"SECRET{n}" not in r.stdout + r.stderr, r.stderr


@pytest.mark.timeout(90)
def test_atms_find_the_bank_by_name_at_a_head(tmp_path: Path) -> None:
    """docs/bank.md: ``bank serve --head H`` registers the bank; ``netlet atm --head H
    [--name N]`` finds it there (keys: the head's per-user key, found by both)."""
    servers = Servers()
    try:
        head = servers.start("head", "--listen", "tcp://127.0.0.1:0")
        bank = servers.start("bank", "serve", "--listen", "tcp://127.0.0.1:0", "--db",
                             tmp_path / "bank.db", "--head", head.address, "--name", "bank2")
        opened = netlet("bank", "open", "alice", "--bank", bank.address, "--pin-stdin",
                        stdin=PIN)
        assert opened.returncode == 0, opened.stderr
        dep = netlet("atm", "--head", head.address, "--name", "bank2", "--account", "alice",
                     "--pin-stdin", "deposit", "5", stdin=PIN)
        assert dep.returncode == 0, dep.stderr
        assert "balance 5.00" in dep.stdout
        other = netlet("atm", "--head", head.address, "--name", "nosuch", "--account",
                       "alice", "--pin-stdin", "deposit", "5", stdin=PIN)
        assert other.returncode == 4, other.stderr  # nothing was sent to any bank
        assert "NOT SENT: no bank is registered as 'nosuch'" in other.stderr
        assert "Traceback" not in other.stderr
    finally:
        servers.close()
    with sqlite3.connect(tmp_path / "bank.db") as conn:
        assert conn.execute("SELECT balance FROM accounts WHERE account='alice'"
                            ).fetchone() == (500,)


@pytest.mark.timeout(60)
def test_bad_settings_are_bad_usage_never_a_refusal(tmp_path: Path) -> None:
    """Exit 1 means the bank answered no; a bad address, key file or TLS setting is the
    command line's mistake (exit 2), and an unreachable head sends nothing (exit 4)."""
    (tmp_path / "short.key").write_text("hi\n")
    bad = [("--bank", "foo"), ("--bank", "http://x:1"), ("--bank", ""),
           ("--key-file", str(tmp_path / "missing.key")),
           ("--key-file", str(tmp_path / "short.key")),
           ("--tls-cert", str(tmp_path / "short.key"))]
    for option, value in bad:
        for cmd, stdin in ((("atm", option, value, "--account", "alice", "--pin-stdin",
                             "deposit", "5"), PIN),
                           (("bank", "open", "carol", "--pin-stdin", option, value), PIN),
                           (("bank", "list", option, value), None)):
            r = netlet(*cmd, stdin=stdin)
            assert r.returncode == 2, (cmd, r.stderr)
            assert "Traceback" not in r.stderr, r.stderr
    head = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    r = netlet("atm", "--head", head, "--account", "alice", "--pin-stdin", "deposit", "5",
               stdin=PIN)
    assert r.returncode == 4, r.stderr
    assert "NOT SENT: cannot ask the head" in r.stderr


@pytest.mark.timeout(60)
def test_malformed_pins_are_not_sent_and_session_ttl_is_what_serve_was_given(
        tmp_path: Path) -> None:
    """A malformed PIN is bad usage (exit 2), never sent, so it does not count toward the
    lock; ``--session-ttl`` is the token's life the bank hands out."""
    with BankProcess(tmp_path / "bank.db", "--session-ttl", "7") as bank:
        opened = netlet("bank", "open", "alice", "--bank", bank.address, "--pin-stdin",
                        stdin=PIN)
        assert opened.returncode == 0, opened.stderr
        for bad in ("12ab\n", "123\n", "1234567890123\n", "١٢٣٤\n"):
            r = netlet("atm", "--bank", bank.address, "--account", "alice", "--pin-stdin",
                       "balance", stdin=bad)
            assert r.returncode == 2, r.stderr
            assert "a PIN is 4 to 12 digits" in r.stderr
        with BankClient(bank.address, timeout=10, retry_for=5) as client:
            assert client.info().pin_checks == 0  # none of them reached the bank
            session = client.call("login", "alice", PIN.strip())
            assert session.expires_in == 7.0
        ok = netlet("atm", "--bank", bank.address, "--account", "alice", "--pin-stdin",
                    "balance", stdin=PIN)
        assert ok.returncode == 0, ok.stderr  # not locked


@pytest.mark.timeout(60)
def test_db_defaults_to_bank_db_here_and_owner_to_the_account(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([*NETLET, "bank", "serve", "--listen", f"tcp://127.0.0.1:{port}"],
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    out, err = LineReader(proc.stdout, "bank stdout"), LineReader(proc.stderr, "bank stderr")
    try:
        address = out.wait_for(r"^tcp://\S+$", timeout=STEP).group(0)
        assert (tmp_path / "bank.db").is_file()
        for args in (("alice",), ("bob", "--owner", "Bob Jones")):
            opened = netlet("bank", "open", *args, "--bank", address, "--pin-stdin", stdin=PIN)
            assert opened.returncode == 0, opened.stderr
    finally:
        proc.terminate()
        proc.wait(STEP)
        out.join()
        err.join()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    with sqlite3.connect(tmp_path / "bank.db") as conn:
        owners = dict(conn.execute("SELECT account, owner FROM accounts WHERE account "
                                   "NOT LIKE '@%'"))
    assert owners == {"alice": "alice", "bob": "Bob Jones"}


@pytest.mark.timeout(60)
def test_a_swarm_report_that_cannot_be_written_is_refused_before_the_run(
        bank: BankProcess, tmp_path: Path) -> None:
    r = netlet("atm", "swarm", "--bank", bank.address, "--atms", "2", "--seconds", "1",
               "--accounts", "2", "--report", tmp_path / "missing" / "report.json")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "--report" in r.stderr
    with sqlite3.connect(bank.db) as conn:  # nothing was sent: no swarm account opened
        assert conn.execute("SELECT COUNT(*) FROM accounts WHERE account LIKE 'swarm-%'"
                            ).fetchone() == (0,)
