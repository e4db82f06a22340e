"""The ledger: commands, refusals that change nothing, idempotency, group commit, audit."""

from __future__ import annotations

import pickle
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import netlet.apps.bank as bank
from netlet.apps.bank import (
    CASH,
    MAX_AMOUNT,
    MAX_TOTAL,
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
    InvalidCommand,
    Ledger,
    LedgerClosed,
    LimitExceeded,
    NotReversible,
    OpenAccount,
    Reversal,
    Transfer,
    UnknownAccount,
    UnknownTransaction,
    Withdraw,
    command_from_record,
    format_amount,
    hash_pin,
    parse_amount,
)
from netlet.apps.bank._commands import error_from_record, error_to_record
from netlet.errors import ConfigError, NetletError
from tests.apps.bank.conftest import hold_writer, raw_sql

PIN_HASH = hash_pin("1234", n=16)


@pytest.fixture
def ledger(new_db: Callable[[], str]) -> Iterator[Ledger]:
    with Ledger(new_db()) as led:
        led.execute(OpenAccount("alice", "Alice", PIN_HASH), "open-alice")
        led.execute(OpenAccount("bob", "Bob", PIN_HASH), "open-bob")
        led.execute(Deposit("alice", 10_000), "seed-alice")
        yield led


def snapshot(led: Ledger) -> tuple[Any, ...]:
    """Everything a refusal must leave alone (besides its own journal line)."""
    audit = led.audit()
    assert audit.ok, audit.violations
    return (led.accounts(), audit.n_entries, led.statement("alice", 100), led.statement("bob", 100))


# -- amounts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("12.34", 1234),
        ("5", 500),
        ("0.05", 5),
        ("0.5", 50),
        (" 7.10 ", 710),
        ("007.00", 700),
        ("12.340", 1234),
        ("10000000000000", MAX_AMOUNT),
    ],
)
def test_parse_amount(text: str, cents: int) -> None:
    assert parse_amount(text) == cents


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("12.345", "fractions of a cent"),
        ("-1", "negative"),
        ("-0.50", "negative"),
        ("0", "zero"),
        ("0.00", "zero"),
        ("abc", "not a number"),
        ("", "not a number"),
        ("1e3", "not a number"),
        ("1,000", "not a number"),
        ("12.", "not a number"),
        (".5", "not a number"),
        ("+5", "not a number"),
        ("١٢", "not a number"),
        ("10000000000000.01", "above the limit"),
        ("9" * 50, "too long"),
    ],
)
def test_parse_amount_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidAmount, match=message):
        parse_amount(text)


def test_parse_amount_rejects_non_text() -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(12)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cents", "text"), [(1234, "12.34"), (5, "0.05"), (0, "0.00"), (-5, "-0.05"), (100, "1.00")]
)
def test_format_amount(cents: int, text: str) -> None:
    assert format_amount(cents) == text
    if cents > 0:
        assert parse_amount(text) == cents


def test_format_amount_rejects_non_int() -> None:
    with pytest.raises(InvalidAmount):
        format_amount(1.5)  # type: ignore[arg-type]


BAD_AMOUNTS = [
    0,
    -1,
    -MAX_AMOUNT,
    MAX_AMOUNT + 1,
    10**30,
    pytest.param(10**10_000, id="10**10000"),
    True,
    False,
    1.0,
    12.5,
    Decimal("12"),
    "12",
    None,
]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
@pytest.mark.parametrize(
    "make",
    [
        lambda a: Deposit("alice", a),
        lambda a: Withdraw("alice", a),
        lambda a: Transfer("alice", "bob", a),
    ],
)
def test_bad_amounts_change_nothing(ledger: Ledger, make: Any, amount: object) -> None:
    before = snapshot(ledger)
    with pytest.raises(InvalidAmount):
        ledger.execute(make(amount), "bad")
    assert snapshot(ledger) == before
    assert ledger.outcome("bad") is None  # malformed commands are not journaled


def test_largest_amount(ledger: Ledger) -> None:
    assert ledger.execute(Deposit("bob", MAX_AMOUNT), "big")["balance"] == MAX_AMOUNT


# -- commands and records ------------------------------------------------------

