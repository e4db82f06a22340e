"""What an ATM's failures mean: the bank refused, nothing was sent, or the outcome is unknown.

The rule every path of ``_atm`` follows: a request is *refused* only when the
bank answered with a refusal (a ``BankError`` or ``ServiceError`` of the
request itself). Every other failure is :class:`OutcomeUnknown` once the
request may have left this ATM, and :class:`BankUnavailable` with
``reached=False`` ("nothing was sent") before. An answer the ATM cannot read
(not the record the method answers) counts as no answer: the request may have
been applied.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from netlet.apps.bank._commands import BankError, LedgerClosed, StorageError
from netlet.apps.bank._service import ServiceError
from netlet.errors import CallTimeout, HandshakeError, NetletConnectionError

__all__ = [
    "RETRYABLE",
    "BankUnavailable",
    "NotAdmitted",
    "OutcomeUnknown",
    "RetryNotice",
    "describe",
    "is_refusal",
    "new_key",
    "unanswered",
    "unavailable",
]

RETRYABLE: tuple[type[BaseException], ...] = (
    NetletConnectionError, CallTimeout, HandshakeError, StorageError, LedgerClosed)
"""Failures after which a request's fate is unknown: send it again under the same key.
(A handshake that does not finish, as with a bank that is paused or still starting,
is retried; a wrong key or protocol version is not.)"""


class BankUnavailable(NetletConnectionError):
    """The bank did not answer before the client gave up.

    ``reached`` is False when no connection to the bank was up during any attempt:
    then nothing was sent, and nothing can have been applied.
    """

    reached: bool = True


class NotAdmitted(BankUnavailable):
    """The bank refused this ATM's connection (a wrong key or protocol version)."""


def unavailable(message: str, *, reached: bool,
                cls: type[BankUnavailable] = BankUnavailable) -> BankUnavailable:
    """A ``cls`` saying ``message``, with ``reached`` set."""
    exc = cls(message)
    exc.reached = reached
    return exc


class OutcomeUnknown(BankUnavailable):
    """A mutating request got no answer: it may or may not have been applied.

    It was applied at most once; ask the bank with ``key`` (``outcome``) for the final word.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key, self.reason = key, reason

    def __str__(self) -> str:
        return (f"no answer for request {self.key!r}: {self.reason}; it was applied at most "
                "once, ask with its key")


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """Told to ``on_retry`` before each retry: what is retried, why, and when."""

    what: str
    attempt: int
    error: BaseException
    delay: float
    elapsed: float


def new_key(prefix: str = "atm") -> str:
    """A fresh idempotency key: unique across ATMs without coordination."""
    return f"{prefix}-{uuid.uuid4().hex}"


def is_refusal(exc: BaseException) -> bool:
    """The bank answered no (not a failure to get an answer)."""
    return isinstance(exc, BankError | ServiceError) and not isinstance(exc, RETRYABLE)


def describe(exc: BaseException) -> str:
    """``exc`` in a line of at most 120 characters."""
    text = str(exc) or type(exc).__name__
    return text if len(text) < 120 else text[:117] + "..."


def unanswered(exc: BankUnavailable, key: str, reached: bool) -> BankUnavailable:
    """What a mutating request that got no answer raises: unknown outcome once it was sent."""
    if not reached and not exc.reached:  # no connection was ever up: it never left this ATM
        return unavailable(f"{exc}; nothing was sent", reached=False, cls=type(exc))
    return OutcomeUnknown(key, exc.args[0] if exc.args else str(exc))
