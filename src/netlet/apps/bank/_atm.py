"""ATMs: a bank client that retries with the same idempotency key, and card sessions.

A request whose reply was lost may or may not have been applied, so an ATM
never makes a new request to find out: it sends the *same* request again
under the *same* key until the bank answers (the ledger applies a key once and
answers a repeat with the first answer), and if it must give up it says the
outcome is unknown (:class:`OutcomeUnknown`, with the key) rather than guess.
``outcome(key)`` then gives the final word. A card session signs in once; if
the bank restarted and forgot the session, the client signs in again with the
PIN it holds for the session and carries on with the same key.

The rule every path follows: a request is *refused* only when the bank
answered with a refusal (a ``BankError`` or ``ServiceError`` of the request
itself). Every other failure is :class:`OutcomeUnknown` once the request may
have left this ATM (a connection to the bank was up while it was being
sent), and :class:`BankUnavailable` with ``reached=False`` ("nothing was
sent") before. One attempt, connecting and the handshake included, lasts at
most ``timeout`` seconds; all attempts of a request end by its deadline
(``retry_for`` seconds by default). Every answer is checked to be the record
its call answers (``_messages``); another one counts as no answer, since the
request may have been applied. The failure types are in ``_atmerrors``, the
terminal ATM in ``_terminal``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from netlet.apps.bank._atmerrors import (
    RETRYABLE,
    BankUnavailable,
    NotAdmitted,
    OutcomeUnknown,
    RetryNotice,
    describe,
    is_refusal,
    new_key,
    unanswered,
    unavailable,
)
from netlet.apps.bank._commands import format_amount
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
    expect,
    expect_list,
)
from netlet.apps.bank._pins import DEFAULT_SCRYPT_N, hash_pin
from netlet.apps.bank._service import SERVICE_NAME, SessionExpired, register_errors
from netlet.clock import Backoff
from netlet.errors import (
    AuthenticationError,
    CallTimeout,
    DecodeError,
    NoSuchObject,
    VersionMismatch,
)
from netlet.node import Node, Proxy
from netlet.transport import TLSConfig, find_user_key

__all__ = [
    "RETRYABLE",
    "BankClient",
    "BankUnavailable",
    "CardSession",
    "NotAdmitted",
    "OutcomeUnknown",
    "RetryNotice",
    "new_key",
    "run_terminal",
]

_FATAL = (AuthenticationError, VersionMismatch)
# NoSuchObject: a restarting bank listens a moment before it serves "bank"; the call
# was not run, so trying again is safe (found by tests/apps/bank/test_jepsen.py).
_AGAIN: tuple[type[BaseException], ...] = (*RETRYABLE, TimeoutError, NoSuchObject)
_FIRST_DELAY, _MAX_DELAY = 0.05, 1.0
_SIGN_OUT_WAIT = 2.0
_T = TypeVar("_T")


_SESSION_REFUSALS = 5
"""A request whose fresh card session the bank refused this many times in a row, every
refusal answered (none lost on the way), is refused: SessionExpired, nothing applied.
Retrying until ``retry_for`` would only make the answer hang on the clock: its last
attempt, cut short by the deadline, would turn a refusal into "outcome unknown"."""


class BankClient:
    """A connection to a bank service; every call retries the same request on failure.

    ``retry_for`` seconds bound the retries of one call, ``timeout`` one attempt
    (connecting and the handshake included). Pass ``node`` to share a client node
    (its key and TLS then apply); given neither, a bank on this machine is reached
    with its per-user key (if any). Calls run on the node's loop; the blocking ones
    wait for them there.
    """

    def __init__(self, address: str, *, node: Node | None = None, key: bytes | None = None,
                 tls: TLSConfig | None = None, timeout: float = 10.0, retry_for: float = 30.0,
                 on_retry: Callable[[RetryNotice], None] | None = None) -> None:
        register_errors()
        self.address = address
        self._own_node = node is None
        if node is None and key is None:
            key = find_user_key(address)  # a bank of ours on this machine: its per-user key
        self.node = node if node is not None else Node(
            key=key, tls=tls, call_timeout=timeout, direct_calls=False,
            connect_timeout=timeout, handshake_timeout=timeout)
        self.bank: Proxy = self.node.proxy(address, SERVICE_NAME, timeout=timeout)
        self.clock = self.node.config.clock  # retries, their backoff and deadlines
        self.timeout = timeout
        self.retry_for = retry_for
        self.on_retry = on_retry
        self.stop = threading.Event()
        """Set to make every retry loop give up at its next wait."""
        self._links_up = 0  # links that came up so far
        self._links_now = len(self.node.connected_peers())
        self.node.on_peer_change(self._peer_changed)

    def _peer_changed(self, _peer: str, up: bool) -> None:
        self._links_up += up
        self._links_now = max(0, self._links_now + (1 if up else -1))

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the node's loop and wait for it here (not from that loop): how
        every blocking method is its ``_aio`` twin, waited for."""
        loop = self.node.loop
        assert loop is not None, "the client node is not running"
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def call(self, method: str, *args: Any, what: str = "request",
             deadline: float | None = None, reached: list[bool] | None = None,
             check: Callable[[Any], Any] | None = None) -> Any:
        """``bank.method(*args)``, sent again after each RETRYABLE failure until ``deadline``.

        Raises BankUnavailable on giving up, or whatever the bank raised.
        """
        return self.run(self.call_aio(method, *args, what=what, deadline=deadline,
                                      reached=reached, check=check))

    async def call_aio(self, method: str, *args: Any, what: str = "request",
                       deadline: float | None = None, reached: list[bool] | None = None,
                       check: Callable[[Any], Any] | None = None) -> Any:
        """:meth:`call` from async code on the client node's loop: the task waits, not a thread.

        ``reached`` becomes ``[True]`` once an attempt ran while a connection to the
        bank was up (the request may then have reached it). ``check`` gets the answer
        and returns it, or raises DecodeError if it is not what ``method`` answers. A
        DecodeError (that one, or a reply the codec refused) is raised at once, with
        ``reached`` ``[True]``: an answer came, so the request may have been applied.
        """
        func, retry = getattr(self.bank, method).aio, _Retry(self, what, deadline)
        while True:
            limit = retry.limit()
            ups, linked = self._links_up, self._links_now > 0
            try:
                if linked and limit >= self.timeout:  # the proxy's own timeout bounds it
                    answer = await func(*args)
                else:
                    async with self.clock.timeout(limit):  # connecting, or near the deadline
                        answer = await func(*args)
                return answer if check is None else check(answer)
            except DecodeError:  # an answer came, one this ATM cannot read: the request
                if reached is not None:  # reached the bank, and may have been applied
                    reached[:] = [True]
                raise
            except _FATAL as exc:
                if reached is not None and (linked or self._links_up != ups):
                    reached[:] = [True]
                raise unavailable(f"the bank at {self.address} refused this ATM: {exc}",
                                  reached=bool(reached), cls=NotAdmitted) from exc
            except _AGAIN as exc:
                if linked or self._links_up != ups:
                    retry.reached = True
                    if reached is not None:
                        reached[:] = [True]
                error = CallTimeout(f"no answer in {limit:.1f} s") if isinstance(
                    exc, TimeoutError) and not isinstance(exc, CallTimeout) else exc
                await self.clock.sleep(retry.delay_after(error))
                if self.stop.is_set():
                    raise unavailable("stopped while the bank was not answering",
                                      reached=retry.reached) from exc
            except Exception as exc:
                # An error no refusal means (a bug at the bank, a type this ATM cannot
                # rebuild), met while a link was up: the request may have been applied.
                if (reached is not None and not is_refusal(exc)
                        and (linked or self._links_up != ups)):
                    reached[:] = [True]
                raise

    # -- operator calls -----------------------------------------------------------

    def open_account(self, account: str, owner: str, pin: str, *, key: str | None = None,
                     pin_cost: int = DEFAULT_SCRYPT_N) -> Opened:
        """Open ``account``; the PIN is hashed here, so it never travels."""
        pin_hash = hash_pin(pin, n=pin_cost)
        return self._keyed("open_account", Opened, account, owner, pin_hash, key=key,
                           what=f"opening {account}")

    def close_account(self, account: str, *, key: str | None = None) -> Closed:
        return self._keyed("close_account", Closed, account, key=key,
                           what=f"closing {account}")

    def _keyed(self, method: str, answer: type[_T], *args: Any, key: str | None,
               what: str) -> _T:
        key = new_key("op") if key is None else key
        reached: list[bool] = []
        try:
            result: _T = self.call(method, *args, key, what=what, reached=reached,
                                   check=lambda a: expect(a, answer, what))
        except BankUnavailable as exc:
            raise unanswered(exc, key, bool(reached)) from exc
        except DecodeError as exc:
            raise OutcomeUnknown(key, describe(exc)) from exc
        except Exception as exc:
            if is_refusal(exc):
                raise
            raise unanswered(unavailable(describe(exc), reached=False), key,
                             bool(reached)) from exc
        return result

    def accounts(self, prefix: str = "") -> list[AccountInfo]:
        """Every account whose id starts with ``prefix``, by id."""
        what = "listing accounts"
        return self.call("accounts", prefix, what=what,  # type: ignore[no-any-return]
                         check=lambda a: expect_list(a, AccountInfo, what))

    def outcomes(self, keys: list[str]) -> list[RequestOutcome | None]:
        """Each key's outcome; asking settles a key the bank never saw as not applied."""
        what = "asking for outcomes"
        return self.call("outcomes", keys, what=what,  # type: ignore[no-any-return]
                         check=lambda a: expect_list(a, (RequestOutcome, type(None)), what))

    def audit(self) -> AuditReport:
        """The bank's books, checked from its journal (an operator call)."""
        return self.call("audit", what="audit",  # type: ignore[no-any-return]
                         check=lambda a: expect(a, AuditReport, "audit"))

    def info(self) -> BankInfo:
        return self.call("info", what="info",  # type: ignore[no-any-return]
                         check=lambda a: expect(a, BankInfo, "info"))

    def card(self, account: str, pin: str) -> CardSession:
        """A card session for ``account`` (signs in on first use)."""
        return CardSession(self, account, pin)

    def close(self) -> None:
        self.stop.set()
        if self._own_node:
            self.node.close()

    def __enter__(self) -> BankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Retry:
    """When one request is sent again: backoff from _FIRST_DELAY to _MAX_DELAY, to a deadline."""

    __slots__ = ("attempt", "backoff", "client", "deadline", "reached", "start", "what")

    def __init__(self, client: BankClient, what: str, deadline: float | None) -> None:
        self.client, self.what = client, what
        self.start = client.clock.monotonic()
        self.deadline = self.start + client.retry_for if deadline is None else deadline
        self.attempt, self.backoff = 0, Backoff(_FIRST_DELAY, _MAX_DELAY)
        self.reached = False

    def limit(self) -> float:
        """How long the next attempt may take: ``timeout``, but never past the deadline."""
        left = self.deadline - self.client.clock.monotonic()
        if self.attempt and left <= 0:
            raise self._give_up(None)
        return max(min(self.client.timeout, left), 0.05)

    def _give_up(self, exc: BaseException | None) -> BankUnavailable:
        why = f" ({describe(exc)})" if exc is not None else ""
        took = self.client.clock.monotonic() - self.start
        return unavailable(f"the bank at {self.client.address} did not answer for "
                           f"{took:.0f} s{why}", reached=self.reached)

    def delay_after(self, exc: BaseException) -> float:
        """Seconds to wait before the next attempt; BankUnavailable if it is time to give up."""
        self.attempt += 1
        now, delay = self.client.clock.monotonic(), self.backoff.current
        if now + delay >= self.deadline or self.client.stop.is_set():
            raise self._give_up(exc) from exc
        if self.client.on_retry is not None:
            self.client.on_retry(RetryNotice(self.what, self.attempt, exc, delay,
                                             now - self.start))
        return self.backoff.next()