COMMANDS: list[Command] = [
    OpenAccount("carol", "Carol Doe", PIN_HASH),
    CloseAccount("carol"),
    Deposit("alice", 1),
    Withdraw("alice", 2),
    Transfer("alice", "bob", 3),
    Reversal("some-key"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_record_round_trip(command: Command) -> None:
    record = command.to_record()
    assert record["type"] == type(command).__name__
    assert command_from_record(record) == command
    assert command_from_record(pickle.loads(pickle.dumps(record))) == command


def test_commands_are_frozen() -> None:
    deposit = Deposit("alice", 5)
    with pytest.raises(AttributeError):
        deposit.amount = 6  # type: ignore[misc]
    assert not isinstance(Withdraw("alice", 5), Deposit)


@pytest.mark.parametrize(
    "record",
    [
        None,
        [],
        {},
        {"type": "Steal", "account": "a"},
        {"type": "Deposit", "account": "a"},
        {"type": "Deposit", "account": "a", "amount": 1, "extra": 2},
        {"type": "Deposit", "account": 5, "amount": 1},
        {"type": "Deposit", "account": "a", "amount": 1.0},
        {"type": "Transfer", "src": "a", "dst": "a", "amount": 1},
        {"type": "OpenAccount", "account": "a", "owner": "A", "pin_hash": "1234"},
        {"type": "Reversal", "original_key": ""},
    ],
)
def test_bad_records(record: object) -> None:
    with pytest.raises(InvalidCommand):
        command_from_record(record)


@pytest.mark.parametrize(
    "command",
    [
        OpenAccount("", "X", PIN_HASH),
        OpenAccount("@cash", "X", PIN_HASH),
        OpenAccount("a b", "X", PIN_HASH),
        OpenAccount("x" * 65, "X", PIN_HASH),
        OpenAccount("carol", "", PIN_HASH),
        OpenAccount("carol", "  ", PIN_HASH),
        OpenAccount("carol", "C", "1234"),
        Deposit(CASH, 5),
        Withdraw("al\nice", 5),
        Transfer("alice", "alice", 5),
        Transfer(CASH, "bob", 5),
        Reversal(""),
        Reversal(7),
    ],  # type: ignore[arg-type]
)
def test_malformed_commands_change_nothing(ledger: Ledger, command: Command) -> None:
    before = snapshot(ledger)
    with pytest.raises(InvalidCommand):
        ledger.execute(command, "bad")
    assert snapshot(ledger) == before
    assert ledger.outcome("bad") is None


@pytest.mark.parametrize("key", ["", "x" * 201, "a\nb", 17, None, b"key"])
def test_bad_keys(ledger: Ledger, key: object) -> None:
    with pytest.raises(InvalidCommand, match="idempotency key"):
        ledger.execute(Deposit("alice", 5), key)  # type: ignore[arg-type]


def test_not_a_command(ledger: Ledger) -> None:
    with pytest.raises(InvalidCommand):
        ledger.execute({"type": "Deposit"}, "k")  # type: ignore[arg-type]

    @dataclass(frozen=True, slots=True)
    class Deposit2(Deposit):  # not one of the bank's commands: it could not be replayed
        pass

    with pytest.raises(InvalidCommand):
        ledger.execute(Deposit2("alice", 5), "k")
    assert ledger.outcome("k") is None


# -- each command ---------------------------------------------------------------


def test_open_and_list(ledger: Ledger) -> None:
    assert ledger.execute(OpenAccount("carol", "Carol", PIN_HASH), "k") == {
        "account": "carol",
        "owner": "Carol",
    }
    assert [(a.account, a.owner, a.status, a.balance) for a in ledger.accounts()] == [
        ("alice", "Alice", "open", 10_000),
        ("bob", "Bob", "open", 0),
        ("carol", "Carol", "open", 0),
    ]


def test_open_existing_is_refused_and_recorded(ledger: Ledger) -> None:
    before = snapshot(ledger)
    with pytest.raises(AccountExists):
        ledger.execute(OpenAccount("alice", "Mallory", PIN_HASH), "k")
    assert snapshot(ledger) == before
    outcome = ledger.outcome("k")
    assert outcome is not None
    assert isinstance(outcome.error, AccountExists)


def test_deposit_withdraw_transfer(ledger: Ledger) -> None:
    assert ledger.execute(Deposit("bob", 250), "d") == {
        "account": "bob",
        "amount": 250,
        "balance": 250,
    }
    assert ledger.execute(Withdraw("alice", 1_000), "w") == {
        "account": "alice",
        "amount": 1_000,
        "balance": 9_000,
    }
    assert ledger.execute(Transfer("alice", "bob", 9_000), "t") == {
        "src": "alice",
        "dst": "bob",
        "amount": 9_000,
        "src_balance": 0,
        "dst_balance": 9_250,
    }
    assert (ledger.balance("alice"), ledger.balance("bob")) == (0, 9_250)
    assert ledger.audit().ok


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (Withdraw("alice", 10_001), InsufficientFunds),
        (Transfer("alice", "bob", 10_001), InsufficientFunds),
        (Transfer("bob", "alice", 1), InsufficientFunds),
        (Deposit("zed", 1), UnknownAccount),
        (Withdraw("zed", 1), UnknownAccount),
        (Transfer("alice", "zed", 1), UnknownAccount),
        (Transfer("zed", "alice", 1), UnknownAccount),
        (CloseAccount("zed"), UnknownAccount),
        (CloseAccount("alice"), AccountNotEmpty),
    ],
)
def test_refusals_change_nothing(ledger: Ledger, command: Command, error: type[BankError]) -> None:
    before = snapshot(ledger)
    with pytest.raises(error):
        ledger.execute(command, "refused")
    assert snapshot(ledger) == before
    outcome = ledger.outcome("refused")
    assert outcome is not None
    assert not outcome.ok
    assert type(outcome.error) is error
    with pytest.raises(error):
        outcome.unwrap()


