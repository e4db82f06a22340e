"""The bank as a netlet service: card sessions, idempotent operations, operator commands.

Everything that arrives from the network is checked here (types, ranges,
formats) before the ledger sees it, so a malformed request is refused with a
clear error and changes nothing. Customers sign in once per card session with
``login(account, pin)``: the PIN is checked with the slow scrypt hash there,
and the short-lived token it returns carries the session, so the hash is paid
per session, not per operation. Tokens live in memory only: a restarted bank
has forgotten them, and clients sign in again (``SessionExpired``).

Every mutating request carries an idempotency key made by the ATM and is
executed by the :class:`Ledger` under that key, which is what makes a retry
after a lost reply safe. ``outcome(key)`` *settles* a key: it waits for a
request with that key that is running here to finish, and if the ledger has
still never seen it, later requests with that key are refused
(:class:`KeySettled`). So "unknown" is a final answer an ATM may act upon; a
request sent to an earlier process of the bank died with that process.

Operator operations (open, close, list, audit, outcomes of any key) are only
allowed when the bank's node has a key, since then every peer has proved it
holds the key at the handshake, or when it listens on loopback only (then only
this machine's users reach it). A bank listening beyond loopback with
``insecure=True`` and no key serves customers but refuses operator calls.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from netlet.apps.bank._commands import (
    ERROR_TYPES,
    CloseAccount,
    Command,
    Deposit,
    InvalidCommand,
    OpenAccount,
    StorageError,
    Transfer,
    Withdraw,
    _check_account,
    check_key,
    error_to_record,
)
from netlet.apps.bank._ledger import Ledger, Outcome
from netlet.apps.bank._pins import check_pin_format, is_pin_hash
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
_MAX_SETTLED = 100_000
_MAX_SCRYPT_MEMORY = 64 * 2**20  # refuse PIN hashes whose check would cost more
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
_SETTLE_WAIT = 30.0


class ServiceError(NetletError):
    """Root of the service's own refusals (the ledger's are BankError); rebuildable from args."""


class SessionExpired(ServiceError, PermissionError):
    """The session token is unknown (a restarted bank forgets them) or expired: sign in again."""

    def __init__(self, message: str = "the card session is unknown or expired; sign in again"
                 ) -> None:
        super().__init__(message)


class NotPermitted(ServiceError, PermissionError):
    """The caller may not do this: an operator call the bank refuses, or another account's key."""


class KeySettled(ServiceError):
    """The key was settled as never seen by ``outcome``; a request with it is refused."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"idempotency key {self.key!r} was settled as not applied; use a new key"


SERVICE_ERRORS: tuple[type[ServiceError], ...] = (
    ServiceError, SessionExpired, NotPermitted, KeySettled)
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


def _outcome_dict(outcome: Outcome) -> dict[str, Any]:
    record = outcome.command.to_record()
    record.pop("pin_hash", None)  # never hand a PIN hash back out
    answer: dict[str, Any] = {
        "key": outcome.key, "seq": outcome.seq, "ok": outcome.ok, "command": record,
        "at": outcome.at,
    }
    if outcome.error is not None:
        answer["error"] = error_to_record(outcome.error)
    else:
        answer["result"] = outcome.result
    return answer


def _originator(command: Command) -> str | None:
    """The account whose session may ask about ``command``'s key."""
    if isinstance(command, Deposit | Withdraw):
        return command.account
    if isinstance(command, Transfer):
        return command.src
    return None


