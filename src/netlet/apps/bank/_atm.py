"""ATMs: a bank client that retries with the same idempotency key, and the terminal ATM.

A request whose reply was lost may or may not have been applied, so an ATM
never makes a new request to find out: it sends the *same* request again
under the *same* key until the bank answers (the ledger applies a key once and
answers a repeat with the first answer), and if it must give up it says the
outcome is unknown (:class:`OutcomeUnknown`, with the key) rather than guess.
``outcome(key)`` then gives the final word. A card session signs in once; if
the bank restarted and forgot the session, the client signs in again with the
PIN it holds for the session and carries on with the same key.

The terminal ATM follows the Stackless tutorial's: "Please enter your name or
account number", the PIN, then (D)eposit, (W)ithdraw, (B)alance, (T)ransfer,
(S)tatement or (Q)uit; it tells the customer what happens while the bank is
away, and reports success only after the bank acknowledged it.
"""

from __future__ import annotations

import asyncio
import getpass
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from netlet.apps.bank._commands import (
    AccountClosed,
    BankError,
    CardLocked,
    InsufficientFunds,
    InvalidCommand,
    LedgerClosed,
    StorageError,
    UnknownAccount,
    WrongPin,
    error_from_record,
    format_amount,
    parse_amount,
)
from netlet.apps.bank._pins import DEFAULT_SCRYPT_N, check_pin_format, hash_pin
from netlet.apps.bank._service import (
    SERVICE_NAME,
    ServiceError,
    SessionExpired,
    register_errors,
)
from netlet.errors import CallTimeout, NetletConnectionError, NetletError, PeerUnreachable
from netlet.node import Node, Proxy
from netlet.transport import TLSConfig

__all__ = [
    "RETRYABLE",
    "BankClient",
    "BankUnavailable",
    "CardSession",
    "OutcomeUnknown",
    "RetryNotice",
    "Terminal",
    "new_key",
    "outcome_error",
    "run_terminal",
]

RETRYABLE: tuple[type[BaseException], ...] = (
    NetletConnectionError, CallTimeout, StorageError, LedgerClosed)
"""Failures after which a request's fate is unknown: send it again under the same key."""
_FIRST_DELAY, _MAX_DELAY = 0.05, 1.0
_SIGN_INS = 3  # sign-ins one request may need when the bank keeps forgetting the session


class BankUnavailable(NetletConnectionError):
    """The bank did not answer before the client gave up."""


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


