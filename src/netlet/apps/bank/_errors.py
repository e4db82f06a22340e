"""The bank's exceptions: one tree, each rebuildable from its own ``args``.

They are what a bank client can act on (retry the key, ask for another PIN,
give up), sent to ATMs as their own types and journaled as records
(``error_to_record``). They change when the bank's promises change, not when a
command learns a new field, so they live apart from the commands::

    BankError(NetletError)
    ├── InvalidCommand(ValueError)      malformed command, key or record; never journaled
    │   └── InvalidAmount               not an int in 1..MAX_AMOUNT, or bad amount text
    ├── UnknownAccount(LookupError)     no such account
    ├── AccountExists(ValueError)       the account id is taken (even if closed)
    ├── AccountClosed                   the account was closed
    ├── AccountNotEmpty                 closing an account that still holds money
    ├── InsufficientFunds               no overdraft
    ├── LimitExceeded                   the bank would hold more than MAX_TOTAL
    ├── IdempotencyConflict(ValueError) the key was used for a different command
    ├── UnknownTransaction(LookupError) reversing a key the ledger never saw
    ├── NotReversible(ValueError)       reversing a refusal, an account command, a reversal
    │   └── AlreadyReversed             reversing the same key twice
    ├── KeySettled                      the key was fenced by ``outcome``: it never applies
    ├── WrongPin(PermissionError)       a wrong PIN; ``attempts_left`` before lockout
    ├── CardLocked(PermissionError)     too many wrong PINs; ``retry_after`` seconds
    ├── LedgerClosed(RuntimeError)      the ledger was closed
    └── StorageError(OSError)           SQLite failed; the outcome is unknown, retry the key

On the wire each is named by its module and class (``netlet.apps.bank._errors.WrongPin``):
bank and ATMs register them alike with ``register_exception`` (``ERROR_TYPES``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from netlet.errors import NetletError

__all__ = [
    "ERROR_TYPES",
    "AccountClosed",
    "AccountExists",
    "AccountNotEmpty",
    "AlreadyReversed",
    "BankError",
    "CardLocked",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidAmount",
    "InvalidCommand",
    "KeySettled",
    "LedgerClosed",
    "LimitExceeded",
    "NotReversible",
    "StorageError",
    "UnknownAccount",
    "UnknownTransaction",
    "WrongPin",
    "error_from_record",
    "error_to_record",
]


class BankError(NetletError):
    """Root of the bank's errors; the message is ``_template`` filled from ``args``."""

    _template: ClassVar[str] = "{0}"

    def __str__(self) -> str:
        try:
            return self._template.format(*self.args)
        except (IndexError, KeyError, ValueError):
            return super().__str__()


class InvalidCommand(BankError, ValueError):
    """A command, key or record is malformed; nothing was journaled."""


class InvalidAmount(InvalidCommand):
    """An amount is not an int in 1..MAX_AMOUNT (or amount text does not parse)."""


class _AccountError(BankError):
    def __init__(self, account: str) -> None:
        super().__init__(account)
        self.account = account


class UnknownAccount(_AccountError, LookupError):
    """No account has this id."""

    _template = "no account {0!r}"


class AccountExists(_AccountError, ValueError):
    """The account id is already taken (closed accounts keep theirs)."""

    _template = "account {0!r} already exists"


class AccountClosed(_AccountError):
    """The account was closed and takes no more operations."""

    _template = "account {0!r} is closed"


class AccountNotEmpty(BankError):
    """An account must be emptied before it is closed."""

    _template = "account {0!r} still holds {1} and cannot be closed"

    def __init__(self, account: str, balance: int) -> None:
        super().__init__(account, balance)
        self.account, self.balance = account, balance


class InsufficientFunds(BankError):
    """The account holds less than the amount; there is no overdraft."""

    _template = "account {0!r} holds {1}, less than {2}"

    def __init__(self, account: str, balance: int, amount: int) -> None:
        super().__init__(account, balance, amount)
        self.account, self.balance, self.amount = account, balance, amount


class LimitExceeded(BankError):
    """The deposit would make the bank hold more than MAX_TOTAL."""

    _template = "a deposit of {0} would exceed the bank's limit"

    def __init__(self, amount: int) -> None:
        super().__init__(amount)
        self.amount = amount


class _KeyedError(BankError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class IdempotencyConflict(_KeyedError, ValueError):
    """The idempotency key was already used for a different command."""

    _template = "idempotency key {0!r} was used for a different command"


class UnknownTransaction(_KeyedError, LookupError):
    """The ledger holds no command under this key."""

    _template = "no command was journaled under key {0!r}"


class NotReversible(BankError, ValueError):
    """Only successful deposits, withdrawals and transfers can be reversed."""

    _template = "the command under key {0!r} cannot be reversed: {1}"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key, self.reason = key, reason


class AlreadyReversed(NotReversible):
    """The command was already reversed (by the command under ``reason``)."""

    _template = "the command under key {0!r} was already reversed by {1!r}"


class KeySettled(_KeyedError):
    """The key was fenced: ``outcome`` found it unseen and recorded that it never applies."""

    _template = "idempotency key {0!r} was settled as not applied; use a new key"


class WrongPin(BankError, PermissionError):
    """The PIN was wrong; ``attempts_left`` more before the card locks."""

    _template = "wrong PIN for account {0!r}; {1} attempts left"

    def __init__(self, account: str, attempts_left: int) -> None:
        super().__init__(account, attempts_left)
        self.account, self.attempts_left = account, attempts_left


class CardLocked(BankError, PermissionError):
    """Too many wrong PINs; try again in ``retry_after`` seconds."""

    _template = "the card for account {0!r} is locked for {1:.0f} more seconds"

    def __init__(self, account: str, retry_after: float) -> None:
        super().__init__(account, retry_after)
        self.account, self.retry_after = account, retry_after


class LedgerClosed(BankError, RuntimeError):
    """The ledger was closed; it takes no more commands."""


class StorageError(BankError, OSError):
    """SQLite failed; whether the command committed is unknown, so retry with its key."""


ERROR_TYPES: tuple[type[BankError], ...] = (
    BankError, InvalidCommand, InvalidAmount, UnknownAccount, AccountExists, AccountClosed,
    AccountNotEmpty, InsufficientFunds, LimitExceeded, IdempotencyConflict, UnknownTransaction,
    NotReversible, AlreadyReversed, KeySettled, WrongPin, CardLocked, LedgerClosed, StorageError,
)  # fmt: skip
"""Every bank exception, for registering with the codec so each arrives as its own type."""
_ERRORS = {cls.__name__: cls for cls in ERROR_TYPES}


def error_to_record(exc: BankError) -> dict[str, Any]:
    """A plain dict that :func:`error_from_record` turns back into ``exc``."""
    return {"type": type(exc).__name__, "args": list(exc.args)}


def error_from_record(record: dict[str, Any]) -> BankError:
    """The exception :func:`error_to_record` described."""
    cls = _ERRORS.get(record.get("type", ""), BankError)
    try:
        return cls(*record.get("args", ()))
    except TypeError:
        return BankError(f"{record.get('type')}: {record.get('args')}")