def test_insufficient_funds_details(ledger: Ledger) -> None:
    with pytest.raises(InsufficientFunds) as info:
        ledger.execute(Withdraw("alice", 10_001), "k")
    assert (info.value.account, info.value.balance, info.value.amount) == ("alice", 10_000, 10_001)


def test_close_account(ledger: Ledger) -> None:
    ledger.execute(Withdraw("alice", 10_000), "empty")
    assert ledger.execute(CloseAccount("alice"), "close") == {"account": "alice"}
    assert ledger.balance("alice") == 0
    assert ledger.accounts()[0].status == "closed"
    before = snapshot(ledger)
    for i, command in enumerate(
        [
            Deposit("alice", 1),
            Withdraw("alice", 1),
            Transfer("bob", "alice", 1),
            Transfer("alice", "bob", 1),
            CloseAccount("alice"),
        ]
    ):
        with pytest.raises(AccountClosed):
            ledger.execute(command, f"after-close-{i}")
    with pytest.raises(AccountExists):
        ledger.execute(OpenAccount("alice", "Alice again", PIN_HASH), "reopen")
    assert snapshot(ledger) == before
    assert len(ledger.statement("alice")) == 2  # history stays


def test_limit_on_money_in_the_bank(new_db: Callable[[], str]) -> None:
    with Ledger(new_db()) as led:
        led.execute(OpenAccount("rich", "Rich", PIN_HASH), "open")
        threads = [
            threading.Thread(
                target=lambda t=t: [
                    led.execute(Deposit("rich", MAX_AMOUNT), f"d{t}-{i}") for i in range(125)
                ]
            )
            for t in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert led.balance("rich") == MAX_TOTAL
        with pytest.raises(LimitExceeded):
            led.execute(Deposit("rich", 1), "one-too-many")
        assert led.balance("rich") == MAX_TOTAL
        report = led.audit()
        assert report.ok
        assert report.total == 0


# -- reversals ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "after"),
    [
        (Deposit("bob", 300), (10_000, 0)),
        (Withdraw("alice", 300), (10_000, 0)),
        (Transfer("alice", "bob", 300), (10_000, 0)),
    ],
)
def test_reversal(ledger: Ledger, original: Command, after: tuple[int, int]) -> None:
    ledger.execute(original, "orig")
    result = ledger.execute(Reversal("orig"), "rev")
    assert result["original_key"] == "orig"
    assert result["reversed"] == type(original).__name__
    assert result["amount"] == 300
    assert (ledger.balance("alice"), ledger.balance("bob")) == after
    first = ledger.outcome("orig")
    assert first is not None
    assert first.ok
    assert first.command == original
    kinds = [e.kind for e in ledger.statement("alice", 100) + ledger.statement("bob", 100)]
    assert type(original).__name__ in kinds
    assert "Reversal" in kinds
    with pytest.raises(AlreadyReversed) as info:
        ledger.execute(Reversal("orig"), "rev-again")
    assert info.value.reason == "rev"
    assert ledger.audit().ok


