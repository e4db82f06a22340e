"""The ledger file: one bank per file, damage refused, nothing left behind by a refused start.

Every test runs the real ``netlet bank serve`` / ``netlet bank audit`` commands
on a file in a temporary directory, damages it the way a disk, an operator or
a second bank could, and checks the refusal: a clear message, exit status 1,
no traceback, and no file created or changed.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from netlet.apps.bank import Ledger, OpenAccount, hash_pin
from tests.apps.bank.bank_server import ENV, NETLET, BankProcess, free_port, netlet

PIN = "4321\n"


def _serve(db: Path, *options: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    """A ``bank serve`` expected to be refused: it must exit by itself."""
    return subprocess.run([*NETLET, "bank", "serve", "--listen",
                           f"tcp://127.0.0.1:{port or free_port()}", "--db", str(db), *options],
                          capture_output=True, text=True, timeout=60, env=ENV)


def _refused(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    for word in words:
        assert word in r.stderr, r.stderr


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


def _make_bank(db: Path, deposits: int = 5, *, stop: int = signal.SIGTERM) -> None:
    """A ledger with an account and some deposits; the bank stopped with ``stop``."""
    with BankProcess(db) as bank:
        opened = netlet("bank", "open", "alice", "--bank", bank.address, "--pin-stdin",
                        stdin=PIN)
        assert opened.returncode == 0, opened.stderr
        for i in range(deposits):
            r = netlet("atm", "--bank", bank.address, "--account", "alice", "--pin-stdin",
                       "deposit", f"{i + 1}", stdin=PIN)
            assert r.returncode == 0, r.stderr
        bank.kill(stop)


@pytest.mark.timeout(60)
def test_a_second_bank_on_the_same_ledger_is_refused_at_once(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    with BankProcess(db) as first:
        assert first.proc is not None
        before = _files(tmp_path)
        port = free_port()
        r = _serve(db, port=port)
        _refused(r, "in use by process", str(first.proc.pid))
        assert _files(tmp_path) == before  # nothing created or touched
        with socket.socket() as s:  # and the port was never bound
            s.bind(("127.0.0.1", port))
        listed = netlet("bank", "list", "--bank", first.address)
        assert listed.returncode == 0, listed.stderr  # the first bank goes on


@pytest.mark.timeout(60)
def test_a_refused_start_leaves_no_files(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = _serve(tmp_path / "bank.db", port=taken.getsockname()[1])
    _refused(r, "cannot listen")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    r = _serve(tmp_path / "no" / "such" / "bank.db")
    _refused(r, "does not exist", "create it first")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_an_empty_file_needs_create(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    db.touch()
    _refused(_serve(db), "empty file", "--create")
    assert db.stat().st_size == 0
    _refused(netlet("bank", "audit", "--db", db), "empty file")
    with BankProcess(db, "--create"):
        pass
    assert db.stat().st_size > 0


@pytest.mark.timeout(60)
def test_a_file_that_is_not_a_ledger_is_refused_untouched(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a bank\n" * 100)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    before = _files(tmp_path)
    for path in (text, other):
        _refused(_serve(path), "not a bank ledger")
        _refused(_serve(path, "--create"), "not a bank ledger")
        _refused(netlet("bank", "audit", "--db", path), "not a bank ledger")
    assert _files(tmp_path) == before


@pytest.mark.timeout(90)
def test_a_truncated_wal_is_caught_by_the_audit_and_at_start(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    _make_bank(db, stop=signal.SIGKILL)  # no checkpoint: the deposits are in the -wal
    wal = tmp_path / "bank.db-wal"
    assert wal.stat().st_size > 0
    with open(wal, "r+b") as f:
        f.truncate(wal.stat().st_size // 2)
    _refused(netlet("bank", "audit", "--db", db), "committed", "missing")
    _refused(_serve(db), "acknowledged commands are missing")


@pytest.mark.timeout(90)
def test_a_corrupt_file_is_refused_without_a_traceback(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    _make_bank(db)
    with open(db, "r+b") as f:  # garbage over the second page and beyond
        f.seek(4096)
        f.write(b"\xde\xad\xbe\xef" * 2048)
    _refused(_serve(db), "damaged")
    _refused(netlet("bank", "audit", "--db", db), "damaged")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("edit", [
    "UPDATE commands SET record = replace(record, '\"amount\":300', '\"amount\":30000')"
    " WHERE seq = 4",
    "DELETE FROM commands WHERE seq = 3",
    "UPDATE entries SET amount = amount * 10 WHERE seq = 4",
], ids=["edited-command", "deleted-command", "edited-entries"])
def test_the_audit_catches_an_edit_in_the_middle(tmp_path: Path, edit: str) -> None:
    db = tmp_path / "bank.db"
    _make_bank(db, deposits=6)
    assert netlet("bank", "audit", "--db", db).returncode == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute(edit).rowcount >= 1
        # Keep the cached balances in step, as a careful forger would.
        conn.execute("UPDATE accounts SET balance = (SELECT IFNULL(SUM(amount), 0) FROM entries"
                     " WHERE entries.account = accounts.account)")
    r = netlet("bank", "audit", "--db", db)
    assert r.returncode == 1, r.stdout
    assert "VIOLATION" in r.stderr
    _refused(_serve(db), "damaged")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("listen", ["tcp://127.0.0.1:99999", "http://127.0.0.1:1", "tcp://foo",
                                    "unix://", "tcp://0.0.0.0:0"])
def test_a_bad_listen_address_is_refused_before_any_file(tmp_path: Path, listen: str) -> None:
    r = netlet("bank", "serve", "--listen", listen, "--db", tmp_path / "bank.db")
    assert r.returncode in (1, 2), (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []  # no ledger, -wal or -shm left behind


@pytest.mark.timeout(60)
def test_a_start_refused_after_listening_leaves_no_new_ledger(tmp_path: Path) -> None:
    """A head that cannot be reached, or a dashboard port that is taken, ends the start
    after the ledger was made: the new, empty ledger goes too."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in (("--head", f"tcp://127.0.0.1:{free_port()}"),
                      ("--dashboard", f"127.0.0.1:{port}")):
            r = netlet("bank", "serve", "--listen", "tcp://127.0.0.1:0", "--db",
                       tmp_path / "bank.db", *extra)
            _refused(r)
            assert list(tmp_path.iterdir()) == [], extra


@pytest.mark.timeout(30)
def test_discarding_never_removes_a_ledger_that_took_a_command(tmp_path: Path) -> None:
    """What a refused start removes is a new ledger with nothing in it; one that took a
    command (a client quick enough to reach the bank before it failed) is kept."""
    empty, used = tmp_path / "empty.db", tmp_path / "used.db"
    Ledger(empty).close(discard=True)
    assert not empty.exists()
    ledger = Ledger(used)
    ledger.execute(OpenAccount("alice", "Alice", hash_pin("4321", n=16)), "open-alice")
    ledger.close(discard=True)
    with sqlite3.connect(used) as conn:
        assert conn.execute("SELECT key FROM commands").fetchall() == [("open-alice",)]