class BankClient:
    """A connection to a bank service; every call retries the same request on failure.

    ``retry_for`` seconds bound the retries of one call, ``timeout`` one attempt.
    Pass ``node`` to share a client node (its key and TLS then apply).
    """

    def __init__(self, address: str, *, node: Node | None = None, key: bytes | None = None,
                 tls: TLSConfig | None = None, timeout: float = 10.0, retry_for: float = 30.0,
                 on_retry: Callable[[RetryNotice], None] | None = None) -> None:
        register_errors()
        self.address = address
        self._own_node = node is None
        self.node = node if node is not None else Node(key=key, tls=tls, call_timeout=timeout)
        self.bank: Proxy = self.node.proxy(address, SERVICE_NAME, timeout=timeout)
        self.retry_for = retry_for
        self.on_retry = on_retry
        self.stop = threading.Event()
        """Set to make every retry loop give up at its next wait."""

    def call(self, method: str, *args: Any, what: str = "request",
             deadline: float | None = None) -> Any:
        """``bank.method(*args)``, sent again after each RETRYABLE failure until ``deadline``.

        Raises BankUnavailable on giving up, or whatever the bank raised.
        """
        func, retry = getattr(self.bank, method), _Retry(self, what, deadline)
        while True:
            try:
                return func(*args)
            except RETRYABLE as exc:
                if self.stop.wait(retry.delay_after(exc)):
                    raise BankUnavailable("stopped while the bank was not answering") from exc

    async def call_aio(self, method: str, *args: Any, what: str = "request",
                       deadline: float | None = None) -> Any:
        """:meth:`call` from async code on the client node's loop: the task waits, not a thread."""
        func, retry = getattr(self.bank, method).aio, _Retry(self, what, deadline)
        while True:
            try:
                return await func(*args)
            except RETRYABLE as exc:
                await asyncio.sleep(retry.delay_after(exc))
                if self.stop.is_set():
                    raise BankUnavailable("stopped while the bank was not answering") from exc

    # -- operator calls -----------------------------------------------------------

    def open_account(self, account: str, owner: str, pin: str, *, key: str | None = None,
                     pin_cost: int = DEFAULT_SCRYPT_N) -> dict[str, Any]:
        """Open ``account``; the PIN is hashed here, so it never travels."""
        pin_hash = hash_pin(pin, n=pin_cost)
        return self._keyed("open_account", account, owner, pin_hash, key=key,
                           what=f"opening {account}")

    def close_account(self, account: str, *, key: str | None = None) -> dict[str, Any]:
        return self._keyed("close_account", account, key=key, what=f"closing {account}")

    def _keyed(self, method: str, *args: Any, key: str | None, what: str) -> dict[str, Any]:
        key = key or new_key("op")
        try:
            result: dict[str, Any] = self.call(method, *args, key, what=what)
        except BankUnavailable as exc:
            raise OutcomeUnknown(key, str(exc)) from exc
        return result

    def accounts(self, prefix: str = "") -> list[dict[str, Any]]:
        return list(self.call("accounts", prefix, what="listing accounts"))

    def outcomes(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """Each key's outcome; asking settles a key the bank never saw as not applied."""
        return list(self.call("outcomes", keys, what="asking for outcomes"))

    def audit(self) -> dict[str, Any]:
        return dict(self.call("audit", what="audit"))

    def info(self) -> dict[str, Any]:
        return dict(self.call("info", what="info"))

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

    __slots__ = ("attempt", "client", "deadline", "delay", "start", "what")

    def __init__(self, client: BankClient, what: str, deadline: float | None) -> None:
        self.client, self.what = client, what
        self.start = time.monotonic()
        self.deadline = self.start + client.retry_for if deadline is None else deadline
        self.attempt, self.delay = 0, _FIRST_DELAY

    def delay_after(self, exc: BaseException) -> float:
        """Seconds to wait before the next attempt; BankUnavailable if it is time to give up."""
        self.attempt += 1
        now, delay = time.monotonic(), self.delay
        if now + delay > self.deadline or self.client.stop.is_set():
            raise BankUnavailable(f"the bank did not answer for {now - self.start:.0f} s "
                                  f"({_describe(exc)})") from exc
        if self.client.on_retry is not None:
            self.client.on_retry(RetryNotice(self.what, self.attempt, exc, delay,
                                             now - self.start))
        self.delay = min(delay * 2, _MAX_DELAY)
        return delay


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 120 else text[:117] + "..."


class CardSession:
    """One customer's session: signs in once, then every operation carries the token.

    Holds the PIN for the session only, to sign in again if the bank restarted.
    Mutating operations take an optional idempotency key (a new one by default)
    and raise OutcomeUnknown, with that key, if the bank never answered.
    """

    def __init__(self, client: BankClient, account: str, pin: str) -> None:
        self.client, self.account, self._pin = client, account, pin
        self._token: str | None = None
        self.on_sign_in_again: Callable[[], None] | None = None

    def sign_in(self, deadline: float | None = None) -> str:
        """Check the PIN at the bank (WrongPin, CardLocked, UnknownAccount ...)."""
        answer = self.client.call("login", self.account, self._pin, what="signing in",
                                  deadline=deadline)
        self._token = str(answer["token"])
        return self._token

    def sign_out(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:
                self.client.bank.logout.oneway(token)
            except NetletConnectionError:
                pass  # the session expires by itself

    def _call(self, method: str, *args: Any, what: str, deadline: float | None,
              sent: list[bool] | None = None) -> Any:
        """Call with the session's token; ``sent`` becomes ``[True]`` once the request left."""
        deadline = time.monotonic() + self.client.retry_for if deadline is None else deadline
        for _ in range(_SIGN_INS):
            token = self._token or self.sign_in(deadline)
            if sent is not None:
                sent[:] = [True]
            try:
                return self.client.call(method, token, *args, what=what, deadline=deadline)
            except SessionExpired:
                self._forget()
        raise SessionExpired()

    def _forget(self) -> None:
        """The bank forgot the session (it restarted): sign in again before the next try."""
        self._token = None
        if self.on_sign_in_again is not None:
            self.on_sign_in_again()

    def _mutate(self, method: str, *args: Any, key: str | None, what: str,
                deadline: float | None) -> dict[str, Any]:
        key = key or new_key()
        sent: list[bool] = []
        try:
            result: dict[str, Any] = self._call(method, *args, key, what=what,
                                                deadline=deadline, sent=sent)
        except BankUnavailable as exc:
            raise _unanswered(exc, key, sent) from exc
        return result

    def deposit(self, amount: int, *, key: str | None = None,
                deadline: float | None = None) -> dict[str, Any]:
        """Deposit ``amount`` cents; ``{account, amount, balance}``."""
        return self._mutate("deposit", amount, key=key, deadline=deadline,
                            what=f"deposit of {_money(amount)}")

    def withdraw(self, amount: int, *, key: str | None = None,
                 deadline: float | None = None) -> dict[str, Any]:
        """Withdraw ``amount`` cents (InsufficientFunds: nothing withdrawn)."""
        return self._mutate("withdraw", amount, key=key, deadline=deadline,
                            what=f"withdrawal of {_money(amount)}")

    def transfer(self, dst: str, amount: int, *, key: str | None = None,
                 deadline: float | None = None) -> dict[str, Any]:
        """Move ``amount`` cents to ``dst``; ``{src, dst, amount, src_balance, dst_balance}``."""
        return self._mutate("transfer", dst, amount, key=key, deadline=deadline,
                            what=f"transfer of {_money(amount)} to {dst}")

    # -- the same from async code on the client node's loop (the swarm's ATMs) ----------

    async def sign_in_aio(self, deadline: float | None = None) -> str:
        """:meth:`sign_in` from async code."""
        answer = await self.client.call_aio("login", self.account, self._pin,
                                            what="signing in", deadline=deadline)
        self._token = str(answer["token"])
        return self._token

    async def mutate_aio(self, method: str, *args: Any, key: str | None = None,
                         deadline: float | None = None) -> dict[str, Any]:
        """``deposit``, ``withdraw`` or ``transfer`` (by ``method``) from async code."""
        key = key or new_key()
        deadline = time.monotonic() + self.client.retry_for if deadline is None else deadline
        sent = False
        try:
            for _ in range(_SIGN_INS):
                token = self._token or await self.sign_in_aio(deadline)
                sent = True
                try:
                    result: dict[str, Any] = await self.client.call_aio(
                        method, token, *args, key, what=method, deadline=deadline)
                    return result
                except SessionExpired:
                    self._forget()
        except BankUnavailable as exc:
            raise _unanswered(exc, key, [sent] if sent else []) from exc
        raise SessionExpired()

    def balance(self) -> int:
        return int(self._call("balance", what="balance enquiry", deadline=None))

    def statement(self, limit: int = 10) -> list[dict[str, Any]]:
        return list(self._call("statement", limit, what="statement", deadline=None))

    def outcome(self, key: str) -> dict[str, Any] | None:
        """The bank's final word on ``key`` (None: not applied, and now it never will be)."""
        answer: dict[str, Any] | None = self._call("outcome", key, what="asking for an outcome",
                                                   deadline=None)
        return answer


def _unanswered(exc: BankUnavailable, key: str, sent: list[bool]) -> BankUnavailable:
    """What a mutating request that got no answer raises: unknown outcome once it was sent."""
    if not sent:  # could not even sign in: the request never left this ATM
        return BankUnavailable(f"{exc}; nothing was sent")
    return OutcomeUnknown(key, exc.args[0] if exc.args else str(exc))


def _money(amount: object) -> str:
    return format_amount(amount) if type(amount) is int else repr(amount)


def outcome_error(answer: dict[str, Any]) -> BankError | None:
    """The refusal an ``outcome`` answer records, rebuilt, or None if it succeeded."""
    return None if answer.get("ok") else error_from_record(answer.get("error", {}))


# -- the terminal ATM ----------------------------------------------------------------


class Terminal(Protocol):
    """Where the ATM talks to its customer; tests may pass their own."""

    def ask(self, prompt: str) -> str:
        """A line typed by the customer (EOFError when there is none)."""

    def secret(self, prompt: str) -> str:
        """A line typed without echo (the PIN)."""

    def say(self, text: str) -> None:
        """Show a line."""


class ConsoleTerminal:
    """The process's terminal: ``input``, ``getpass`` and ``print``."""

    def ask(self, prompt: str) -> str:
        return input(prompt)

    def secret(self, prompt: str) -> str:
        return getpass.getpass(prompt)

    def say(self, text: str) -> None:
        print(text, flush=True)


_MENU = "(D)eposit, (W)ithdraw, (B)alance, (T)ransfer, (S)tatement or (Q)uit? "


class _Atm:
    """The terminal ATM's dialogue; one customer at a time, like the seed's."""

    def __init__(self, client: BankClient, term: Terminal) -> None:
        self.client, self.term = client, term
        client.on_retry = self._retrying

    def _retrying(self, notice: RetryNotice) -> None:
        if notice.attempt == 1 or notice.attempt % 5 == 0:
            self.term.say(f"The bank is not answering ({_reason(notice.error)}). "
                          f"Still trying your {notice.what} (attempt {notice.attempt + 1}); "
                          "it will never be applied twice.")

    def run(self) -> None:
        while True:
            self.term.say("")
            self.term.say("Welcome to the netlet Bank ATM network!")
            try:
                name = self.term.ask("Please enter your name or account number: ").strip()
            except EOFError:
                self.term.say("")
                return
            if not name:
                continue
            if name.lower() in ("q", "quit", "exit"):
                return
            card = self._sign_in(name)
            if card is not None:
                self._serve(card)
                card.sign_out()
                self.term.say("Thank you for banking with netlet Bank.")

    def _sign_in(self, account: str) -> CardSession | None:
        while True:
            try:
                pin = self.term.secret("PIN: ").strip()
            except EOFError:
                return None
            if not pin:  # an empty PIN cancels: back to the name prompt
                return None
            try:
                check_pin_format(pin)
            except ValueError:
                self.term.say("A PIN is 4 to 12 digits; please try again (an empty line "
                              "cancels).")
                continue
            card = self.client.card(account, pin)
            try:
                card.sign_in()
            except WrongPin as exc:
                self.term.say(f"Wrong PIN. {exc.attempts_left} attempt(s) left before the "
                              "card is locked.")
                continue
            except CardLocked as exc:
                self.term.say(f"This card is locked after too many wrong PINs; try again in "
                              f"{max(1, round(exc.retry_after / 60))} minute(s).")
            except (UnknownAccount, AccountClosed, InvalidCommand) as exc:
                self.term.say(f"Sorry: {_sentence(exc)}")
            except BankUnavailable as exc:
                self.term.say(f"Sorry, the bank cannot be reached right now ({exc}). "
                              "Please try again later.")
            except NetletError as exc:  # e.g. this ATM lacks the bank's key
                self.term.say(f"Sorry, this ATM cannot work with the bank: {exc}")
            else:
                self.term.say(f"Hello, {account}.")
                card.on_sign_in_again = lambda: self.term.say(
                    "The bank restarted and forgot your session; signing you in again.")
                return card
            return None

    def _serve(self, card: CardSession) -> None:
        while True:
            try:
                choice = self.term.ask(_MENU).strip().upper()[:1]
            except EOFError:
                return
            if choice == "Q":
                return
            action = {"D": self._deposit, "W": self._withdraw, "B": self._balance,
                      "T": self._transfer, "S": self._statement}.get(choice)
            if action is None:
                self.term.say("Invalid selection.")
                continue
            try:
                action(card)
            except InsufficientFunds as exc:
                self.term.say(f"Sorry, your balance is {format_amount(exc.balance)}, less than "
                              f"{format_amount(exc.amount)}. Nothing was taken.")
            except OutcomeUnknown as exc:
                self.term.say(f"The bank has not answered for a while. Your request may or may "
                              f"not have gone through; it can never be applied twice. Its "
                              f"reference is {exc.key}: please ask the bank about it.")
            except BankUnavailable as exc:
                self.term.say(f"Sorry, the bank cannot be reached right now ({exc}).")
            except (BankError, ServiceError) as exc:
                self.term.say(f"Sorry: {_sentence(exc)}")

    def _amount(self, prompt: str = "Amount: ") -> int | None:
        text = self.term.ask(prompt)
        try:
            return parse_amount(text)
        except InvalidCommand as exc:
            self.term.say(f"That is not an amount we can take: {exc}.")
            return None

    def _keep_trying(self, key: str, run: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        """Run ``run(key)``; when it times out, offer to go on with the same key."""
        while True:
            try:
                return run(key)
            except KeyboardInterrupt:
                raise OutcomeUnknown(key, "interrupted") from None
            except OutcomeUnknown:
                answer = self.term.ask("The bank is still not answering. Keep trying? [Y/n] ")
                if answer.strip().lower().startswith("n"):
                    raise

    def _deposit(self, card: CardSession) -> None:
        amount = self._amount()
        if amount is not None:
            r = self._keep_trying(new_key(), lambda k: card.deposit(amount, key=k))
            self.term.say(f"Deposited {format_amount(amount)}. "
                          f"Your balance is {format_amount(r['balance'])}.")

    def _withdraw(self, card: CardSession) -> None:
        amount = self._amount()
        if amount is not None:
            r = self._keep_trying(new_key(), lambda k: card.withdraw(amount, key=k))
            self.term.say(f"Please take your cash: {format_amount(amount)}. "
                          f"Your balance is {format_amount(r['balance'])}.")

    def _transfer(self, card: CardSession) -> None:
        dst = self.term.ask("To account: ").strip()
        amount = self._amount()
        if amount is not None:
            r = self._keep_trying(new_key(), lambda k: card.transfer(dst, amount, key=k))
            self.term.say(f"Transferred {format_amount(amount)} to {dst}. "
                          f"Your balance is {format_amount(r['src_balance'])}.")

    def _balance(self, card: CardSession) -> None:
        self.term.say(f"Your balance is {format_amount(card.balance())}.")

    def _statement(self, card: CardSession) -> None:
        lines = card.statement(10)
        if not lines:
            self.term.say("No transactions yet.")
            return
        self.term.say(f"{'date':<19}  {'what':<12} {'amount':>14} {'balance':>14}")
        for e in lines:
            when = datetime.fromtimestamp(e["timestamp"]).strftime("%Y-%m-%d %H:%M:%S")
            what = e["kind"] if e["kind"] != "Transfer" else (
                f"to {e['counterparty']}" if e["amount"] < 0 else f"from {e['counterparty']}")
            self.term.say(f"{when:<19}  {what[:12]:<12} {format_amount(e['amount']):>14} "
                          f"{format_amount(e['balance_after']):>14}")


def _reason(exc: BaseException) -> str:
    """Why a request is being retried, in a customer's words."""
    if isinstance(exc, PeerUnreachable):
        return "cannot connect"
    if isinstance(exc, CallTimeout):
        return "no answer in time"
    if isinstance(exc, StorageError):
        return "its storage failed"
    if isinstance(exc, LedgerClosed):
        return "it is shutting down"
    return "the connection was lost"


def _sentence(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def run_terminal(client: BankClient, term: Terminal | None = None) -> None:
    """Serve customers at this terminal until they quit (``q`` at the name prompt) or EOF."""
    _Atm(client, term or ConsoleTerminal()).run()
