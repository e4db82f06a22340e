"""Bank operations as command objects, the bank's exceptions and money as integers.

Each operation is a frozen dataclass: it checks its own fields (``validate``),
applies itself to a :class:`Book` (the ledger's view of one transaction), and
turns into a plain dict and back (``to_record`` / ``command_from_record``) so
the journal can be replayed. A mistake is undone by a new :class:`Reversal`,
never by editing history. Amounts are ints in minor units (cents).

The exceptions live in ``_errors.py`` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from netlet.apps.bank._errors import (
    ERROR_TYPES,
    AccountClosed,
    AccountExists,
    AccountNotEmpty,
    AlreadyReversed,
    BankError,
    CardLocked,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidCommand,
    KeySettled,
    LedgerClosed,
    LimitExceeded,
    NotReversible,
    StorageError,
    UnknownAccount,
    UnknownTransaction,
    WrongPin,
    error_from_record,
    error_to_record,
)
from netlet.apps.bank._pins import is_pin_hash

__all__ = [
    "CASH",
    "ERROR_TYPES",
    "MAX_AMOUNT",
    "MAX_TOTAL",
    "AccountClosed",
    "AccountExists",
    "AccountNotEmpty",
    "AlreadyReversed",
    "BankError",
    "Book",
    "CardLocked",
    "CloseAccount",
    "Command",
    "Deposit",
    "Fence",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidAmount",
    "InvalidCommand",
    "KeySettled",
    "LedgerClosed",
    "LimitExceeded",
    "NotReversible",
    "OpenAccount",
    "Reversal",
    "StorageError",
    "Transfer",
    "UnknownAccount",
    "UnknownTransaction",
    "Withdraw",
    "WrongPin",
    "check_amount",
    "check_key",
    "command_from_record",
    "command_record",
    "error_from_record",
    "error_to_record",
    "format_amount",
    "parse_amount",
]

CASH = "@cash"
"""The system account deposits come from and withdrawals go to; it is never positive."""
MAX_AMOUNT = 10**15
"""The largest amount one command may move, in minor units."""
MAX_TOTAL = 10**18
"""The most money all customer accounts together may hold (keeps sums inside int64)."""

_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_AMOUNT_TEXT = re.compile(r"([0-9]{1,16})(?:\.([0-9]+))?")
_MAX_KEY = 200


# -- amounts ----------------------------------------------------------------


def check_amount(amount: object) -> int:
    """``amount`` if it is an int (not a bool) in 1..MAX_AMOUNT; else InvalidAmount."""
    if type(amount) is not int:
        raise InvalidAmount(f"an amount must be an int in minor units, not {type(amount).__name__}")
    if not 0 < amount <= MAX_AMOUNT:
        shown = amount if amount.bit_length() < 128 else "a huge number"
        raise InvalidAmount(f"an amount must be between 1 and {MAX_AMOUNT}, not {shown}")
    return amount


def parse_amount(text: str) -> int:
    """Minor units from decimal text: ``"12.34"`` -> 1234, ``"5"`` -> 500."""
    if not isinstance(text, str):
        raise InvalidAmount(f"amount text must be a str, not {type(text).__name__}")
    stripped = text.strip()
    if len(stripped) > 40:
        raise InvalidAmount(f"amount text {text[:20]!r}... is too long")
    if stripped.startswith("-"):
        raise InvalidAmount(f"amount {text!r} is negative")
    match = _AMOUNT_TEXT.fullmatch(stripped)
    if match is None:
        raise InvalidAmount(f"amount {text!r} is not a number like 12.34")
    units, cents = match[1], match[2] or ""
    if len(cents) > 2 and cents[2:].strip("0"):
        raise InvalidAmount(f"amount {text!r} has fractions of a cent")
    value = int(units) * 100 + int((cents[:2] or "0").ljust(2, "0"))
    if value == 0:
        raise InvalidAmount(f"amount {text!r} is zero")
    if value > MAX_AMOUNT:
        raise InvalidAmount(f"amount {text!r} is above the limit of {format_amount(MAX_AMOUNT)}")
    return value


def format_amount(amount: int) -> str:
    """Decimal text from minor units: 1234 -> ``"12.34"``, -5 -> ``"-0.05"``."""
    if type(amount) is not int:
        raise InvalidAmount(f"an amount must be an int in minor units, not {type(amount).__name__}")
    units, cents = divmod(abs(amount), 100)
    return f"{'-' if amount < 0 else ''}{units}.{cents:02d}"


def check_key(key: object, what: str = "idempotency key") -> str:
    """``key`` if it is a printable, non-empty str of at most 200 characters."""
    if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY or not key.isprintable():
        raise InvalidCommand(f"an {what} must be a printable str of 1 to {_MAX_KEY} characters")
    return key


def _check_account(account: object, name: str = "account") -> str:
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise InvalidCommand(f"{name} must be 1-64 letters, digits, '_.-', not {account!r}")
    return account


# -- the book commands are applied to ----------------------------------------


class Book(Protocol):
    """One transaction of the ledger, as commands see it; ``key`` is the current command's."""

    key: str

    def status(self, account: str) -> str | None:
        """``"open"``, ``"closed"``, or None for an unknown account."""

    def balance(self, account: str) -> int:
        """The account's balance now (CASH included)."""

    def create(self, account: str, owner: str, pin_hash: str) -> None:
        """Add an open account with a zero balance."""

    def close(self, account: str) -> None:
        """Mark the account closed."""

    def move(self, src: str, dst: str, amount: int) -> None:
        """Journal one double entry: ``src`` debited, ``dst`` credited."""

    def stored(self, key: str) -> tuple[Command, bool] | None:
        """The command journaled under ``key`` and whether it succeeded."""

    def reversed_by(self, key: str) -> str | None:
        """The key of the reversal of ``key``, if any."""

    def mark_reversed(self, key: str) -> None:
        """Record that the current command reverses ``key``."""


