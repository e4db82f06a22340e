"""What the scripted ATM's exit status promises, against a real bank that misbehaves.

0 applied, 1 refused (the bank answered no), 3 outcome unknown (the request may
have been sent; its key is printed), 4 not sent (nothing was done). The bank is
``netlet bank serve`` in a child process: paused with SIGSTOP (it accepts
connections but never finishes a handshake), or with its writer held up by
another SQLite connection that holds the write lock.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps.bank.bank_server import ENV, NETLET, BankProcess, free_port, netlet
from tests.apps.bank.conftest import hold_writer
from tests.conftest import LineReader

PIN = "4321\n"


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankProcess]:
    with BankProcess(tmp_path / "bank.db") as proc:
        opened = netlet("bank", "open", "alice", "--bank", proc.address, "--pin-stdin",
                        stdin=PIN)
        assert opened.returncode == 0, opened.stderr
        yield proc
        if proc.proc is not None:
            proc.proc.send_signal(signal.SIGCONT)


def _balance(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT balance FROM accounts WHERE account='alice'")
                   .fetchone()[0])


def _atm(bank: BankProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return netlet("atm", "--bank", bank.address, "--account", "alice", "--pin-stdin", *args,
                  stdin=PIN)


@pytest.mark.timeout(90)
def test_a_paused_bank_is_retried_until_it_answers(bank: BankProcess) -> None:
    assert bank.proc is not None
    bank.proc.send_signal(signal.SIGSTOP)  # connections are accepted, handshakes never end
    proc = subprocess.Popen(
        [*NETLET, "atm", "--bank", bank.address, "--account", "alice", "--pin-stdin",
         "--timeout", "1", "--retry-for", "60", "deposit", "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=ENV)
    stderr = LineReader(proc.stderr, "atm stderr")
    stdout = LineReader(proc.stdout, "atm stdout")
    try:
        assert proc.stdin is not None
        proc.stdin.write(PIN)
        proc.stdin.close()
        # Still retrying after more attempts than one handshake timeout allows.
        stderr.wait_for(r"not answering .*attempt (1[1-9]|[2-9]\d)", timeout=40)
        assert proc.poll() is None
        bank.proc.send_signal(signal.SIGCONT)
        assert proc.wait(30) == 0, stderr.lines
        stdout.wait_for(r"deposited 5\.00")
    finally:
        proc.kill()
        proc.wait()
        for reader in (stderr, stdout):
            reader.join()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert _balance(bank.db) == 500


@pytest.mark.timeout(60)
def test_timeout_and_retry_for_bound_the_handshake_too(bank: BankProcess) -> None:
    assert bank.proc is not None
    bank.proc.send_signal(signal.SIGSTOP)
    start = time.monotonic()
    r = _atm(bank, "--timeout", "1", "--retry-for", "2", "deposit", "5")
    took = time.monotonic() - start
    assert r.returncode == 4, r.stderr  # no connection ever completed: nothing was sent
    assert "nothing was sent" in r.stderr
    assert took < 8, took  # 2 s of retries (+ one attempt, + the interpreter starting)
    bank.proc.send_signal(signal.SIGCONT)
    assert _balance(bank.db) == 0


@pytest.mark.timeout(90)
def test_no_answer_after_sending_is_unknown_with_the_key(bank: BankProcess) -> None:
    blocker = sqlite3.connect(bank.db, isolation_level=None, timeout=1)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the bank's writer waits: no answer comes
        r = _atm(bank, "--timeout", "1", "--retry-for", "2", "deposit", "5")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert r.returncode == 3, r.stderr
    match = re.search(r"^key: (\S+)$", r.stderr, re.M)
    assert match, r.stderr
    key = match[1]
    asked = _atm(bank, "outcome", key)
    assert asked.returncode == 0, asked.stderr
    assert f"{key}: applied" in asked.stdout  # it was: the writer went on once free
    again = _atm(bank, "deposit", "5", "--key", key)  # the same key: the first answer
    assert again.returncode == 0, again.stderr
    assert _balance(bank.db) == 500


@pytest.mark.timeout(60)
def test_a_wrong_port_says_nothing_was_sent(bank: BankProcess) -> None:
    wrong = f"tcp://127.0.0.1:{free_port()}"
    r = netlet("atm", "--bank", wrong, "--account", "alice", "--pin-stdin", "--retry-for", "1",
               "deposit", "5", stdin=PIN)
    assert r.returncode == 4, r.stderr
    assert "not answering" in r.stderr  # it says what it is doing while it waits
    assert "nothing was sent" in r.stderr
    assert "applied at most once" not in r.stderr
    listed = netlet("bank", "list", "--bank", wrong, "--retry-for", "1")
    assert listed.returncode == 4, listed.stderr


@pytest.mark.timeout(60)
def test_a_refusal_is_exit_1_and_a_wrong_pin_too(bank: BankProcess) -> None:
    r = _atm(bank, "withdraw", "5")
    assert r.returncode == 1, r.stderr
    assert "refused" in r.stderr
    wrong = netlet("atm", "--bank", bank.address, "--account", "alice", "--pin-stdin",
                   "balance", stdin="9999\n")
    assert wrong.returncode == 1, wrong.stderr


@pytest.mark.timeout(90)
def test_an_operators_unknown_outcome_is_settled_by_bank_outcome(bank: BankProcess) -> None:
    """Exit 3 of ``bank open`` prints a key; ``netlet bank outcome KEY`` gives the final word
    (``atm outcome`` cannot: an operator's key belongs to no card)."""
    blocker = sqlite3.connect(bank.db, isolation_level=None, timeout=1)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the bank's writer waits: no answer comes
        r = netlet("bank", "open", "carol", "--bank", bank.address, "--pin-stdin",
                   "--timeout", "1", "--retry-for", "2", stdin=PIN)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert r.returncode == 3, r.stderr
    match = re.search(r"^key: (\S+)$", r.stderr, re.M)
    assert match, r.stderr
    key = match[1]
    asked = netlet("bank", "outcome", key, "never-sent-1", "--bank", bank.address)
    assert asked.returncode == 0, asked.stderr
    assert re.search(rf"^{key}: applied: .*carol", asked.stdout, re.M), asked.stdout
    assert "never-sent-1: not applied" in asked.stdout
    with sqlite3.connect(bank.db) as conn:  # the unseen key is fenced: it never applies
        kinds = dict(conn.execute("SELECT key, kind FROM commands WHERE key IN (?, ?)",
                                  (key, "never-sent-1")).fetchall())
    assert kinds == {key: "OpenAccount", "never-sent-1": "Fence"}
    refused = netlet("bank", "outcome", "", "--bank", bank.address)
    assert refused.returncode == 1, refused.stderr  # a malformed key: the bank says no


@pytest.mark.timeout(90)
def test_sigterm_commits_what_is_queued_and_every_answer_is_true(bank: BankProcess) -> None:
    """``bank serve`` stops on SIGTERM after committing what is queued: a deposit waiting
    for the writer when the signal comes is journaled, and its ATM says 0 or 3, never 1/4."""
    assert bank.proc is not None
    blocker = sqlite3.connect(bank.db, isolation_level=None, timeout=1)
    blocker.execute("BEGIN IMMEDIATE")  # the writer waits: the deposit stays queued
    proc = subprocess.Popen(
        [*NETLET, "atm", "--bank", bank.address, "--account", "alice", "--pin-stdin",
         "--timeout", "1", "--retry-for", "4", "deposit", "5", "--key", "term-1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=ENV)
    stderr = LineReader(proc.stderr, "atm stderr")
    stdout = LineReader(proc.stdout, "atm stdout")
    try:
        assert proc.stdin is not None
        proc.stdin.write(PIN)
        proc.stdin.close()
        stderr.wait_for(r"not answering", timeout=30)  # sent on a live link, unanswered
        bank.proc.send_signal(signal.SIGTERM)
        blocker.execute("ROLLBACK")
        assert bank.proc.wait(30) == 0, bank.stderr.text() if bank.stderr else ""
        code = proc.wait(30)
    finally:
        blocker.close()
        proc.kill()
        proc.wait()
        for reader in (stderr, stdout):
            reader.join()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    with sqlite3.connect(bank.db) as conn:
        kind = conn.execute("SELECT kind FROM commands WHERE key='term-1'").fetchone()
    assert kind == ("Deposit",), stderr.text()
    assert _balance(bank.db) == 500
    assert code in (0, 3), stderr.text()
    if code == 3:
        assert re.search(r"^key: term-1$", stderr.text(), re.M), stderr.text()
    else:
        assert "deposited 5.00" in stdout.text()
    bank.kill()
    bank.start()  # and the restarted bank answers the key as applied
    asked = _atm(bank, "outcome", "term-1")
    assert asked.returncode == 0, asked.stderr
    assert "term-1: applied" in asked.stdout


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_request_is_unknown_with_its_key_never_refused(
        bank: BankProcess, sig: signal.Signals) -> None:
    """Ctrl-C (SIGINT) or SIGTERM while a deposit waits for its answer: exit 3 with the key
    the ATM made, never exit 1 (which says the bank refused it) or death by the signal;
    the bank then applies it."""
    blocker = sqlite3.connect(bank.db, isolation_level=None, timeout=1)
    blocker.execute("BEGIN IMMEDIATE")  # the writer waits: the deposit stays unanswered
    proc = subprocess.Popen(
        [*NETLET, "atm", "--bank", bank.address, "--account", "alice", "--pin-stdin",
         "--timeout", "1", "--retry-for", "30", "deposit", "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=ENV)
    stderr = LineReader(proc.stderr, "atm stderr")
    stdout = LineReader(proc.stdout, "atm stdout")
    try:
        assert proc.stdin is not None
        proc.stdin.write(PIN)
        proc.stdin.close()
        stderr.wait_for(r"not answering", timeout=30)  # sent on a live link, unanswered
        proc.send_signal(sig)
        code = proc.wait(30)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        proc.kill()
        proc.wait()
        for reader in (stderr, stdout):
            reader.join()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert code == 3, stderr.text()
    match = re.search(r"^key: (\S+)$", stderr.text(), re.M)
    assert match, stderr.text()
    asked = _atm(bank, "outcome", match[1])
    assert asked.returncode == 0, asked.stderr
    assert f"{match[1]}: applied" in asked.stdout
    assert _balance(bank.db) == 500


@pytest.mark.timeout(60)
def test_a_closed_stdout_does_not_turn_a_done_request_into_a_refusal(
        bank: BankProcess) -> None:
    """``netlet atm deposit 5 | reader`` whose reader is gone: the deposit was applied, so
    exit 0, never click's exit 1 for a broken pipe (which says the bank refused)."""
    for args in (("atm", "--bank", bank.address, "--account", "alice", "--pin-stdin",
                  "deposit", "5"),
                 ("bank", "open", "carol", "--bank", bank.address, "--pin-stdin"),
                 ("bank", "outcome", "never-1", "--bank", bank.address)):
        read_end, write_end = os.pipe()
        os.close(read_end)  # nobody will read what it prints
        try:
            r = subprocess.run([*NETLET, *args], input=PIN, stdout=write_end,
                               stderr=subprocess.PIPE, text=True, env=ENV, timeout=60)
        finally:
            os.close(write_end)
        assert r.returncode == 0, (args, r.stderr)
    assert _balance(bank.db) == 500
    read_end, write_end = os.pipe()
    os.close(read_end)  # and an unknown outcome with nobody reading stderr either: still 3
    try:
        with hold_writer(str(bank.db)):
            r = subprocess.run([*NETLET, "atm", "--bank", bank.address, "--account", "alice",
                                "--pin-stdin", "--timeout", "1", "--retry-for", "1",
                                "deposit", "5"], input=PIN, stdout=write_end,
                               stderr=write_end, text=True, env=ENV, timeout=60)
    finally:
        os.close(write_end)
    assert r.returncode == 3