def test_reversal_refusals(ledger: Ledger) -> None:
    with pytest.raises(UnknownTransaction):
        ledger.execute(Reversal("never"), "r1")
    with pytest.raises(InsufficientFunds):
        ledger.execute(Withdraw("bob", 1), "refused")
    with pytest.raises(NotReversible, match="refused"):
        ledger.execute(Reversal("refused"), "r2")
    with pytest.raises(NotReversible, match="OpenAccount"):
        ledger.execute(Reversal("open-alice"), "r3")
    ledger.execute(Deposit("bob", 5), "d")
    ledger.execute(Reversal("d"), "r4")
    with pytest.raises(NotReversible, match="Reversal"):
        ledger.execute(Reversal("r4"), "r5")
    with pytest.raises(UnknownTransaction):
        ledger.execute(Reversal("r6"), "r6")  # itself: not journaled yet
    before = snapshot(ledger)
    ledger.execute(Transfer("alice", "bob", 100), "t")
    ledger.execute(Withdraw("bob", 100), "spent")
    with pytest.raises(InsufficientFunds):  # the money moved on; no overdraft for a reversal
        ledger.execute(Reversal("t"), "r7")
    ledger.execute(Reversal("spent"), "r8")
    ledger.execute(Reversal("t"), "r9")
    assert snapshot(ledger)[0] == before[0]


# -- idempotency ------------------------------------------------------------------


def test_same_key_same_command_applies_once(ledger: Ledger) -> None:
    first = ledger.execute(Transfer("alice", "bob", 700), "t")
    for _ in range(3):
        assert ledger.execute(Transfer("alice", "bob", 700), "t") == first
    assert ledger.balance("bob") == 700
    outcome = ledger.outcome("t")
    assert outcome is not None
    assert outcome.result == first
    assert outcome.unwrap() == first


def test_same_key_other_command_conflicts(ledger: Ledger) -> None:
    ledger.execute(Deposit("bob", 5), "k")
    before = snapshot(ledger)
    for other in (Deposit("bob", 6), Deposit("alice", 5), Withdraw("bob", 5)):
        with pytest.raises(IdempotencyConflict) as info:
            ledger.execute(other, "k")
        assert info.value.key == "k"
    assert snapshot(ledger) == before
    outcome = ledger.outcome("k")
    assert outcome is not None
    assert outcome.command == Deposit("bob", 5)


def test_refusal_is_replayed_for_its_key(ledger: Ledger) -> None:
    with pytest.raises(InsufficientFunds):
        ledger.execute(Withdraw("bob", 50), "w")
    ledger.execute(Deposit("bob", 100), "d")
    with pytest.raises(InsufficientFunds) as info:  # same key: same answer, though it would fit now
        ledger.execute(Withdraw("bob", 50), "w")
    assert info.value.args == ("bob", 0, 50)
    assert ledger.balance("bob") == 100


def test_outcome_of_unknown_key(ledger: Ledger) -> None:
    assert ledger.outcome("never-seen") is None


def test_survives_reopen(new_db: Callable[[], str]) -> None:
    path = new_db()
    with Ledger(path) as led:
        led.execute(OpenAccount("alice", "Alice", PIN_HASH), "open")
        first = led.execute(Deposit("alice", 42), "d")
    with Ledger(path, group_commit=False) as led:
        assert led.balance("alice") == 42
        assert led.execute(Deposit("alice", 42), "d") == first
        assert led.balance("alice") == 42
        assert led.audit().ok


def test_journal_replays_into_the_same_books(ledger: Ledger,
                                            new_db: Callable[[], str]) -> None:
    for i, command in enumerate(
        [
            Transfer("alice", "bob", 10),
            Withdraw("bob", 99),
            Deposit("bob", 7),
            Reversal("k0"),
            CloseAccount("bob"),
            OpenAccount("carol", "C", PIN_HASH),
            Transfer("alice", "carol", 1),
        ]
    ):
        try:
            ledger.execute(command, f"k{i}")
        except BankError:
            pass
    journal = ledger.journal(limit=3) + ledger.journal(after=3)
    assert [o.seq for o in journal] == sorted(o.seq for o in journal)
    with Ledger(new_db()) as replica:
        for record in journal:
            command = command_from_record(record.command.to_record())
            if record.error is None:
                assert replica.execute(command, record.key) == record.result
            else:
                with pytest.raises(type(record.error)) as info:
                    replica.execute(command, record.key)
                assert info.value.args == record.error.args
        assert replica.accounts() == ledger.accounts()


# -- statements and audit ----------------------------------------------------------