@expose(concurrent=True)
class BankService:
    """The bank's network face; calls run concurrently so the ledger can commit them in groups.

    ``operator`` says whether operator calls are allowed (see the module docstring);
    the CLI decides it from the node's key and listen address.
    """

    def __init__(self, ledger: Ledger, *, operator: bool, session_ttl: float = SESSION_TTL,
                 max_sessions: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        register_errors()
        self._ledger = ledger
        self._operator = operator
        self._ttl = session_ttl
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._by_account: dict[str, OrderedDict[str, None]] = {}
        self._max_sessions = max_sessions
        self._cond = threading.Condition()
        self._inflight: dict[str, int] = {}
        self._settling: set[str] = set()
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._started = time.time()

    # -- card sessions ---------------------------------------------------------

    async def login(self, account: object, pin: object) -> dict[str, Any]:
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
        await self._ledger.check_pin_async(account, pin)
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._cond:
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
        return {"token": token, "account": account, "expires_in": self._ttl}

    async def logout(self, token: object) -> None:
        """End a card session; an unknown token is ignored. (Async: it never waits, so it
        runs on the node's loop rather than costing a thread hop.)"""
        if isinstance(token, str):
            with self._cond:
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
        with self._cond:
            session = self._sessions.get(token)
        if session is None or session.expires <= self._clock():
            raise SessionExpired()
        return session.account

    # -- customer operations ------------------------------------------------------

    async def deposit(self, token: object, amount: object, key: object) -> dict[str, Any]:
        """Put ``amount`` cents into the session's account; ``{account, amount, balance}``."""
        command = Deposit(self._account(token), amount)  # type: ignore[arg-type]
        return await self._execute_async(command, key)

    async def withdraw(self, token: object, amount: object, key: object) -> dict[str, Any]:
        """Take ``amount`` cents out; InsufficientFunds rather than an overdraft."""
        command = Withdraw(self._account(token), amount)  # type: ignore[arg-type]
        return await self._execute_async(command, key)

    async def transfer(self, token: object, dst: object, amount: object,
                       key: object) -> dict[str, Any]:
        """Move ``amount`` cents from the session's account to ``dst``."""
        command = Transfer(self._account(token), dst, amount)  # type: ignore[arg-type]
        return await self._execute_async(command, key)

    def balance(self, token: object) -> int:
        """The session's account balance in cents, as committed."""
        return self._ledger.balance(self._account(token))

    def statement(self, token: object, limit: object = 10) -> list[dict[str, Any]]:
        """The last ``limit`` (at most MAX_STATEMENT) entries, newest first."""
        account = self._account(token)
        limit = _check_int(limit, "limit", 0, MAX_STATEMENT)
        return [
            {"key": e.key, "kind": e.kind, "amount": e.amount, "counterparty": e.counterparty,
             "timestamp": e.timestamp, "balance_after": e.balance_after}
            for e in self._ledger.statement(account, limit)
        ]

    def outcome(self, token: object, key: object) -> dict[str, Any] | None:
        """What became of ``key`` (one of this account's own requests), settling it if unseen."""
        account = self._account(token)
        key = check_key(key)
        seen = self._ledger.outcome(key)  # ownership first: asking must not touch others' keys
        if seen is not None and _originator(seen.command) != account:
            raise NotPermitted("that key belongs to another account's request")
        found = self._settle(key)
        if found is None:
            return None
        if _originator(found.command) != account:
            raise NotPermitted("that key belongs to another account's request")
        return _outcome_dict(found)

    # -- operator operations ---------------------------------------------------------

    def _require_operator(self) -> None:
        if not self._operator:
            raise NotPermitted("operator calls need a bank with a key (--key-file) or one "
                               "that listens on loopback only")

    def open_account(self, account: object, owner: object, pin_hash: object,
                     key: object) -> dict[str, Any]:
        """Open an account; the PIN is hashed by the caller, so it never travels."""
        self._require_operator()
        command = OpenAccount(_check_account(account), owner,  # type: ignore[arg-type]
                              _check_pin_hash(pin_hash))
        return self._execute(command, key)

    def close_account(self, account: object, key: object) -> dict[str, Any]:
        """Close an empty account; AccountNotEmpty otherwise."""
        self._require_operator()
        return self._execute(CloseAccount(_check_account(account)), key)

    def accounts(self, prefix: object = "") -> list[dict[str, Any]]:
        """Every account whose id starts with ``prefix``: id, owner, status, balance."""
        self._require_operator()
        if not isinstance(prefix, str) or len(prefix) > 64:
            raise InvalidCommand("prefix must be a str of at most 64 characters")
        return [
            {"account": a.account, "owner": a.owner, "status": a.status, "balance": a.balance}
            for a in self._ledger.accounts() if a.account.startswith(prefix)
        ]

    def outcomes(self, keys: object) -> list[dict[str, Any] | None]:
        """The outcome of each key (None: never seen, and now settled as not applied)."""
        self._require_operator()
        if not isinstance(keys, list) or len(keys) > MAX_OUTCOME_BATCH:
            raise InvalidCommand(f"keys must be a list of at most {MAX_OUTCOME_BATCH} keys")
        checked = [check_key(key) for key in keys]
        results = []
        for key in checked:
            found = self._settle(key)
            results.append(None if found is None else _outcome_dict(found))
        return results

    def audit(self) -> dict[str, Any]:
        """Recompute every balance from the journal; ``ok`` and any violations."""
        self._require_operator()
        report = self._ledger.audit()
        return {"ok": report.ok, "entries": report.n_entries, "commands": report.n_commands,
                "total": report.total, "violations": list(report.violations)}

    def info(self) -> dict[str, Any]:
        """What this bank is: whether it allows operator calls and how its writer commits."""
        stats = self._ledger.statistics()
        return {"operator": self._operator, "up_since": self._started,
                "commands": stats.commands, "commits": stats.commits,
                "mean_batch_size": stats.mean_batch_size, "max_batch_size": stats.max_batch_size,
                "pin_checks": stats.pin_checks}

    # -- keys ---------------------------------------------------------------------

    def _execute(self, command: Command, key: object) -> dict[str, Any]:
        key = check_key(key)
        command.validate()  # refuse malformed requests before any bookkeeping
        with self._running(key):
            return self._ledger.execute(command, key)

    async def _execute_async(self, command: Command, key: object) -> dict[str, Any]:
        key = check_key(key)
        command.validate()
        with self._cond:
            fast = key not in self._settling
            if fast:
                if key in self._settled:
                    raise KeySettled(key)
                self._inflight[key] = self._inflight.get(key, 0) + 1
        if not fast:  # rare: an outcome() is reading this key; wait for it off the loop
            await asyncio.to_thread(self._enter, key)
        try:
            return await self._ledger.execute_async(command, key)
        finally:
            self._leave(key)

    def _enter(self, key: str) -> None:
        with self._cond:
            while key in self._settling:
                self._cond.wait()
            if key in self._settled:
                raise KeySettled(key)
            self._inflight[key] = self._inflight.get(key, 0) + 1

    def _leave(self, key: str) -> None:
        with self._cond:
            left = self._inflight.pop(key) - 1
            if left:
                self._inflight[key] = left
            else:
                self._cond.notify_all()

    @contextmanager
    def _running(self, key: str) -> Iterator[None]:
        with self._cond:
            while key in self._settling:
                self._cond.wait()
            if key in self._settled:
                raise KeySettled(key)
            self._inflight[key] = self._inflight.get(key, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                left = self._inflight.pop(key) - 1
                if left:
                    self._inflight[key] = left
                else:
                    self._cond.notify_all()

    def _settle(self, key: str) -> Outcome | None:
        """The ledger's outcome for ``key`` once nothing runs with it; unseen keys are fenced."""
        with self._cond:
            if key in self._settled:
                return None
            if not self._cond.wait_for(lambda: key not in self._inflight
                                       and key not in self._settling, _SETTLE_WAIT):
                raise StorageError(f"a request with key {key!r} is still running; ask again")
            self._settling.add(key)
        found: Outcome | None = None
        read = False
        try:
            found = self._ledger.outcome(key)
            read = True
        finally:
            with self._cond:
                self._settling.discard(key)
                if read and found is None:
                    self._settled[key] = None
                    while len(self._settled) > _MAX_SETTLED:
                        self._settled.popitem(last=False)
                self._cond.notify_all()
        return found
