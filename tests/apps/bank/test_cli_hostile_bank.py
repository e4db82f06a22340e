"""The exit status against a bank that answers with an error no netlet bank means to send.

The rule (docs/bank.md, "the exit status"): exit 1 only when the bank answered
with a refusal of the request; once the request may have been sent, every
other failure is exit 3 with the key. A bank whose code fails after it applied
a request (a bug, a receipt it cannot build, an error type the ATM does not
know) answers with such an error: the ATM must not call that "nothing was
sent" (exit 4) or a refusal (exit 1). The bank here is a real node on a real
socket, keyed; the ATM is the real ``netlet`` command.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

import netlet
from netlet import expose
from netlet.apps.bank import CashReceipt, Session
from netlet.apps.bank._service import SERVICE_NAME
from netlet.transport import write_key
from tests.apps.bank.bank_server import ENV, NETLET
from tests.apps.bank.bank_server import netlet as run_netlet

PIN = "4321\n"


class _NotOurs(Exception):
    """An error type the ATM has never registered: it arrives as a RemoteError."""


@expose
class BrokenBank:
    """Records every request it is sent (as applied), then fails in a way no refusal means."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def login(self, account: str, pin: str) -> Session:
        return Session("t" * 43, account, 300.0)

    def logout(self, token: str) -> None:
        return None

    def deposit(self, token: str, amount: int, key: str) -> object:
        self.applied.append(key)
        raise RuntimeError("the receipt could not be made")

    def withdraw(self, token: str, amount: int, key: str) -> object:
        self.applied.append(key)
        raise _NotOurs("an error the ATM cannot rebuild")

    def open_account(self, account: str, owner: str, pin_hash: str, key: str) -> object:
        self.applied.append(key)
        raise ValueError("failed after the account was opened")

    def balance(self, token: str) -> object:
        raise RuntimeError("the balance could not be read")

    def accounts(self, prefix: str) -> object:
        raise RuntimeError("the accounts could not be listed")


@pytest.fixture
def broken(tmp_path: Path,
           node_factory: Callable[..., netlet.Node]) -> tuple[BrokenBank, str, Path]:
    key_file = tmp_path / "bank.key"
    key = write_key(key_file)
    server = node_factory("tcp://127.0.0.1:0", key=key)
    bank = BrokenBank()
    server.serve(bank, SERVICE_NAME)
    assert server.address is not None
    return bank, server.address, key_file


def _atm(address: str, key_file: Path, *args: str) -> tuple[int, str]:
    r = run_netlet("atm", "--bank", address, "--key-file", key_file, "--account", "alice",
                   "--pin-stdin", "--timeout", "5", "--retry-for", "3", *args, stdin=PIN)
    return r.returncode, r.stderr


@pytest.mark.timeout(60)
def test_an_error_answered_after_a_mutating_request_is_unknown_with_its_key(
        broken: tuple[BrokenBank, str, Path]) -> None:
    bank, address, key_file = broken
    for op, key in (("deposit", "dep-1"), ("withdraw", "wd-1")):
        code, err = _atm(address, key_file, op, "5", "--key", key)
        assert key in bank.applied  # it reached the bank, which may have applied it
        assert code == 3, err
        assert "nothing was sent" not in err, err
        assert "NOT SENT" not in err, err
        assert re.search(rf"^key: {key}$", err, re.M), err
    opened = run_netlet("bank", "open", "carol", "--bank", address, "--key-file", key_file,
                        "--pin-stdin", "--retry-for", "3", stdin=PIN)
    assert bank.applied[-1].startswith("op-")
    assert opened.returncode == 3, opened.stderr
    assert "Traceback" not in opened.stderr, opened.stderr
    assert re.search(rf"^key: {bank.applied[-1]}$", opened.stderr, re.M), opened.stderr


@pytest.mark.timeout(60)
def test_an_error_answered_to_a_read_is_unknown_not_a_traceback(
        broken: tuple[BrokenBank, str, Path]) -> None:
    _bank, address, key_file = broken
    code, err = _atm(address, key_file, "balance")
    assert code == 3, err
    assert "Traceback" not in err, err
    assert "balance could not be read" in err, err
    listed = run_netlet("bank", "list", "--bank", address, "--key-file", key_file,
                        "--retry-for", "3")
    assert listed.returncode == 3, listed.stderr
    assert "Traceback" not in listed.stderr, listed.stderr


@pytest.mark.timeout(60)
def test_the_terminal_atm_survives_such_errors_and_gives_the_reference(
        broken: tuple[BrokenBank, str, Path]) -> None:
    bank, address, key_file = broken
    child = pexpect.spawn(NETLET[0], [*NETLET[1:], "atm", "--bank", address, "--key-file",
                                      str(key_file), "--retry-for", "1"],
                          encoding="utf-8", timeout=15, env=ENV, dimensions=(40, 200))
    try:
        child.expect("Please enter your name or account number: ")
        child.sendline("alice")
        child.expect("PIN: ")
        child.sendline("4321")
        child.expect(re.escape("(Q)uit? "))
        child.sendline("b")
        child.expect(r"Sorry, the bank could not answer")  # a read: nothing to settle
        child.expect(re.escape("(Q)uit? "))
        child.sendline("d")
        child.expect("Amount: ")
        child.sendline("5")
        child.expect(re.escape("Keep trying? [Y/n] "))
        child.sendline("n")
        child.expect(r"reference is (atm-[0-9a-f]+)")
        assert child.match.group(1) in bank.applied
        child.expect(re.escape("(Q)uit? "))
        child.sendline("q")
        child.expect("Please enter your name or account number: ")
        child.sendeof()
        child.expect(pexpect.EOF)
        assert "Traceback" not in (child.before or "")
    finally:
        child.close(force=True)


@expose
class VanishingBank(BrokenBank):
    """Answers a deposit, then goes away at once: the ATM's sign-out cannot reach it."""

    def __init__(self, node: netlet.Node) -> None:
        super().__init__()
        self.node = node

    def deposit(self, token: str, amount: int, key: str) -> object:
        self.applied.append(key)
        threading.Thread(target=self.node.close, daemon=True).start()
        return CashReceipt("alice", amount, amount)

    def logout(self, token: str) -> None:
        raise RuntimeError("never reached")


@pytest.mark.timeout(60)
def test_a_sign_out_that_fails_after_the_answer_never_changes_the_result(
        tmp_path: Path, node_factory: Callable[..., netlet.Node]) -> None:
    key_file = tmp_path / "bank.key"
    server = node_factory("tcp://127.0.0.1:0", key=write_key(key_file))
    bank = VanishingBank(server)
    server.serve(bank, SERVICE_NAME)
    assert server.address is not None
    code, err = _atm(server.address, key_file, "deposit", "5", "--key", "dep-v")
    assert code == 0, err
    assert bank.applied == ["dep-v"]