def test_statement(ledger: Ledger) -> None:
    ledger.execute(Transfer("alice", "bob", 300), "t1")
    ledger.execute(Withdraw("alice", 200), "w1")
    entries = ledger.statement("alice", limit=2)
    assert [(e.key, e.kind, e.amount, e.counterparty, e.balance_after) for e in entries] == [
        ("w1", "Withdraw", -200, CASH, 9_500),
        ("t1", "Transfer", -300, "bob", 9_700),
    ]
    assert entries[0].timestamp >= entries[1].timestamp > time.time() - 60
    full = ledger.statement("alice", limit=100)
    assert [e.key for e in full] == ["w1", "t1", "seed-alice"]
    assert full[-1].balance_after == full[-1].amount == 10_000
    assert ledger.statement("bob")[0].amount == 300
    assert ledger.statement("alice", limit=0) == []
    with pytest.raises(UnknownAccount):
        ledger.statement("zed")
    with pytest.raises(UnknownAccount):
        ledger.statement(CASH)
    with pytest.raises(InvalidCommand):
        ledger.statement("alice", limit=-1)


def test_balance_of_unknown_account(ledger: Ledger) -> None:
    for account in ("zed", CASH):
        with pytest.raises(UnknownAccount):
            ledger.balance(account)


def test_audit_finds_tampering(ledger: Ledger) -> None:
    assert ledger.audit().ok
    raw_sql(ledger.path, "UPDATE accounts SET balance = balance + 1 WHERE account='bob'")
    report = ledger.audit()
    assert not report.ok
    assert any("cached balance" in v for v in report.violations)
    raw_sql(ledger.path, "UPDATE accounts SET balance = balance - 1 WHERE account='bob'",
            "INSERT INTO entries(seq, account, amount, counterparty) VALUES (3, 'bob', -5, 'x')",
            "UPDATE accounts SET balance = -5 WHERE account='bob'")
    report = ledger.audit()
    assert not report.ok
    assert report.total == -5
    text = " ".join(report.violations)
    assert "sums to -5" in text
    assert "negative balance" in text
    assert "journal sums" in text


# -- exceptions --------------------------------------------------------------------

ERRORS: list[BankError] = [
    BankError("x"),
    InvalidCommand("x"),
    InvalidAmount("x"),
    UnknownAccount("a"),
    AccountExists("a"),
    AccountClosed("a"),
    AccountNotEmpty("a", 5),
    InsufficientFunds("a", 1, 2),
    LimitExceeded(3),
    IdempotencyConflict("k"),
    UnknownTransaction("k"),
    NotReversible("k", "why"),
    AlreadyReversed("k", "r"),
    bank.KeySettled("k"),
    bank.WrongPin("a", 2),
    bank.CardLocked("a", 12.5),
    LedgerClosed("x"),
    bank.StorageError("x"),
]


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_rebuild_from_args(exc: BankError) -> None:
    for copy in (
        type(exc)(*exc.args),
        pickle.loads(pickle.dumps(exc)),
        error_from_record(error_to_record(exc)),
    ):
        assert type(copy) is type(exc)
        assert copy.args == exc.args
        assert str(copy) == str(exc)
    assert isinstance(exc, NetletError)


def test_every_error_is_listed() -> None:
    def walk(cls: type[BankError]) -> set[type[BankError]]:
        return {cls}.union(*(walk(sub) for sub in cls.__subclasses__()))

    public = {c for c in walk(BankError) if not c.__name__.startswith("_")}
    assert set(bank.ERROR_TYPES) == public == {type(e) for e in ERRORS}


def test_errors_subclass_builtins() -> None:
    assert issubclass(InvalidAmount, ValueError)
    assert issubclass(InvalidAmount, InvalidCommand)
    assert issubclass(UnknownAccount, LookupError)
    assert issubclass(IdempotencyConflict, ValueError)
    assert issubclass(bank.WrongPin, PermissionError)
    assert issubclass(bank.CardLocked, PermissionError)
    assert issubclass(LedgerClosed, RuntimeError)
    assert issubclass(bank.StorageError, OSError)


def _isort_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_public_api() -> None:
    # sorted the way ruff's RUF022 wants it: CONSTANTS, Classes, functions
    assert bank.__all__ == sorted(bank.__all__, key=_isort_key)
    for name in bank.__all__:
        assert getattr(bank, name) is not None
    for module in (bank._commands, bank._ledger, bank._pins):
        assert module.__all__ == sorted(module.__all__, key=_isort_key)
        assert module.__doc__


# -- lifetime and configuration -------------------------------------------------------


