"""The ledger against a dict model: random commands, retries, conflicts and reversals."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from netlet.apps.bank import (
    CASH,
    AccountClosed,
    AccountExists,
    AccountNotEmpty,
    AlreadyReversed,
    BankError,
    CloseAccount,
    Command,
    Deposit,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    Ledger,
    NotReversible,
    OpenAccount,
    Reversal,
    Transfer,
    UnknownAccount,
    UnknownTransaction,
    Withdraw,
    hash_pin,
)

NAMES = ["ann", "ben", "cat", "dan"]
PIN_HASH = hash_pin("1234", n=16)
amounts = st.integers(1, 3_000)
bad_amounts = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=10**15 + 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.just(Decimal(5)),
)

Outcome = tuple[str, Any]  # ("ok", result dict) or ("error", exception type)


class Model:
    """What the ledger should do, in plain dicts."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.closed: set[str] = set()
        self.done: dict[str, tuple[Command, Outcome]] = {}
        self.reversed: dict[str, str] = {}

    def execute(self, command: Command, key: str) -> Outcome:
        if key in self.done:
            stored, outcome = self.done[key]
            return outcome if stored == command else ("error", IdempotencyConflict)
        try:
            outcome: Outcome = ("ok", self._apply(command, key))
        except BankError as exc:
            outcome = ("error", type(exc))
        self.done[key] = (command, outcome)
        return outcome

    def _open(self, account: str) -> None:
        if account != CASH and account not in self.balances:
            raise UnknownAccount(account)
        if account in self.closed:
            raise AccountClosed(account)

    def _move(self, src: str, dst: str, amount: int) -> None:
        self._open(src)
        self._open(dst)
        if src != CASH and self.balances[src] < amount:
            raise InsufficientFunds(src, self.balances[src], amount)
        for account, delta in ((src, -amount), (dst, amount)):
            if account != CASH:
                self.balances[account] += delta

    def _apply(self, command: Command, key: str) -> dict[str, Any]:
        b = self.balances
        match command:
            case OpenAccount(account=account, owner=owner):
                if account in b:
                    raise AccountExists(account)
                b[account] = 0
                return {"account": account, "owner": owner}
            case CloseAccount(account=account):
                self._open(account)
                if b[account]:
                    raise AccountNotEmpty(account, b[account])
                self.closed.add(account)
                return {"account": account}
            case Deposit(account=account, amount=amount):
                self._move(CASH, account, amount)
                return {"account": account, "amount": amount, "balance": b[account]}
            case Withdraw(account=account, amount=amount):
                self._move(account, CASH, amount)
                return {"account": account, "amount": amount, "balance": b[account]}
            case Transfer(src=src, dst=dst, amount=amount):
                self._move(src, dst, amount)
                return {
                    "src": src,
                    "dst": dst,
                    "amount": amount,
                    "src_balance": b[src],
                    "dst_balance": b[dst],
                }
            case Reversal(original_key=original_key):
                return self._reverse(original_key, key)
        raise AssertionError(command)

    def _reverse(self, original_key: str, key: str) -> dict[str, Any]:
        if original_key not in self.done:
            raise UnknownTransaction(original_key)
        original, (status, _) = self.done[original_key]
        if status != "ok" or not isinstance(original, Deposit | Withdraw | Transfer):
            raise NotReversible(original_key, "")
        if original_key in self.reversed:
            raise AlreadyReversed(original_key, self.reversed[original_key])
        src, dst, amount = original.movement()
        self._move(dst, src, amount)
        self.reversed[original_key] = key
        return {
            "original_key": original_key,
            "reversed": type(original).__name__,
            "amount": amount,
            "balances": {a: self.balances[a] for a in (src, dst) if a != CASH},
        }


class LedgerMachine(RuleBasedStateMachine):
    keys = Bundle("keys")
    make_db: Callable[[], str]  # a new, empty ledger's location: set per backend

    def __init__(self) -> None:
        super().__init__()
        self.db = self.make_db()
        self.ledger = Ledger(self.db, max_wait=0)
        self.model = Model()
        self.counter = 0

    def teardown(self) -> None:
        self.ledger.close()

    def run(self, command: Command, key: str | None = None) -> str:
        if key is None:
            self.counter += 1
            key = f"k{self.counter}"
        expected = self.model.execute(command, key)
        try:
            actual: Outcome = ("ok", self.ledger.execute(command, key))
        except BankError as exc:
            actual = ("error", type(exc))
        assert actual == expected, (command, key)
        return key

    @initialize(target=keys, funds=st.lists(amounts, min_size=2, max_size=3))
    def open_some(self, funds: list[int]) -> Any:
        keys = []
        for account, amount in zip(NAMES, funds, strict=False):
            keys.append(self.run(OpenAccount(account, account.title(), PIN_HASH)))
            keys.append(self.run(Deposit(account, amount)))
        return multiple(*keys)

    @rule(target=keys, account=st.sampled_from(NAMES))
    def open(self, account: str) -> str:
        return self.run(OpenAccount(account, account.title(), PIN_HASH))

    @rule(target=keys, account=st.sampled_from(NAMES))
    def close(self, account: str) -> str:
        return self.run(CloseAccount(account))

    @rule(target=keys, account=st.sampled_from(NAMES), amount=amounts)
    def deposit(self, account: str, amount: int) -> str:
        return self.run(Deposit(account, amount))

    @rule(target=keys, account=st.sampled_from(NAMES), amount=amounts)
    def withdraw(self, account: str, amount: int) -> str:
        return self.run(Withdraw(account, amount))

    @rule(target=keys, pair=st.permutations(NAMES).map(lambda p: p[:2]), amount=amounts)
    def transfer(self, pair: list[str], amount: int) -> str:
        return self.run(Transfer(pair[0], pair[1], amount))

    @rule(target=keys, original=keys)
    def reverse(self, original: str) -> str:
        return self.run(Reversal(original))

    @rule(key=keys)
    def retry(self, key: str) -> None:
        command, _ = self.model.done[key]
        self.run(command, key)

    @rule(key=keys, account=st.sampled_from(NAMES), amount=amounts)
    def reuse_key(self, key: str, account: str, amount: int) -> None:
        self.run(Deposit(account, amount), key)  # a conflict unless it is the same deposit

    @rule(key=keys)
    def retry_after_reopen(self, key: str) -> None:
        self.ledger.close()
        self.ledger = Ledger(self.db, max_wait=0)
        command, _ = self.model.done[key]
        self.run(command, key)

    @rule(account=st.sampled_from(NAMES), amount=bad_amounts)
    def bad_amount(self, account: str, amount: Any) -> None:
        before = self.ledger.accounts()
        try:
            self.ledger.execute(Withdraw(account, amount), "never-journaled")
        except InvalidAmount:
            pass
        else:
            raise AssertionError(f"{amount!r} was accepted")
        assert self.ledger.accounts() == before
        assert self.ledger.outcome("never-journaled") is None

    @invariant()
    def books_match_the_model(self) -> None:
        listed = {a.account: a.balance for a in self.ledger.accounts()}
        assert listed == self.model.balances
        closed = {a.account for a in self.ledger.accounts() if a.status == "closed"}
        assert closed == self.model.closed
        report = self.ledger.audit()
        assert report.ok, report.violations
        assert report.n_commands == len(self.model.done)


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.timeout(180)
def test_ledger_against_the_model(new_db: Callable[[], str]) -> None:
    """On each backend (SQLite, PostgreSQL): a new ledger per example."""

    class Machine(LedgerMachine):
        make_db = staticmethod(new_db)

    run_state_machine_as_test(Machine, settings=SETTINGS)
