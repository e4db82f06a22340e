"""The bank as a netlet service: card sessions, idempotent operations, operator commands.

Everything that arrives from the network is checked here (types, ranges,
formats) before the ledger sees it, so a malformed request is refused with a
clear error and changes nothing. Requests are calls with scalar arguments;
every answer that is not a scalar is a record of ``_messages`` (PROTOCOL.md
18). Customers sign in once per card session with ``login(account, pin)``:
the PIN is checked with the slow scrypt hash there, and the short-lived token
it returns carries the session, so the hash is paid per session, not per
operation. Tokens live in memory only: a restarted bank
has forgotten them, and clients sign in again (``SessionExpired``).

Every mutating request carries an idempotency key made by the ATM and is
executed by the :class:`Ledger` under that key, which is what makes a retry
after a lost reply safe. ``outcome(key)`` *settles* a key in the ledger
itself: the writer answers in commit order, after any request with that key
queued before it, and journals a fence for a key it never saw, so a later
request with that key is refused (:class:`KeySettled`). So "not applied" is a
final answer an ATM may act upon, and it survives restarts.

Operator operations (open, close, list, audit, outcomes of any key) are only
allowed when the bank's node has a key, since then every peer has proved it
holds the key at the handshake, or when it listens on loopback only (then only
this machine's users reach it). A bank listening beyond loopback with
``insecure=True`` and no key serves customers but refuses operator calls.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, TypeVar

from netlet.apps.bank._commands import (
    ERROR_TYPES,
    CloseAccount,
    Command,
    Deposit,
    Fence,
    InvalidCommand,
    KeySettled,
    OpenAccount,
    Transfer,
    Withdraw,
    _check_account,
    check_key,
)
from netlet.apps.bank._ledger import Ledger, Outcome
from netlet.apps.bank._messages import (
    AccountInfo,
    AuditReport,
    BankInfo,
    CashReceipt,
    Closed,
    Opened,
    RequestOutcome,
    Session,
    StatementEntry,
    TransferReceipt,
    receipt,
    request_outcome,
)
from netlet.apps.bank._pins import check_pin_format, is_pin_hash
from netlet.clock import REAL_CLOCK, Clock
from netlet.codec import register_exception
from netlet.errors import NetletError
from netlet.node import expose

__all__ = [
    "MAX_OUTCOME_BATCH",
    "MAX_SESSIONS",
    "MAX_SESSIONS_PER_ACCOUNT",
    "MAX_STATEMENT",
    "SERVICE_ERRORS",
    "SERVICE_NAME",
    "SESSION_TTL",
    "BankService",
    "KeySettled",
    "NotPermitted",
    "ServiceError",
    "SessionExpired",
    "register_errors",
]

SERVICE_NAME = "bank"
"""The name the bank is served under (and registered as in a cluster)."""
SESSION_TTL = 300.0
"""Seconds a card session's token stays valid after sign-in."""
MAX_STATEMENT = 100
"""The most statement lines one call returns."""
MAX_OUTCOME_BATCH = 1000
"""The most keys one ``outcomes`` call may ask about."""
MAX_SESSIONS = 100_000
"""Card sessions a bank keeps at most; beyond it the oldest one ends."""
MAX_SESSIONS_PER_ACCOUNT = 64
"""Sessions one account keeps at most: its own oldest ends, never another customer's."""
_MAX_SCRYPT_MEMORY = 64 * 2**20  # refuse PIN hashes whose check would cost more
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
_R = TypeVar("_R", CashReceipt, TransferReceipt, Opened, Closed)


class ServiceError(NetletError):
    """Root of the service's own refusals (the ledger's are BankError); rebuildable from args."""


class SessionExpired(ServiceError, PermissionError):
    """The session token is unknown (a restarted bank forgets them) or expired: sign in again."""

    def __init__(self, message: str = "the card session is unknown or expired; sign in again"
                 ) -> None:
        super().__init__(message)


class NotPermitted(ServiceError, PermissionError):
    """The caller may not do this: an operator call the bank refuses, or another account's key."""


SERVICE_ERRORS: tuple[type[ServiceError], ...] = (ServiceError, SessionExpired, NotPermitted)
"""The service's own errors; with ERROR_TYPES, everything a bank call may raise on purpose."""


def register_errors() -> None:
    """Let every bank error arrive as its own type; both ends call this (idempotent)."""
    for cls in (*ERROR_TYPES, *SERVICE_ERRORS):
        register_exception(cls)


@dataclass(frozen=True, slots=True)
class _Session:
    account: str
    expires: float


