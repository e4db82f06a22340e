"""The interactive ATM, driven through a pseudo-terminal, with the bank killed mid-session.

The ATM runs as ``netlet atm`` in its own process on a pty (pexpect); the bank
is a real ``netlet bank serve`` process that the test SIGKILLs and restarts on
the same port and ledger. Every step waits for what the ATM prints.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.apps.bank.bank_server import ENV, NETLET, BankProcess, netlet

MENU = re.escape("(D)eposit, (W)ithdraw, (B)alance, (T)ransfer, (S)tatement or (Q)uit? ")
NAME = "Please enter your name or account number: "


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankProcess]:
    with BankProcess(tmp_path / "bank.db", "--lock-seconds", "60") as srv:
        for account in ("alice", "bob"):
            opened = netlet("bank", "open", account, "--bank", srv.address, "--pin-stdin",
                            stdin="4321\n")
            assert opened.returncode == 0, opened.stderr
        yield srv


def spawn_atm(address: str, *options: str) -> pexpect.spawn:
    child = pexpect.spawn(NETLET[0], [*NETLET[1:], "atm", "--bank", address, *options],
                          encoding="utf-8", timeout=15, env=ENV, dimensions=(40, 200))
    child.expect(NAME)
    return child


def choose(child: pexpect.spawn, letter: str, *answers: tuple[str, str]) -> None:
    child.expect(MENU)
    child.sendline(letter)
    for prompt, text in answers:
        child.expect(re.escape(prompt))
        child.sendline(text)


def balances(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT account, balance FROM accounts WHERE status='open'"))


def test_full_session_with_a_bank_outage(bank: BankProcess) -> None:
    child = spawn_atm(bank.address)
    try:
        child.sendline("alice")
        child.expect("PIN: ")
        child.sendline("0000")
        child.expect(r"Wrong PIN\. 2 attempt\(s\) left")
        child.expect("PIN: ")
        child.sendline("4321")
        child.expect(r"Hello, alice\.")
        choose(child, "d", ("Amount: ", "12.34"))
        child.expect(r"Deposited 12\.34\. Your balance is 12\.34\.")
        choose(child, "w", ("Amount: ", "50"))
        child.expect(r"Sorry, your balance is 12\.34, less than 50\.00\. Nothing was taken\.")
        choose(child, "x")
        child.expect(r"Invalid selection\.")
        choose(child, "d", ("Amount: ", "-3"))
        child.expect(r"That is not an amount we can take: .*negative")
        choose(child, "d", ("Amount: ", "0.001"))
        child.expect(r"fractions of a cent")
        choose(child, "t", ("To account: ", "bob"), ("Amount: ", "2.34"))
        child.expect(r"Transferred 2\.34 to bob\. Your balance is 10\.00\.")
        choose(child, "t", ("To account: ", "nobody"), ("Amount: ", "1"))
        child.expect(r"Sorry: No account 'nobody'\.")

        bank.kill()  # the bank dies between two requests ...
        choose(child, "w", ("Amount: ", "1"))
        child.expect(r"The bank is not answering \((cannot connect|the connection was lost)\)"
                     r"\. Still trying your withdrawal of 1\.00 \(attempt 2\); it will never "
                     r"be applied twice\.")
        bank.start()  # ... and comes back on the same ledger, having forgotten the session
        child.expect(r"The bank restarted and forgot your session; signing you in again\.")
        child.expect(r"Please take your cash: 1\.00\. Your balance is 9\.00\.")
        choose(child, "b")
        child.expect(r"Your balance is 9\.00\.")
        choose(child, "s")
        child.expect(r"Withdraw\s+-1\.00\s+9\.00")
        child.expect(r"to bob\s+-2\.34\s+10\.00")
        child.expect(r"Deposit\s+12\.34\s+12\.34")
        choose(child, "q")
        child.expect(r"Thank you for banking with netlet Bank\.")
        child.expect(NAME)
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert balances(bank.db) == {"alice": 900, "bob": 234}
    assert netlet("bank", "audit", "--db", bank.db).returncode == 0


def test_giving_up_tells_the_reference_and_never_claims_success(bank: BankProcess) -> None:
    child = spawn_atm(bank.address, "--retry-for", "0.5", "--timeout", "2")
    try:
        child.sendline("bob")
        child.expect("PIN: ")
        child.sendline("4321")
        child.expect(r"Hello, bob\.")
        bank.kill()
        choose(child, "d", ("Amount: ", "5"))
        child.expect(r"The bank is not answering")
        child.expect(re.escape("The bank is still not answering. Keep trying? [Y/n] "))
        child.sendline("y")  # the same request again, under the same key
        child.expect(re.escape("Keep trying? [Y/n] "))
        child.sendline("n")
        # The bank was gone before the request: no connection was ever up, so the ATM
        # knows it was never sent (a bank that stops answering mid-request gets the
        # reference instead: see test_cli_exit_codes.py).
        child.expect(r"nothing was sent\)\. Nothing was done\.")
        assert "Deposited" not in (child.before or "")
        key = "atm-never-sent"
        bank.start()
        choose(child, "b")
        child.expect(r"Your balance is 0\.00\.")
        choose(child, "q")
        child.expect(NAME)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    asked = netlet("atm", "--bank", bank.address, "--account", "bob", "--pin-stdin",
                   "outcome", key, stdin="4321\n")
    assert asked.returncode == 0, asked.stderr
    assert "not applied" in asked.stdout
    assert balances(bank.db)["bob"] == 0


def test_locked_card_and_unknown_account(bank: BankProcess) -> None:
    child = spawn_atm(bank.address)
    try:
        child.sendline("nobody")
        child.expect("PIN: ")
        child.sendline("4321")  # an unknown account answers as a wrong PIN does
        child.expect(r"Wrong PIN\. 2 attempt")
        child.expect("PIN: ")
        child.sendline("12x")  # a malformed PIN: asked again, not sent, not counted
        child.expect(r"A PIN is 4 to 12 digits")
        child.expect("PIN: ")
        child.sendline("")  # an empty PIN cancels
        child.expect(NAME)
        child.sendline("alice")
        for left in (2, 1):
            child.expect("PIN: ")
            child.sendline("1111")
            child.expect(rf"Wrong PIN\. {left} attempt")
        child.expect("PIN: ")
        child.sendline("1111")
        child.expect(r"This card is locked after too many wrong PINs; try again in 1 minute")
        child.expect(NAME)
        child.sendline("alice")
        child.expect("PIN: ")
        child.sendline("4321")  # the right PIN does not open a locked card
        child.expect(r"This card is locked")
        child.expect(NAME)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


@pytest.mark.timeout(60)
def test_end_of_input_while_the_bank_is_silent_still_tells_the_reference(
        bank: BankProcess) -> None:
    """Ctrl-C or Ctrl-D at "Keep trying?" is the customer stopping: the ATM gives the
    reference of the request it sent, as for "n", and does not end without it."""
    blocker = sqlite3.connect(bank.db, isolation_level=None, timeout=1)
    child = spawn_atm(bank.address, "--retry-for", "0.5", "--timeout", "1")
    try:
        child.sendline("bob")
        child.expect("PIN: ")
        child.sendline("4321")
        child.expect(r"Hello, bob\.")
        blocker.execute("BEGIN IMMEDIATE")  # the bank's writer waits: no answer comes
        keys = []
        for amount, stop in (("5", child.sendintr), ("7", child.sendeof)):  # Ctrl-C, Ctrl-D
            choose(child, "d", ("Amount: ", amount))
            child.expect(re.escape("Keep trying? [Y/n] "))
            stop()
            child.expect(r"reference is (atm-[0-9a-f]+)")
            keys.append(child.match.group(1))
        choose(child, "w")  # it carries on; input that ends at a prompt ends the session
        child.expect(re.escape("Amount: "))
        child.sendeof()
        child.expect(NAME)
        child.sendeof()
        child.expect(pexpect.EOF)
        assert "Traceback" not in (child.before or "")
        assert "Aborted" not in (child.before or "")
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
        child.close(force=True)
    for key in keys:
        asked = netlet("atm", "--bank", bank.address, "--account", "bob", "--pin-stdin",
                       "outcome", key, stdin="4321\n")
        assert asked.returncode == 0, asked.stderr
        assert f"{key}: applied" in asked.stdout  # the writer went on once free
    assert balances(bank.db)["bob"] == 1200