class CardSession:
    """One customer's session: signs in once, then every operation carries the token.

    Holds the PIN for the session only, to sign in again if the bank restarted
    (as often as it takes, until the request's deadline). Mutating operations
    take an optional idempotency key (a new one by default) and raise
    OutcomeUnknown, with that key, if they may have been sent but got no answer.
    """

    def __init__(self, client: BankClient, account: str, pin: str) -> None:
        self.client, self.account, self._pin = client, account, pin
        self._token: str | None = None
        self.on_sign_in_again: Callable[[], None] | None = None

    def sign_in(self, deadline: float | None = None) -> str:
        """Check the PIN at the bank (WrongPin, CardLocked ...)."""
        return self.client.run(self.sign_in_aio(deadline))

    async def sign_in_aio(self, deadline: float | None = None) -> str:
        """:meth:`sign_in` from async code."""
        session: Session = await self.client.call_aio(
            "login", self.account, self._pin, what="signing in", deadline=deadline,
            check=lambda a: expect(a, Session, "signing in"))
        self._token = session.token
        return self._token

    def sign_out(self) -> None:
        """End the session at the bank if it can be told at once; never raises."""
        token, self._token = self._token, None
        if token is not None:
            try:
                self.client.bank.logout.oneway(token)
            except Exception:  # the session expires by itself; a success stays a success
                pass

    def _forget(self) -> None:
        """The bank forgot the session (it restarted): sign in again before the next try."""
        self._token = None
        if self.on_sign_in_again is not None:
            self.on_sign_in_again()

    async def request_aio(self, method: str, *args: Any, key: str | None,
                          what: str | None = None, deadline: float | None = None,
                          answer: type | tuple[type, ...] | None = None,
                          many: bool = False) -> Any:
        """``method(token, *args[, key])`` at the bank, signing in (again) as needed.

        With a ``key`` (a mutating request) the failures follow the module's rule:
        a refusal of the request is raised as is; any other failure is OutcomeUnknown
        once the request may have been sent, BankUnavailable ("nothing was sent")
        before. Without one (a read) it is BankUnavailable either way. ``answer``: the
        record(s) the bank must answer with (``many``: a list of them); another answer
        is a DecodeError (a read), or OutcomeUnknown (a mutating request: it may have
        been applied).
        """
        what = what or method
        clock = self.client.clock
        deadline = clock.monotonic() + self.client.retry_for if deadline is None else deadline
        reached: list[bool] = []
        extra = () if key is None else (key,)
        check = None if answer is None else _checker(answer, many, what)
        again = Backoff(_FIRST_DELAY, _MAX_DELAY)  # a bank that forgets the session each time
        refused = 0
        try:
            while True:
                if self._token is None:
                    try:
                        await self.sign_in_aio(deadline)
                    except BaseException as exc:
                        if reached and not isinstance(exc, asyncio.CancelledError):
                            raise unavailable(f"signing in again failed: {describe(exc)}",
                                              reached=True) from exc
                        raise
                token = self._token
                try:
                    return await self.client.call_aio(method, token, *args, *extra, what=what,
                                                      deadline=deadline, reached=reached,
                                                      check=check)
                except SessionExpired:
                    self._forget()
                    refused += 1
                    if refused >= _SESSION_REFUSALS and not reached:
                        raise  # answered so, every time: nothing was applied
                    # Signs in again at once the first time (it restarted); then backs off.
                    wait = again.next() if refused > 1 else 0.0
                    if clock.monotonic() + wait >= deadline:
                        if not reached:  # every attempt was answered so: none applied
                            raise
                        raise unavailable("the bank kept forgetting the card session",
                                          reached=True) from None
                    if wait:
                        await clock.sleep(wait)
        except BankUnavailable as exc:
            if key is None:
                raise
            raise unanswered(exc, key, bool(reached)) from exc
        except Exception as exc:
            if key is None or is_refusal(exc):
                raise
            if not reached:  # the request itself never left: an unknown outcome it is not
                raise unavailable(f"{describe(exc)}; nothing was sent",
                                  reached=False) from exc
            raise OutcomeUnknown(key, describe(exc)) from exc

    def _request(self, method: str, *args: Any, key: str | None, what: str,
                 deadline: float | None, answer: type | tuple[type, ...],
                 many: bool = False) -> Any:
        return self.client.run(self.request_aio(method, *args, key=key, what=what,
                                                deadline=deadline, answer=answer, many=many))

    async def mutate_aio(self, method: str, *args: Any, key: str | None = None,
                         what: str | None = None, deadline: float | None = None
                         ) -> CashReceipt | TransferReceipt:
        """``deposit``, ``withdraw`` or ``transfer`` (by ``method``) from async code."""
        key = new_key() if key is None else key
        answer = TransferReceipt if method == "transfer" else CashReceipt
        result: CashReceipt | TransferReceipt = await self.request_aio(
            method, *args, key=key, what=what, deadline=deadline, answer=answer)
        return result

    def deposit(self, amount: int, *, key: str | None = None,
                deadline: float | None = None) -> CashReceipt:
        """Deposit ``amount`` cents; the receipt has the balance after it."""
        return self.client.run(self.mutate_aio(  # type: ignore[return-value]
            "deposit", amount, key=key, deadline=deadline,
            what=f"deposit of {_money(amount)}"))

    def withdraw(self, amount: int, *, key: str | None = None,
                 deadline: float | None = None) -> CashReceipt:
        """Withdraw ``amount`` cents (InsufficientFunds: nothing withdrawn)."""
        return self.client.run(self.mutate_aio(  # type: ignore[return-value]
            "withdraw", amount, key=key, deadline=deadline,
            what=f"withdrawal of {_money(amount)}"))

    def transfer(self, dst: str, amount: int, *, key: str | None = None,
                 deadline: float | None = None) -> TransferReceipt:
        """Move ``amount`` cents to ``dst``; the receipt has both balances after it."""
        return self.client.run(self.mutate_aio(  # type: ignore[return-value]
            "transfer", dst, amount, key=key, deadline=deadline,
            what=f"transfer of {_money(amount)} to {dst}"))

    def balance(self) -> int:
        """The account's balance in cents, as committed."""
        return int(self._request("balance", key=None, what="balance enquiry", deadline=None,
                                 answer=int))

    def statement(self, limit: int = 10) -> list[StatementEntry]:
        """The last ``limit`` lines (at most 100), newest first."""
        return list(self._request("statement", limit, key=None, what="statement",
                                  deadline=None, answer=StatementEntry, many=True))

    def outcome(self, key: str) -> RequestOutcome | None:
        """The bank's final word on ``key`` (None: not applied, and now it never will be).

        Unanswered, it raises BankUnavailable (``reached`` says whether it may have been
        sent); asking again is always safe.
        """
        answer: RequestOutcome | None = self._request(
            "outcome", key, key=None, what="asking for an outcome", deadline=None,
            answer=(RequestOutcome, type(None)))
        return answer


def _money(amount: object) -> str:
    return format_amount(amount) if type(amount) is int else repr(amount)


def _checker(answer: type | tuple[type, ...], many: bool, what: str) -> Callable[[Any], Any]:
    """The check of an answer that must be ``answer`` (``many``: a list of them)."""
    if many:
        return lambda a: expect_list(a, answer, what)
    return lambda a: expect(a, answer, what)


def run_terminal(client: BankClient, term: Any = None) -> None:
    """Serve customers at this terminal until they quit (``q`` at the name prompt) or EOF."""
    from netlet.apps.bank._terminal import run_terminal as run

    run(client, term)