def test_closed_ledger(new_db: Callable[[], str]) -> None:
    led = Ledger(new_db())
    led.close()
    led.close()
    with pytest.raises(LedgerClosed):
        led.execute(Deposit("a", 1), "k")
    with pytest.raises(LedgerClosed):
        led.balance("a")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch": 0},
        {"max_batch": 1.5},
        {"max_wait": -1},
        {"max_wait": 5},
        {"lock_seconds": -1},
        {"max_pin_attempts": 0},
    ],
)
def test_bad_config(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Ledger(tmp_path / "bank.db", **kwargs)


def test_in_memory_database_is_refused() -> None:
    with pytest.raises(ConfigError, match="write-ahead log"):
        Ledger(":memory:")


def test_wal_and_full_sync(tmp_path: Path) -> None:
    with Ledger(tmp_path / "bank.db") as ledger:
        with sqlite3.connect(ledger.path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        raw.close()
        assert ledger._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# -- storage failures ---------------------------------------------------------------


def test_storage_error_in_one_command(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    from netlet.apps.bank import StorageError, _batch, _records

    def broken(*args: object) -> None:
        raise ledger._store.errors[0]("disk I/O error")  # the database driver's own error

    def failing(book: Any, *args: object) -> None:
        conn = book.conn if isinstance(book, _records.SqlBook) else book.run.conn
        conn.execute("INSERT INTO no_such_table VALUES (1)")  # the server refuses it

    before = snapshot(ledger)
    with monkeypatch.context() as patch:  # both ways a batch runs: in memory, then careful
        patch.setattr(_records.SqlBook, "move", broken)
        patch.setattr(_batch._Book, "move", broken)
        with pytest.raises(StorageError, match="disk I/O error"):
            ledger.execute(Deposit("bob", 5), "k")
    assert snapshot(ledger) == before
    assert ledger.outcome("k") is None  # unknown outcome: the caller retries with the key
    with monkeypatch.context() as patch:
        patch.setattr(_records.SqlBook, "move", failing)
        patch.setattr(_batch._Book, "move", failing)
        results: list[object] = []
        threads = [threading.Thread(target=lambda c=c, k=k: results.append(
            _try(ledger, c, k))) for c, k in [(Deposit("bob", 5), "k"),
                                               (OpenAccount("carol", "C", PIN_HASH), "o-c")]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert any(isinstance(r, StorageError) and "no_such_table" in str(r) for r in results)
    assert {"account": "carol", "owner": "C"} in results  # its batch-mate is unharmed
    assert ledger.outcome("k") is None
    assert ledger.execute(Deposit("bob", 5), "k")["balance"] == 5
    assert ledger.audit().ok


def _try(ledger: Ledger, command: Command, key: str) -> object:
    try:
        return ledger.execute(command, key)
    except BankError as exc:
        return exc


class _FailingCommit:
    """Stands in for the writer's connection; its next COMMIT fails."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_failed_commit_fails_the_batch(ledger: Ledger) -> None:
    """SQLite: the batch fails (outcome unknown: retry the key). PostgreSQL: the writer
    drops the connection whose COMMIT failed and runs the batch again on a new one (safe:
    a command that did commit is found by its key), so the caller gets its answer."""
    from netlet.apps.bank import StorageError

    real = ledger._conn  # private: swap the writer's connection while it waits for work
    fake = ledger._conn = _FailingCommit(real)  # type: ignore[assignment]
    try:
        if ledger._store.pipelined:
            assert ledger.execute(Deposit("bob", 5), "k")["balance"] == 5
            assert ledger._conn is not fake
        else:
            with pytest.raises(StorageError, match="disk full"):
                ledger.execute(Deposit("bob", 5), "k")
            assert ledger.outcome("k") is None
            assert ledger.balance("bob") == 0
    finally:
        if ledger._conn is fake:
            ledger._conn = real
    assert ledger.execute(Deposit("bob", 5), "k")["balance"] == 5
    assert ledger.balance("bob") == 5
    assert ledger.audit().ok


# -- many threads ----------------------------------------------------------------------


def _run_threads(targets: list[Any], timeout: float = 30) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"


@pytest.mark.parametrize("group_commit", [True, False])
def test_many_threads_batch_commits(new_db: Callable[[], str], group_commit: bool) -> None:
    n_threads, per_thread = 32, 20
    with Ledger(new_db(), group_commit=group_commit) as led:
        for t in range(n_threads):
            led.execute(OpenAccount(f"a{t}", "A", PIN_HASH), f"open{t}")
        before = led.statistics()
        barrier = threading.Barrier(n_threads)

        def work(t: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                led.execute(Deposit(f"a{t}", 1 + i), f"d{t}-{i}")

        _run_threads([lambda t=t: work(t) for t in range(n_threads)])
        stats = led.statistics()
        commands = stats.commands - before.commands
        commits = stats.commits - before.commits
        assert commands == n_threads * per_thread
        if group_commit:
            assert commits < commands
            assert stats.max_batch_size > 1
            assert stats.mean_batch_size > 1
        else:
            assert commits == commands
            assert stats.max_batch_size == 1
        assert all(a.balance == sum(range(1, per_thread + 1)) for a in led.accounts())
        assert led.audit().ok


def test_one_batch_isolates_each_command(ledger: Ledger) -> None:
    jobs: dict[str, tuple[Command, str]] = {
        "ok": (Deposit("bob", 100), "b1"),
        "poor": (Withdraw("bob", 10**6), "b2"),
        "unknown": (Transfer("alice", "zed", 5), "b3"),
        "conflict": (Deposit("alice", 1), "seed-alice"),
        "retry": (Deposit("alice", 10_000), "seed-alice"),
        "transfer": (Transfer("alice", "bob", 500), "b4"),
        "dup1": (Withdraw("alice", 200), "dup"),
        "dup2": (Withdraw("alice", 200), "dup"),
    }
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        command, key = jobs[name]
        try:
            results[name] = ledger.execute(command, key)
        except BankError as exc:
            results[name] = exc

    before = ledger.statistics()
    with hold_writer(ledger.path):  # the writer blocks in BEGIN while the jobs queue up
        threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while ledger._active < len(jobs):  # private: every caller has queued its command
            assert time.monotonic() < deadline
            time.sleep(0.001)
    for thread in threads:
        thread.join(10)
    assert ledger.statistics().commits - before.commits <= 2
    assert results["ok"]["balance"] >= 100
    assert isinstance(results["poor"], InsufficientFunds)
    assert isinstance(results["unknown"], UnknownAccount)
    assert isinstance(results["conflict"], IdempotencyConflict)
    assert results["retry"] == {"account": "alice", "amount": 10_000, "balance": 10_000}
    assert results["transfer"]["amount"] == 500
    assert results["dup1"] == results["dup2"]
    assert (ledger.balance("alice"), ledger.balance("bob")) == (9_300, 600)
    assert ledger.audit().ok


def test_transfers_both_ways_from_32_threads(new_db: Callable[[], str]) -> None:
    import random

    with Ledger(new_db()) as led:
        for name in ("a", "b"):
            led.execute(OpenAccount(name, name.upper(), PIN_HASH), f"open-{name}")
            led.execute(Deposit(name, 5_000), f"seed-{name}")
        done = threading.Event()
        refused: list[int] = []
        sums: list[int] = []

        def work(t: int) -> None:
            rng = random.Random(t)
            src, dst = ("a", "b") if t % 2 else ("b", "a")
            for i in range(25):
                try:
                    led.execute(Transfer(src, dst, rng.randint(1, 800)), f"t{t}-{i}")
                except InsufficientFunds:
                    refused.append(1)

        def watch() -> None:
            while not done.is_set():  # each listing is one snapshot: money is conserved in it
                sums.append(sum(a.balance for a in led.accounts()))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            _run_threads([lambda t=t: work(t) for t in range(32)])
        finally:
            done.set()
            watcher.join(10)
        assert led.balance("a") + led.balance("b") == 10_000
        assert min(led.balance("a"), led.balance("b")) >= 0
        assert sums
        assert set(sums) == {10_000}
        assert led.statistics().commands >= 32 * 25
        report = led.audit()
        assert report.ok, report.violations
        assert report.n_commands == 4 + 32 * 25


def test_close_while_busy(new_db: Callable[[], str]) -> None:
    path = new_db()
    led = Ledger(path)
    led.execute(OpenAccount("a", "A", PIN_HASH), "open")
    acked: list[str] = []
    busy = threading.Event()

    def work(t: int) -> None:
        for i in range(10_000):
            try:
                led.execute(Deposit("a", 1), f"{t}-{i}")
            except LedgerClosed:
                return
            acked.append(f"{t}-{i}")
            if len(acked) >= 200:
                busy.set()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    assert busy.wait(30)
    led.close()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert not led._writer.is_alive()
    with Ledger(path) as again:
        assert again.balance("a") == len(acked) < 8 * 10_000
        assert all(again.outcome(key) is not None for key in acked)
        assert again.audit().ok


# -- crash ----------------------------------------------------------------------------

CRASH_CHILD = """
import itertools, json, random, sys, threading
from netlet.apps.bank import *

path, n_threads, run, pin_hash = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lock = threading.Lock()

def say(obj):
    line = json.dumps(obj) + "\\n"
    with lock:
        sys.stdout.write(line)
        sys.stdout.flush()

led = Ledger(path)
accounts = [f"acct{i}" for i in range(6)]
for a in accounts:
    led.execute(OpenAccount(a, "Owner", pin_hash), f"open-{a}")  # a retry on the second run
    led.execute(Deposit(a, 100_000), f"seed-{a}")
say({"ready": True})

def work(t):
    rng, mine = random.Random(f"{run}-{t}"), []
    for i in itertools.count():
        key, kind, amount = f"{run}-t{t}-{i}", rng.random(), rng.randint(1, 5_000)
        a, b = rng.sample(accounts, 2)
        if kind < 0.25:
            cmd = Deposit(a, amount)
        elif kind < 0.5:
            cmd = Withdraw(a, amount)
        elif kind < 0.9 or not mine:
            cmd = Transfer(a, b, amount)
        else:
            cmd = Reversal(rng.choice(mine))
        ack = {"key": key, "record": cmd.to_record()}
        try:
            ack["result"] = led.execute(cmd, key)
            mine.append(key)
        except BankError as exc:
            ack["error"] = [type(exc).__name__, list(exc.args)]
        say(ack)

for t in range(n_threads):
    threading.Thread(target=work, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def _replay_balances(led: Ledger) -> dict[str, int]:
    """Balances recomputed by replaying the journal's successful commands in order."""
    balances: dict[str, int] = {}
    moves: dict[str, tuple[str, str, int]] = {}
    after = 0
    while page := led.journal(after=after, limit=500):
        for outcome in page:
            after = outcome.seq
            command = outcome.command
            if not outcome.ok:
                continue
            if isinstance(command, OpenAccount):
                balances[command.account] = 0
                continue
            if isinstance(command, Reversal):
                dst, src, amount = moves[command.original_key]
            else:
                src, dst, amount = command.movement()  # type: ignore[attr-defined]
                moves[outcome.key] = (src, dst, amount)
            for account, delta in ((src, -amount), (dst, amount)):
                if account != CASH:
                    balances[account] += delta
                    assert balances[account] >= 0
    return balances


def test_kill_9_loses_nothing_acknowledged(new_db: Callable[[], str], tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    path = new_db()
    script = tmp_path / "child.py"
    script.write_text(CRASH_CHILD)
    acks: list[dict[str, Any]] = []
    for run in ("first", "second"):  # the second run starts on the books the first left
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), "24", run, PIN_HASH],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None
        assert child.stderr is not None
        lines: list[bytes] = []
        try:
            while len(lines) < 2_000:
                line = child.stdout.readline()
                assert line, child.stderr.read().decode()
                lines.append(line)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            # Through the buffered pipe, not communicate(): that reads the raw fd and
            # would skip what readline already buffered (a line cut in two).
            rest = child.stdout.read()
            err = child.stderr.read()
            child.wait(30)
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL, err.decode()
        whole = b"".join(lines) + rest  # the last line may be cut by the kill
        received = [json.loads(line) for line in whole.splitlines(keepends=True)
                    if line.endswith(b"\n")]
        assert received[0] == {"ready": True}
        acks += received[1:]
    with Ledger(path) as led:
        report = led.audit()
        assert report.ok, report.violations
        assert report.total == 0
        for ack in acks:
            outcome = led.outcome(ack["key"])
            assert outcome is not None, f"acknowledged {ack['key']} was lost"
            assert outcome.command.to_record() == ack["record"]
            if "result" in ack:
                assert outcome.result == ack["result"]
            else:
                assert outcome.error is not None
                assert [type(outcome.error).__name__, list(outcome.error.args)] == ack["error"]
        assert report.n_commands >= len(acks) + 12
        assert len({a["key"] for a in acks}) == len(acks)
        balances = {a.account: a.balance for a in led.accounts()}
        assert _replay_balances(led) == balances
        for ack in acks[:200]:  # retrying after the restart applies nothing again
            command = command_from_record(ack["record"])
            if "result" in ack:
                assert led.execute(command, ack["key"]) == ack["result"]
            else:
                with pytest.raises(BankError) as info:
                    led.execute(command, ack["key"])
                assert [type(info.value).__name__, list(info.value.args)] == ack["error"]
        assert {a.account: a.balance for a in led.accounts()} == balances
