"""The terminal ATM, after the Stackless tutorial's: one customer at a time.

"Please enter your name or account number", the PIN, then (D)eposit,
(W)ithdraw, (B)alance, (T)ransfer, (S)tatement or (Q)uit. It tells the
customer what happens while the bank is away, reports success only after the
bank acknowledged it, and gives the request's reference when it must stop
trying without an answer.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TypeVar

from netlet.apps.bank._atm import (
    BankClient,
    BankUnavailable,
    CardSession,
    OutcomeUnknown,
    RetryNotice,
    new_key,
)
from netlet.apps.bank._commands import (
    BankError,
    CardLocked,
    InsufficientFunds,
    InvalidCommand,
    LedgerClosed,
    StorageError,
    WrongPin,
    format_amount,
    parse_amount,
)
from netlet.apps.bank._pins import check_pin_format
from netlet.apps.bank._service import ServiceError
from netlet.errors import CallTimeout, NetletError, PeerUnreachable

__all__ = ["ConsoleTerminal", "Terminal", "run_terminal"]


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


_R = TypeVar("_R")
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
            except (BankError, ServiceError) as exc:
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
            except EOFError:  # input ended at a prompt of the operation: nothing was sent
                return
            except InsufficientFunds as exc:
                self.term.say(f"Sorry, your balance is {format_amount(exc.balance)}, less than "
                              f"{format_amount(exc.amount)}. Nothing was taken.")
            except OutcomeUnknown as exc:
                self.term.say(f"The bank has not answered for a while. Your request may or may "
                              f"not have gone through; it can never be applied twice. Its "
                              f"reference is {exc.key}: please ask the bank about it.")
            except BankUnavailable as exc:
                done = "" if exc.reached else " Nothing was done."
                self.term.say(f"Sorry, the bank cannot be reached right now ({exc}).{done}")
            except (BankError, ServiceError) as exc:
                self.term.say(f"Sorry: {_sentence(exc)}")
            except Exception as exc:  # an error the bank did not mean (a read: nothing to settle)
                self.term.say(f"Sorry, the bank could not answer ({type(exc).__name__}).")

    def _amount(self, prompt: str = "Amount: ") -> int | None:
        text = self.term.ask(prompt)
        try:
            return parse_amount(text)
        except InvalidCommand as exc:
            self.term.say(f"That is not an amount we can take: {exc}.")
            return None

    def _keep_trying(self, key: str, run: Callable[[str], _R]) -> _R:
        """Run ``run(key)``; when it times out, offer to go on with the same key."""
        while True:
            try:
                return run(key)
            except KeyboardInterrupt:
                raise OutcomeUnknown(key, "interrupted") from None
            except BankUnavailable:  # sent or not: the same key again is always safe
                try:
                    answer = self.term.ask("The bank is still not answering. "
                                           "Keep trying? [Y/n] ")
                except EOFError:  # the customer left: stop, and give the reference
                    answer = "n"
                except KeyboardInterrupt:
                    raise OutcomeUnknown(key, "interrupted") from None
                if answer.strip().lower().startswith("n"):
                    raise

    def _deposit(self, card: CardSession) -> None:
        amount = self._amount()
        if amount is not None:
            r = self._keep_trying(new_key(), lambda k: card.deposit(amount, key=k))
            self.term.say(f"Deposited {format_amount(amount)}. "
                          f"Your balance is {format_amount(r.balance)}.")

    def _withdraw(self, card: CardSession) -> None:
        amount = self._amount()
        if amount is not None:
            r = self._keep_trying(new_key(), lambda k: card.withdraw(amount, key=k))
            self.term.say(f"Please take your cash: {format_amount(amount)}. "
                          f"Your balance is {format_amount(r.balance)}.")

    def _transfer(self, card: CardSession) -> None:
        dst = self.term.ask("To account: ").strip()
        amount = self._amount()
        if amount is not None:
            r = self._keep_trying(new_key(), lambda k: card.transfer(dst, amount, key=k))
            self.term.say(f"Transferred {format_amount(amount)} to {dst}. "
                          f"Your balance is {format_amount(r.src_balance)}.")

    def _balance(self, card: CardSession) -> None:
        self.term.say(f"Your balance is {format_amount(card.balance())}.")

    def _statement(self, card: CardSession) -> None:
        lines = card.statement(10)
        if not lines:
            self.term.say("No transactions yet.")
            return
        self.term.say(f"{'date':<19}  {'what':<12} {'amount':>14} {'balance':>14}")
        for e in lines:
            when = datetime.fromtimestamp(e.timestamp).strftime("%Y-%m-%d %H:%M:%S")
            what = e.kind if e.kind != "Transfer" else (
                f"to {e.counterparty}" if e.amount < 0 else f"from {e.counterparty}")
            self.term.say(f"{when:<19}  {what[:12]:<12} {format_amount(e.amount):>14} "
                          f"{format_amount(e.balance_after):>14}")


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