def _check_int(value: object, name: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise InvalidCommand(f"{name} must be an int between {low} and {high}")
    return value


def _check_pin_hash(pin_hash: object) -> str:
    """A hash from ``hash_pin`` whose check costs at most _MAX_SCRYPT_MEMORY."""
    if not isinstance(pin_hash, str) or not is_pin_hash(pin_hash):
        raise InvalidCommand("pin_hash must come from hash_pin (never a PIN in clear)")
    n, r, p = (int(part) for part in pin_hash.split("$")[1:4])
    if 128 * r * n * p > _MAX_SCRYPT_MEMORY:
        raise InvalidCommand("pin_hash uses a scrypt cost this bank refuses to check")
    return pin_hash


def _originator(command: Command) -> str | None:
    """The account whose session may ask about ``command``'s key (a fence: who asked)."""
    if isinstance(command, Deposit | Withdraw):
        return command.account
    if isinstance(command, Transfer):
        return command.src
    if isinstance(command, Fence):
        return command.account
    return None


@expose(concurrent=True)
class BankService:
    """The bank's network face; calls run concurrently so the ledger can commit them in groups.

    ``operator`` says whether operator calls are allowed (see the module docstring);
    the CLI decides it from the node's key and listen address.
    """

    def __init__(self, ledger: Ledger, *, operator: bool, session_ttl: float = SESSION_TTL,
                 max_sessions: int = MAX_SESSIONS,
                 clock: Clock = REAL_CLOCK) -> None:
        register_errors()
        self._ledger = ledger
        self._operator = operator
        self._ttl = session_ttl
        self._clock = clock.monotonic  # session TTLs
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._by_account: dict[str, OrderedDict[str, None]] = {}
        self._max_sessions = max_sessions
        self._sessions_lock = threading.Lock()
        self._started = clock.time()

    # -- card sessions ---------------------------------------------------------

    async def login(self, account: object, pin: object) -> Session:
        """Check the PIN (slow on purpose: off the loop unless the hash is cheap), open a session.

        Raises WrongPin (with attempts left) or CardLocked; an unknown or closed
        account answers the same, so sign-in does not tell which accounts exist. A
        PIN that is not 4 to 12 digits is refused as malformed and does not count.
        """
        account = _check_account(account)
        try:
            pin = check_pin_format(pin)
        except ValueError:
            raise InvalidCommand("a PIN is a string of 4 to 12 digits") from None
        await self._ledger.check_pin_aio(account, pin)
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._sessions_lock:
            self._purge(now)
            mine = self._by_account.setdefault(account, OrderedDict())
            # A full account, or a full bank, ends the signer's own oldest session first:
            # one customer signing in again and again never ends another's.
            while mine and (len(mine) >= MAX_SESSIONS_PER_ACCOUNT
                            or len(self._sessions) >= self._max_sessions):
                self._sessions.pop(mine.popitem(last=False)[0], None)
            while len(self._sessions) >= self._max_sessions:
                self._drop_oldest()
            self._sessions[token] = _Session(account, now + self._ttl)
            mine[token] = None
        return Session(token, account, float(self._ttl))

    async def logout(self, token: object) -> None:
        """End a card session; an unknown token is ignored. (Async: it never waits, so it
        runs on the node's loop rather than costing a thread hop.)"""
        if isinstance(token, str):
            with self._sessions_lock:
                session = self._sessions.pop(token, None)
                if session is not None:
                    self._forget(token, session.account)

    def _forget(self, token: str, account: str) -> None:
        mine = self._by_account.get(account)
        if mine is not None:
            mine.pop(token, None)
            if not mine:
                del self._by_account[account]

    def _drop_oldest(self) -> None:
        token, session = self._sessions.popitem(last=False)
        self._forget(token, session.account)

    def _purge(self, now: float) -> None:
        sessions = self._sessions  # ordered by sign-in, and every session has the same ttl
        while sessions and next(iter(sessions.values())).expires <= now:
            self._drop_oldest()

    def _account(self, token: object) -> str:
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise SessionExpired()
        with self._sessions_lock:
            session = self._sessions.get(token)
        if session is None or session.expires <= self._clock():
            raise SessionExpired()
        return session.account

    # -- customer operations ------------------------------------------------------

    async def deposit(self, token: object, amount: object, key: object) -> CashReceipt:
        """Put ``amount`` cents into the session's account."""
        command = Deposit(self._account(token), amount)  # type: ignore[arg-type]
        return await self._execute_aio(command, key, CashReceipt)

    async def withdraw(self, token: object, amount: object, key: object) -> CashReceipt:
        """Take ``amount`` cents out; InsufficientFunds rather than an overdraft."""
        command = Withdraw(self._account(token), amount)  # type: ignore[arg-type]
        return await self._execute_aio(command, key, CashReceipt)

    async def transfer(self, token: object, dst: object, amount: object,
                       key: object) -> TransferReceipt:
        """Move ``amount`` cents from the session's account to ``dst``."""
        command = Transfer(self._account(token), dst, amount)  # type: ignore[arg-type]
        return await self._execute_aio(command, key, TransferReceipt)

    def balance(self, token: object) -> int:
        """The session's account balance in cents, as committed."""
        return self._ledger.balance(self._account(token))

    def statement(self, token: object, limit: object = 10) -> list[StatementEntry]:
        """The last ``limit`` (at most MAX_STATEMENT) entries, newest first."""
        account = self._account(token)
        limit = _check_int(limit, "limit", 0, MAX_STATEMENT)
        return self._ledger.statement(account, limit)

    def outcome(self, token: object, key: object) -> RequestOutcome | None:
        """What became of ``key`` (one of this account's own requests); None: never applied.

        The ledger answers in commit order, after any request with the key queued
        before; an unseen key is fenced there (journaled), so None stays true for
        good, across restarts. Another account's key is refused before anything
        is recorded.
        """
        account = self._account(token)
        key = check_key(key)
        found = self._ledger.outcome(key)  # ownership first: asking must not touch others' keys
        if found is None:
            found = self._ledger.settle([key], account)[0]
        return self._answer(found, account)

    @staticmethod
    def _answer(found: Outcome, account: str | None) -> RequestOutcome | None:
        """``found`` as an answer to ``account`` (None: an operator); None for a fence."""
        command = found.command
        if isinstance(command, Fence):
            if account is None or command.account in ("", account):
                return None
        elif account is None or _originator(command) == account:
            return request_outcome(found)
        raise NotPermitted("that key belongs to another account's request")

    # -- operator operations ---------------------------------------------------------

    def _require_operator(self) -> None:
        if not self._operator:
            raise NotPermitted("operator calls need a bank with a key (--key-file) or one "
                               "that listens on loopback only")

    def open_account(self, account: object, owner: object, pin_hash: object,
                     key: object) -> Opened:
        """Open an account; the PIN is hashed by the caller, so it never travels."""
        self._require_operator()
        command = OpenAccount(_check_account(account), owner,  # type: ignore[arg-type]
                              _check_pin_hash(pin_hash))
        return self._execute(command, key, Opened)

    def close_account(self, account: object, key: object) -> Closed:
        """Close an empty account; AccountNotEmpty otherwise."""
        self._require_operator()
        return self._execute(CloseAccount(_check_account(account)), key, Closed)

    def accounts(self, prefix: object = "") -> list[AccountInfo]:
        """Every account whose id starts with ``prefix``: id, owner, status, balance."""
        self._require_operator()
        if not isinstance(prefix, str) or len(prefix) > 64:
            raise InvalidCommand("prefix must be a str of at most 64 characters")
        return [a for a in self._ledger.accounts() if a.account.startswith(prefix)]

    def outcomes(self, keys: object) -> list[RequestOutcome | None]:
        """The outcome of each key (None: never seen, and now settled as not applied)."""
        self._require_operator()
        if not isinstance(keys, list) or len(keys) > MAX_OUTCOME_BATCH:
            raise InvalidCommand(f"keys must be a list of at most {MAX_OUTCOME_BATCH} keys")
        checked = [check_key(key) for key in keys]
        found = {key: self._ledger.outcome(key) for key in checked}
        unseen = [key for key, outcome in found.items() if outcome is None]
        if unseen:
            found.update(zip(unseen, self._ledger.settle(unseen), strict=True))
        return [self._answer(found[key], None) for key in checked]  # type: ignore[arg-type]

    def audit(self) -> AuditReport:
        """Recompute every balance from the journal; ``ok`` and any violations."""
        self._require_operator()
        return self._ledger.audit()

    def info(self) -> BankInfo:
        """What this bank is: whether it allows operator calls and how its writer commits."""
        stats = self._ledger.statistics()
        return BankInfo(self._operator, float(self._started), stats.commands, stats.commits,
                        float(stats.mean_batch_size), stats.max_batch_size, stats.pin_checks)

    # -- keys ---------------------------------------------------------------------

    def _execute(self, command: Command, key: object, answer: type[_R]) -> _R:
        # The ledger checks the key and validates the command before any bookkeeping.
        return _receipt(command, self._ledger.execute(command, key), answer)  # type: ignore[arg-type]

    async def _execute_aio(self, command: Command, key: object, answer: type[_R]) -> _R:
        result = await self._ledger.execute_aio(command, key)  # type: ignore[arg-type]
        return _receipt(command, result, answer)


def _receipt(command: Command, result: dict[str, Any], answer: type[_R]) -> _R:
    """The ledger's result of ``command`` as the receipt this method answers."""
    made = receipt(command, result)
    assert isinstance(made, answer)
    return made
