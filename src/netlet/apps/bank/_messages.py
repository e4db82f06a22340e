"""The bank's answers as records (PROTOCOL.md 18): what ``BankService`` sends back.

Requests stay method calls whose arguments are plain scalars (the service
checks each one); every answer that is not a scalar is a codec record
(``netlet.codec.record``), so both ends agree on its fields and their types
and a malformed answer is refused when it arrives. Wire ids 100-199 belong
to the bank; a change of fields is a new record with a new wire id, never
an edit. Money is always an int of minor units (cents).

Three in-process types are records themselves (``StatementEntry`` and
``AccountInfo`` in ``_records``, ``AuditReport`` in ``_journal``); a
command's result, which the ledger journals as JSON, becomes its receipt
here, in :func:`receipt`, and a ledger ``Outcome`` its :class:`RequestOutcome`
in :func:`request_outcome`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from netlet.apps.bank._commands import (
    BankError,
    CloseAccount,
    Command,
    Deposit,
    OpenAccount,
    Reversal,
    Transfer,
    Withdraw,
)
from netlet.apps.bank._journal import AuditReport
from netlet.apps.bank._records import AccountInfo, Outcome, StatementEntry
from netlet.codec import record
from netlet.errors import DecodeError

__all__ = [
    "AccountInfo",
    "AuditReport",
    "BankInfo",
    "CashReceipt",
    "Closed",
    "Opened",
    "Receipt",
    "RequestOutcome",
    "Reversed",
    "Session",
    "StatementEntry",
    "TransferReceipt",
    "expect",
    "expect_list",
    "receipt",
    "request_outcome",
]

_T = TypeVar("_T")


@record(100)
@dataclass(frozen=True, slots=True)
class Session:
    """``login``'s answer: the token every customer call carries, for ``expires_in`` s."""

    token: str
    account: str
    expires_in: float


@record(101)
@dataclass(frozen=True, slots=True)
class CashReceipt:
    """``deposit``'s and ``withdraw``'s answer: ``balance`` is the account's after it."""

    account: str
    amount: int
    balance: int


@record(102)
@dataclass(frozen=True, slots=True)
class TransferReceipt:
    """``transfer``'s answer: both accounts' balances after it."""

    src: str
    dst: str
    amount: int
    src_balance: int
    dst_balance: int


@record(103)
@dataclass(frozen=True, slots=True)
class Opened:
    """``open_account``'s answer."""

    account: str
    owner: str


@record(104)
@dataclass(frozen=True, slots=True)
class Closed:
    """``close_account``'s answer."""

    account: str


@record(105)
@dataclass(frozen=True, slots=True)
class Reversed:
    """A reversal's result (seen in outcomes): the customer accounts' balances after it."""

    original_key: str
    reversed: str
    """The kind of the command undone: ``Deposit``, ``Withdraw`` or ``Transfer``."""
    amount: int
    balances: dict[str, int]


Receipt = CashReceipt | TransferReceipt | Opened | Closed | Reversed
"""What a command that was applied answers."""

_RECEIPTS: dict[type[Command], type[Receipt]] = {
    Deposit: CashReceipt, Withdraw: CashReceipt, Transfer: TransferReceipt,
    OpenAccount: Opened, CloseAccount: Closed, Reversal: Reversed,
}


@record(106)
@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """What became of the request journaled under ``key`` (``outcome``, ``outcomes``).

    ``command`` is the request as the journal records it (``type`` and its fields;
    an ``OpenAccount``'s PIN hash left out). Exactly one of ``result`` (it was
    applied) and ``error`` (it was refused, and changed nothing) is set.
    """

    key: str
    seq: int
    command: dict[str, str | int]
    result: Receipt | None
    error: BankError | None
    at: float
    """When the bank journaled it (seconds since the epoch)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Receipt:
        """The receipt, or raise the refusal."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@record(110)
@dataclass(frozen=True, slots=True)
class BankInfo:
    """``info``'s answer: whether the bank allows operator calls and how its writer commits."""

    operator: bool
    up_since: float
    commands: int
    commits: int
    mean_batch_size: float
    max_batch_size: int
    pin_checks: int


def receipt(command: Command, result: dict[str, Any]) -> Receipt:
    """The receipt of ``command`` from the result the ledger gave (and journaled)."""
    return _RECEIPTS[type(command)](**result)


def request_outcome(outcome: Outcome) -> RequestOutcome:
    """A ledger outcome as the bank sends it: never with a PIN hash."""
    command = outcome.command.to_record()
    command.pop("pin_hash", None)
    result = None if outcome.result is None else receipt(outcome.command, outcome.result)
    return RequestOutcome(outcome.key, outcome.seq, command, result, outcome.error,
                          float(outcome.at))


def expect(answer: object, cls: type[_T] | tuple[type, ...], what: str) -> _T:
    """``answer`` if it is a ``cls``; else the DecodeError that says what the bank sent."""
    if isinstance(answer, cls) and not (cls is int and type(answer) is bool):
        return answer  # type: ignore[return-value]
    raise DecodeError(f"expected {_names(cls)} from the bank ({what}), got {_shown(answer)}")


def expect_list(answer: object, cls: type[_T] | tuple[type, ...], what: str) -> list[_T]:
    """``answer`` if it is a list of ``cls``; else the DecodeError that says what came."""
    if type(answer) is not list:
        raise DecodeError(f"expected a list of {_names(cls)} from the bank ({what}), "
                          f"got {_shown(answer)}")
    for i, item in enumerate(answer):
        expect(item, cls, f"{what}, item {i}")
    return answer


def _names(cls: type | tuple[type, ...]) -> str:
    return " or ".join("None" if c is type(None) else c.__name__
                       for c in (cls if isinstance(cls, tuple) else (cls,)))


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
