"""``outcome`` settles a key in the ledger itself: its answer is final, also after restarts.

Each test runs a real ``netlet bank serve`` (on SQLite and on PostgreSQL) and
talks to it over TCP. The writer is held up by another connection that takes
the write lock (as a slow disk or a long commit would), so a request can be
queued when its caller gives up and someone asks about its key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import netlet
from netlet.apps.bank import KeySettled
from netlet.apps.bank._atm import BankClient
from netlet.errors import CallTimeout
from netlet.transport import find_user_key
from tests.apps.bank.bank_server import BankProcess
from tests.apps.bank.conftest import hold_writer, raw_sql

PIN = "1234"


def _applied(db: str, key: str) -> bool:
    rows = raw_sql(db, f"SELECT ok, kind FROM commands WHERE key='{key}'")  # keys of ours
    return bool(rows) and rows[0][0] == 1 and rows[0][1] != "Fence"


@pytest.mark.timeout(90)
def test_outcome_waits_for_a_queued_request_whose_caller_gave_up(
        new_db: Callable[[], str], node_factory: Callable[..., netlet.Node]) -> None:
    db = new_db()
    with BankProcess(db) as bank, BankClient(
            # the bank's per-user key; no direct calls: a timeout then sends a cancel
            bank.address, node=node_factory(key=find_user_key(bank.address), call_timeout=60,
                                            direct_calls=False),
            timeout=60, retry_for=5) as client:
        client.open_account("alice", "Alice", PIN, pin_cost=16)
        token = client.bank.login("alice", PIN).token
        with hold_writer(db):  # the bank's writer now waits for us
            with pytest.raises(CallTimeout):  # the caller gives up: the call is cancelled
                client.bank.with_options(timeout=1.0).deposit(token, 500, "k-given-up")
            answer: dict[str, Any] = {}
            asker = threading.Thread(
                target=lambda: answer.update(o=client.bank.outcome(token, "k-given-up")))
            asker.start()
            asker.join(3.0)  # a bank that answers before its writer did would answer now
        asker.join(30)
        assert "o" in answer
        outcome = answer["o"]
        client.bank.deposit(token, 1, "k-after")  # the writer is past the queued request now
        applied = _applied(db, "k-given-up")
        if outcome is None:
            assert not applied, "outcome said 'never applied', then the bank applied it"
        else:
            assert outcome.ok
            assert applied
        assert client.bank.balance(token) == (501 if applied else 1)


@pytest.mark.timeout(90)
def test_a_fenced_key_stays_fenced_after_a_restart(
        new_db: Callable[[], str], node_factory: Callable[..., netlet.Node]) -> None:
    db = new_db()
    with BankProcess(db) as bank, BankClient(
            bank.address, node=node_factory(key=find_user_key(bank.address), call_timeout=30),
            retry_for=10) as client:
        client.open_account("alice", "Alice", PIN, pin_cost=16)
        client.open_account("bob", "Bob", PIN, pin_cost=16)
        alice, bob = client.card("alice", PIN), client.card("bob", PIN)
        assert alice.outcome("k-never") is None  # fenced: it never applies
        bank.kill()
        bank.start()
        with pytest.raises(KeySettled):
            alice.deposit(500, key="k-never")
        with pytest.raises(netlet.NetletError):  # another customer cannot ask about it
            bob.outcome("k-never")
        assert alice.outcome("k-never") is None
        assert client.outcomes(["k-never", "k-other"]) == [None, None]
        with pytest.raises(KeySettled):  # the operator's fence holds too
            bob.deposit(500, key="k-other")
        assert alice.balance() == 0
    assert not _applied(db, "k-never")
