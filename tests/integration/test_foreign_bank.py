"""A foreign operator and customer, written from docs/PROTOCOL.md §18 alone, use a real bank.

The client is the one of ``test_foreign_client.py`` (socket, struct, hashlib,
msgpack: no netlet import), against ``netlet bank serve`` on loopback (so
operator calls are allowed) in a subprocess with an SQLite ledger. It checks
each record's wire id and field types, the documented refusals (type names, and
that they change nothing) and the settling of a key by ``outcome``. About 1 s.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netlet.transport import write_key
from tests.apps.bank.bank_server import BankProcess
from tests.integration.test_foreign_client import ERROR, REPLY, Client, Record

pytestmark = pytest.mark.timeout(30)

BANK = "bank"
ERRORS = "netlet.apps.bank._errors."
SESSION, CASH, TRANSFER, OPENED, OUTCOME, ENTRY, AUDIT, INFO = 100, 101, 102, 103, 106, 107, \
    109, 110


def _pin_hash(pin: str) -> str:
    """§18.1: `scrypt$<n>$<r>$<p>$<salt>$<hash>`, salt and hash in url-safe base64."""
    n, r, p, salt = 16, 8, 1, os.urandom(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def bank(tmp_path: Path, key: bytes) -> Iterator[tuple[str, int]]:
    write_key(tmp_path / "bank.key", key)
    with BankProcess(tmp_path / "bank.db", "--key-file", str(tmp_path / "bank.key")) as process:
        yield "127.0.0.1", process.port


def _types(record: Record, wire_id: int, *types: type) -> list[Any]:
    assert record.wire_id == wire_id, (record.wire_id, record.fields)
    assert [type(f) for f in record.fields] == list(types), record.fields
    return record.fields


def _refused(answer: tuple[int, Any], name: str) -> None:
    kind, exc = answer
    assert kind == ERROR, answer
    assert exc.type_name == name, (exc.type_name, exc.message)


def _open(c: Client, account: str, pin: str) -> str:
    kind, opened = c.call(BANK, "open_account", account, "Owner", _pin_hash(pin), f"open-{account}")
    assert kind == REPLY
    assert _types(opened, OPENED, str, str) == [account, "Owner"]
    kind, session = c.call(BANK, "login", account, pin)
    assert kind == REPLY
    token, who, _ = _types(session, SESSION, str, str, float)
    assert who == account
    return token


def test_each_answer_is_its_documented_record(bank: tuple[str, int], key: bytes) -> None:
    with Client(bank) as c:
        c.handshake(key)
        alice, _ = _open(c, "alice", "1234"), _open(c, "bob", "5678")
        kind, receipt = c.call(BANK, "deposit", alice, 1250, "d-1")
        assert kind == REPLY
        assert _types(receipt, CASH, str, int, int) == ["alice", 1250, 1250]
        kind, receipt = c.call(BANK, "transfer", alice, "bob", 250, "t-1")
        assert kind == REPLY
        assert _types(receipt, TRANSFER, str, str, int, int, int) == ["alice", "bob", 250, 1000,
                                                                    250]
        assert c.call(BANK, "balance", alice) == (REPLY, 1000)
        kind, entries = c.call(BANK, "statement", alice, 10)
        assert kind == REPLY
        kinds = [_types(e, ENTRY, str, str, int, str, float, int)[:4] for e in entries]
        assert kinds == [["t-1", "Transfer", -250, "bob"], ["d-1", "Deposit", 1250, "@cash"]]
        kind, outcome = c.call(BANK, "outcome", alice, "d-1")
        assert kind == REPLY
        key, _, command, result, _, _ = _types(outcome, OUTCOME, str, int, dict, Record,
                                              type(None), float)
        assert (key, command) == ("d-1", {"type": "Deposit", "account": "alice", "amount": 1250})
        assert _types(result, CASH, str, int, int) == ["alice", 1250, 1250]
        kind, info = c.call(BANK, "info")
        assert kind == REPLY
        assert _types(info, INFO, bool, float, int, int, float, int, int)[0] is True
        kind, audit = c.call(BANK, "audit")
        assert kind == REPLY
        ok, _, _, total, violations = _types(audit, AUDIT, bool, int, int, int, tuple)
        assert (ok, total, violations) == (True, 0, ())  # double entry: @cash is -1250


def test_refusals_have_their_documented_types_and_change_nothing(
        bank: tuple[str, int], key: bytes) -> None:
    with Client(bank) as c:
        c.handshake(key)
        token = _open(c, "carol", "2468")
        assert c.call(BANK, "deposit", token, 100, "k-1")[0] == REPLY
        for amount in (1.5, True, 0, -1, 10**15 + 1, "100"):
            _refused(c.call(BANK, "deposit", token, amount, f"k-{amount!r}"),
                     ERRORS + "InvalidAmount")
        _refused(c.call(BANK, "deposit", b"token", 100, "k-2"),
                 "netlet.apps.bank._service.SessionExpired")
        _refused(c.call(BANK, "deposit", token, 100, "k" * 201), ERRORS + "InvalidCommand")
        _refused(c.call(BANK, "deposit", token, 100, ["k-3"]), ERRORS + "InvalidCommand")
        _refused(c.call(BANK, "transfer", token, "-bad", 1, "k-4"), ERRORS + "InvalidCommand")
        _refused(c.call(BANK, "deposit", token, 100), "netlet.errors.BadArguments")
        _refused(c.call(BANK, "login", "carol", "12"), ERRORS + "InvalidCommand")
        _refused(c.call(BANK, "login", "carol", "9999"), ERRORS + "WrongPin")
        _refused(c.call(BANK, "withdraw", token, 101, "k-1"), ERRORS + "IdempotencyConflict")
        _refused(c.call(BANK, "withdraw", token, 500, "w-1"), ERRORS + "InsufficientFunds")
        _refused(c.call(BANK, "withdraw", token, 500, "w-1"), ERRORS + "InsufficientFunds")
        kind, outcome = c.call(BANK, "outcome", token, "w-1")  # journaled under its key
        assert kind == REPLY
        assert outcome.fields[3] is None
        assert outcome.fields[4].type_name == ERRORS + "InsufficientFunds"
        # nil from outcome is final: the key is settled.
        assert c.call(BANK, "outcome", token, "never-sent") == (REPLY, None)
        _refused(c.call(BANK, "deposit", token, 5, "never-sent"), ERRORS + "KeySettled")
        assert c.call(BANK, "balance", token) == (REPLY, 100)


def test_operator_lists_have_their_documented_bounds(bank: tuple[str, int], key: bytes) -> None:
    """§18.1: `outcomes` takes at most 1000 keys, `accounts` a prefix of at most 64
    characters; one answer per key, nil for a key never seen."""
    with Client(bank) as c:
        c.handshake(key)
        _open(c, "dave", "1357")
        assert c.call(BANK, "outcomes", ["open-dave", "nobody"])[1][1] is None
        _refused(c.call(BANK, "outcomes", [f"k{i}" for i in range(1001)]),
                 ERRORS + "InvalidCommand")
        kind, accounts = c.call(BANK, "accounts", "da")
        assert kind == REPLY
        assert [a.fields for a in accounts] == [["dave", "Owner", "open", 0]]
        _refused(c.call(BANK, "accounts", "d" * 65), ERRORS + "InvalidCommand")


def test_logout_and_closing_an_account(bank: tuple[str, int], key: bytes) -> None:
    """§18.1-2: logout of an unknown token is ignored; a closed account is listed as
    `closed`; a session's token is refused after logout (SessionExpired)."""
    with Client(bank) as c:
        c.handshake(key)
        token = _open(c, "erin", "1111")
        assert c.call(BANK, "logout", "no-such-token") == (REPLY, None)
        assert c.call(BANK, "logout", token) == (REPLY, None)
        _refused(c.call(BANK, "balance", token), "netlet.apps.bank._service.SessionExpired")
        kind, closed = c.call(BANK, "close_account", "erin", "close-erin")
        assert kind == REPLY
        assert _types(closed, 104, str) == ["erin"]
        kind, accounts = c.call(BANK, "accounts", "erin")
        assert [a.fields[2] for a in accounts] == ["closed"]