def _require_open(book: Book, account: str) -> None:
    status = book.status(account)
    if status is None:
        raise UnknownAccount(account)
    if status != "open":
        raise AccountClosed(account)


def _move(book: Book, src: str, dst: str, amount: int) -> None:
    """Check and journal one movement; cash is the only account allowed below zero."""
    for account in (src, dst):
        if account != CASH:
            _require_open(book, account)
    if src == CASH:
        if book.balance(CASH) - amount < -MAX_TOTAL:
            raise LimitExceeded(amount)
    else:
        balance = book.balance(src)
        if balance < amount:
            raise InsufficientFunds(src, balance, amount)
    book.move(src, dst, amount)


# -- commands ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A bank operation: validated, journaled under a key, applied once."""

    def validate(self) -> None:
        """Raise InvalidCommand (or InvalidAmount) if a field is malformed."""
        raise NotImplementedError

    def apply(self, book: Book) -> dict[str, Any]:
        """Change ``book``, or raise a BankError having changed nothing; return the result."""
        raise NotImplementedError

    def to_record(self) -> dict[str, Any]:
        """A plain dict with ``type`` and the fields; see :func:`command_from_record`."""
        cls = type(self)
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(self))
        record: dict[str, Any] = {"type": cls.__name__}
        for name in names:
            record[name] = getattr(self, name)
        return record


_FIELD_NAMES: dict[type[Command], tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True)
class OpenAccount(Command):
    """Open ``account`` for ``owner``; ``pin_hash`` comes from :func:`hash_pin`."""

    account: str
    owner: str
    pin_hash: str = field(repr=False)

    def validate(self) -> None:
        _check_account(self.account)
        if (not isinstance(self.owner, str) or not 0 < len(self.owner.strip()) <= 200
                or not self.owner.isprintable()):
            raise InvalidCommand("owner must be a non-empty, printable str of at most 200 "
                                 "characters")
        if not is_pin_hash(self.pin_hash):
            raise InvalidCommand("pin_hash must come from hash_pin (never a PIN in clear)")

    def apply(self, book: Book) -> dict[str, Any]:
        if book.status(self.account) is not None:
            raise AccountExists(self.account)
        book.create(self.account, self.owner, self.pin_hash)
        return {"account": self.account, "owner": self.owner}


@dataclass(frozen=True, slots=True)
class CloseAccount(Command):
    """Close an empty account; its id is never reused."""

    account: str

    def validate(self) -> None:
        _check_account(self.account)

    def apply(self, book: Book) -> dict[str, Any]:
        _require_open(book, self.account)
        balance = book.balance(self.account)
        if balance:
            raise AccountNotEmpty(self.account, balance)
        book.close(self.account)
        return {"account": self.account}


