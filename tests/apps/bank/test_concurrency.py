"""Many ATMs at once against one bank process: opposite transfers, one key raced, swarms.

The bank is a real ``netlet bank serve`` process; the ATMs are threads here,
spread over several client nodes so most of them have a connection of their
own. Every thread is joined with a time limit, so a deadlock fails the test
instead of hanging it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import netlet
from netlet.apps.bank import CashReceipt, InsufficientFunds
from netlet.apps.bank._atm import BankClient
from netlet.transport import find_user_key
from tests.apps.bank.bank_server import BankProcess
from tests.apps.bank.bank_server import netlet as run_netlet

PIN = "2468"
ATMS = 32
TRANSFERS = 60


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankProcess]:
    with BankProcess(tmp_path / "bank.db") as srv:
        yield srv


@pytest.fixture
def clients(bank: BankProcess) -> Iterator[list[BankClient]]:
    key = find_user_key(bank.address)  # the bank of this user, keyed per user on loopback
    nodes = [netlet.Node(key=key, call_timeout=10) for _ in range(4)]
    made = [BankClient(bank.address, node=nodes[i % len(nodes)], retry_for=10)
            for i in range(ATMS)]
    try:
        yield made
    finally:
        for node in nodes:
            node.close()


def run_all(targets: list[threading.Thread], limit: float = 25.0) -> None:
    for t in targets:
        t.start()
    for t in targets:
        t.join(limit)
        assert not t.is_alive(), f"{t.name} is stuck: deadlock?"


def test_opposite_transfers_between_the_same_accounts(bank: BankProcess,
                                                      clients: list[BankClient]) -> None:
    operator = clients[0]
    for account in ("a", "b"):
        operator.open_account(account, account.upper(), PIN, pin_cost=16)
        operator.card(account, PIN).deposit(100_000)
    moved = {"a": 0, "b": 0}  # net amount each account received, from acknowledged transfers
    refused = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def atm(i: int) -> None:
        src, dst = ("a", "b") if i % 2 else ("b", "a")
        rng = random.Random(i)
        card = clients[i].card(src, PIN)
        try:
            for _ in range(TRANSFERS):
                amount = rng.randint(1, 9_000)
                try:
                    card.transfer(dst, amount)
                except InsufficientFunds:
                    with lock:
                        refused.append(amount)
                    continue
                with lock:
                    moved[dst] += amount
                    moved[src] -= amount
        except BaseException as exc:
            errors.append(exc)

    run_all([threading.Thread(target=atm, args=(i,), name=f"atm-{i}") for i in range(ATMS)])
    assert errors == []
    balances = {a.account: a.balance for a in operator.accounts()}
    assert balances == {"a": 100_000 + moved["a"], "b": 100_000 + moved["b"]}
    assert sum(balances.values()) == 200_000  # money is conserved
    assert min(balances.values()) >= 0
    assert operator.audit().ok
    assert operator.audit().n_commands == 4 + ATMS * TRANSFERS  # opens, seeds, transfers


def test_one_key_raced_by_many_atms_applies_once(bank: BankProcess,
                                                 clients: list[BankClient]) -> None:
    clients[0].open_account("c", "C", PIN, pin_cost=16)
    start = threading.Barrier(ATMS)
    answers: list[object] = []

    def atm(i: int) -> None:
        card = clients[i].card("c", PIN)
        card.sign_in()
        start.wait()
        answers.append(card.deposit(1_234, key="the-same-key"))

    run_all([threading.Thread(target=atm, args=(i,)) for i in range(ATMS)])
    assert len(answers) == ATMS
    assert all(a == CashReceipt("c", 1_234, 1_234) for a in answers)
    assert clients[0].card("c", PIN).balance() == 1_234


@pytest.mark.parametrize("mode", ["--group-commit", "--no-group-commit"])
def test_swarm_check_passes_with_and_without_group_commit(new_db: Callable[[], str],
                                                         mode: str) -> None:
    with BankProcess(new_db(), mode) as srv:
        result = run_netlet("atm", "swarm", "--bank", srv.address, "--atms", "24",
                            "--seconds", "2", "--accounts", "30", "--plain")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check OK" in result.stdout
    batch = float(result.stdout.split("mean batch ")[1].split(")")[0])
    assert (batch > 1.0) if mode == "--group-commit" else (batch == 1.0)