@dataclass(frozen=True, slots=True)
class _Movement(Command):
    def movement(self) -> tuple[str, str, int]:
        """``(src, dst, amount)`` of the money this command moves."""
        raise NotImplementedError

    def apply(self, book: Book) -> dict[str, Any]:
        src, dst, amount = self.movement()
        _move(book, src, dst, amount)
        return self._result(book)

    def _result(self, book: Book) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _CashMovement(_Movement):
    account: str
    amount: int

    def validate(self) -> None:
        _check_account(self.account)
        check_amount(self.amount)

    def _result(self, book: Book) -> dict[str, Any]:
        balance = book.balance(self.account)
        return {"account": self.account, "amount": self.amount, "balance": balance}


@dataclass(frozen=True, slots=True)
class Deposit(_CashMovement):
    """Put cash into ``account``."""

    def movement(self) -> tuple[str, str, int]:
        return CASH, self.account, self.amount


@dataclass(frozen=True, slots=True)
class Withdraw(_CashMovement):
    """Take cash out of ``account``; never below zero."""

    def movement(self) -> tuple[str, str, int]:
        return self.account, CASH, self.amount


@dataclass(frozen=True, slots=True)
class Transfer(_Movement):
    """Move ``amount`` from ``src`` to ``dst``; never below zero."""

    src: str
    dst: str
    amount: int

    def validate(self) -> None:
        _check_account(self.src, "src")
        _check_account(self.dst, "dst")
        if self.src == self.dst:
            raise InvalidCommand("a transfer needs two different accounts")
        check_amount(self.amount)

    def movement(self) -> tuple[str, str, int]:
        return self.src, self.dst, self.amount

    def _result(self, book: Book) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "amount": self.amount,
            "src_balance": book.balance(self.src),
            "dst_balance": book.balance(self.dst),
        }


@dataclass(frozen=True, slots=True)
class Reversal(Command):
    """Undo the movement journaled under ``original_key`` by moving the money back."""

    original_key: str

    def validate(self) -> None:
        check_key(self.original_key, "original key")

    def apply(self, book: Book) -> dict[str, Any]:
        stored = book.stored(self.original_key)
        if stored is None:
            raise UnknownTransaction(self.original_key)
        original, ok = stored
        if not ok:
            raise NotReversible(self.original_key, "it was refused")
        if not isinstance(original, _Movement):
            raise NotReversible(self.original_key, f"a {type(original).__name__} is not a movement")
        by = book.reversed_by(self.original_key)
        if by is not None:
            raise AlreadyReversed(self.original_key, by)
        src, dst, amount = original.movement()
        _move(book, dst, src, amount)
        book.mark_reversed(self.original_key)
        balances = {a: book.balance(a) for a in (src, dst) if a != CASH}
        return {
            "original_key": self.original_key,
            "reversed": type(original).__name__,
            "amount": amount,
            "balances": balances,
        }


@dataclass(frozen=True, slots=True)
class Fence(Command):
    """The journal's record that a key was asked about before any request used it.

    Written by the ledger's writer in commit order (``Ledger.settle``), never
    executed: a request that comes later with the key is refused (KeySettled),
    and one that came earlier was applied first. ``account`` is who asked (the
    empty string: an operator).
    """

    account: str

    def validate(self) -> None:
        if self.account != "":
            _check_account(self.account)

    def apply(self, book: Book) -> dict[str, Any]:
        raise InvalidCommand("a fence is recorded by Ledger.settle, never executed")


_COMMANDS: dict[str, type[Command]] = {
    cls.__name__: cls
    for cls in (OpenAccount, CloseAccount, Deposit, Withdraw, Transfer, Reversal, Fence)
}


def command_record(command: object) -> dict[str, Any]:
    """The record of one of the bank's own commands once it validates; else InvalidCommand."""
    cls = type(command)
    if _COMMANDS.get(cls.__name__) is not cls or not isinstance(command, Command):
        raise InvalidCommand(f"expected a bank command, not {type(command).__name__}")
    command.validate()
    return command.to_record()


def command_from_record(record: object) -> Command:
    """The validated command a :meth:`Command.to_record` dict describes."""
    if not isinstance(record, dict):
        raise InvalidCommand(f"a command record must be a dict, not {type(record).__name__}")
    cls = _COMMANDS.get(record.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise InvalidCommand(f"unknown command type {record.get('type')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    if set(record) != names | {"type"}:
        raise InvalidCommand(f"a {cls.__name__} record needs exactly the fields {sorted(names)}")
    command = cls(**{name: record[name] for name in names})
    command.validate()
    return command
