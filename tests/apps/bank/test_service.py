"""The bank service over netlet: sessions, validation, idempotency, the operator gate, the CLI.

The service runs in this process on a real TCP node; clients use their own
node, so every call crosses the wire and errors arrive rebuilt as their types.
The CLI tests run ``netlet bank`` and ``netlet atm`` as child processes.
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import netlet
from netlet.apps.bank import (
    AccountNotEmpty,
    CardLocked,
    CashReceipt,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    InvalidCommand,
    Ledger,
    Session,
    UnknownAccount,
    WrongPin,
    hash_pin,
)
from netlet.apps.bank._atm import (
    BankClient,
    BankUnavailable,
    OutcomeUnknown,
    RetryNotice,
)
from netlet.apps.bank._service import (
    SERVICE_NAME,
    BankService,
    KeySettled,
    NotPermitted,
    SessionExpired,
)
from netlet.testing import VirtualClock
from tests.apps.bank.bank_server import BankProcess
from tests.apps.bank.bank_server import netlet as run_netlet

PIN = "1234"
CHEAP = 16  # scrypt cost for test accounts: the tests are about the service, not the hash


class Clock(VirtualClock):
    """The virtual clock of session expiry, which can also move at every reading."""

    def __init__(self) -> None:
        super().__init__()
        self.step = 0.0  # added at every reading: > the session ttl forgets every session

    def monotonic(self) -> float:
        if self.step:
            self.advance(self.step)
        return super().monotonic()


@dataclass
class Bank:
    ledger: Ledger
    service: BankService
    address: str
    client: BankClient
    clock: Clock

    def journal_size(self) -> int:
        return len(self.ledger.journal(limit=100_000))


def _make_bank(tmp_path: Path, node_factory: Callable[..., netlet.Node], *,
               operator: bool = True, node_options: dict[str, Any] | None = None,
               client_key: bytes | None = None) -> Iterator[Bank]:
    ledger = Ledger(tmp_path / "bank.db", lock_seconds=60)
    clock = Clock()
    service = BankService(ledger, operator=operator, session_ttl=300, clock=clock)
    server = node_factory("tcp://127.0.0.1:0", **(node_options or {}))
    server.serve(service, SERVICE_NAME)
    assert server.address is not None
    client_node = node_factory(key=client_key, call_timeout=10)
    client = BankClient(server.address, node=client_node, timeout=10, retry_for=5)
    try:
        yield Bank(ledger, service, server.address, client, clock)
    finally:
        server.unserve(SERVICE_NAME)
        ledger.close()


@pytest.fixture
def bank(tmp_path: Path, node_factory: Callable[..., netlet.Node]) -> Iterator[Bank]:
    b_iter = _make_bank(tmp_path, node_factory)
    b = next(b_iter)
    b.client.open_account("alice", "Alice", PIN, pin_cost=CHEAP)
    b.client.open_account("bob", "Bob", PIN, pin_cost=CHEAP)
    yield b
    next(b_iter, None)


# -- sessions ---------------------------------------------------------------------------


def test_login_gives_a_token_that_carries_the_session(bank: Bank) -> None:
    answer = bank.client.bank.login("alice", PIN)
    assert answer.account == "alice"
    assert answer.expires_in == 300
    token = answer.token
    assert bank.client.bank.deposit(token, 500, "k1").balance == 500
    assert bank.client.bank.balance(token) == 500


def test_wrong_pins_lock_the_card_and_malformed_pins_do_not_count(bank: Bank) -> None:
    with pytest.raises(InvalidCommand, match="4 to 12 digits"):
        bank.client.bank.login("alice", "12ab")
    with pytest.raises(InvalidCommand):
        bank.client.bank.login("alice", 1234)
    with pytest.raises(WrongPin) as first:
        bank.client.bank.login("alice", "9999")
    assert first.value.attempts_left == 2
    with pytest.raises(WrongPin):
        bank.client.bank.login("alice", "9998")
    with pytest.raises(CardLocked) as locked:
        bank.client.bank.login("alice", "9997")
    assert 0 < locked.value.retry_after <= 60
    with pytest.raises(CardLocked):  # even the right PIN, while locked
        bank.client.bank.login("alice", PIN)
    assert bank.client.bank.login("bob", PIN).account == "bob"  # other cards unaffected


def test_unknown_and_expired_tokens_are_refused(bank: Bank) -> None:
    token = bank.client.bank.login("alice", PIN).token
    for bad in ("x" * 43, "", None, 7, "../../etc", "a" * 10_000):
        with pytest.raises(SessionExpired):
            bank.client.bank.deposit(bad, 100, "k-bad")
    bank.clock.advance(301)
    with pytest.raises(SessionExpired):
        bank.client.bank.balance(token)
    token = bank.client.bank.login("alice", PIN).token
    bank.client.bank.logout(token)
    with pytest.raises(SessionExpired):
        bank.client.bank.balance(token)
    assert bank.journal_size() == 2  # the two account openings, nothing else


def test_a_session_expires_exactly_at_its_ttl_on_the_virtual_clock(bank: Bank) -> None:
    token = bank.client.bank.login("alice", PIN).token
    bank.clock.advance(299.75)  # just before the 300 s TTL: alive
    assert bank.client.bank.balance(token) == 0
    bank.clock.advance(0.25)  # exactly at it: gone, with no real wait
    with pytest.raises(SessionExpired):
        bank.client.bank.balance(token)


def test_card_session_signs_in_again_when_the_bank_forgot_it(bank: Bank) -> None:
    card = bank.client.card("alice", PIN)
    card.deposit(100)
    signed_in_again: list[bool] = []
    card.on_sign_in_again = lambda: signed_in_again.append(True)
    bank.clock.advance(301)  # as if the bank restarted or the token expired
    assert card.deposit(100).balance == 200
    assert signed_in_again == [True]


# -- operations and validation ---------------------------------------------------------


def test_operations_and_statement(bank: Bank) -> None:
    card = bank.client.card("alice", PIN)
    assert card.deposit(10_000).balance == 10_000
    assert card.withdraw(2_500).balance == 7_500
    moved = card.transfer("bob", 1_000)
    assert (moved.src_balance, moved.dst_balance) == (6_500, 1_000)
    assert card.balance() == 6_500
    lines = card.statement(2)
    assert [(e.kind, e.amount, e.balance_after) for e in lines] == [
        ("Transfer", -1_000, 6_500), ("Withdraw", -2_500, 7_500)]
    with pytest.raises(InsufficientFunds) as exc:
        card.withdraw(6_501)
    assert (exc.value.balance, exc.value.amount) == (6_500, 6_501)
    assert card.balance() == 6_500


@pytest.mark.parametrize("amount", [0, -1, -10**20, 1.5, 12.34, True, "100", None, 10**40,
                                    [100], {"amount": 1}])
def test_bad_amounts_are_refused_and_change_nothing(bank: Bank, amount: object) -> None:
    token = bank.client.bank.login("alice", PIN).token
    bank.client.bank.deposit(token, 1_000, "seed")
    before = bank.journal_size()
    for method, args in (("deposit", (amount,)), ("withdraw", (amount,)),
                         ("transfer", ("bob", amount))):
        with pytest.raises(InvalidAmount):
            getattr(bank.client.bank, method)(token, *args, f"bad-{method}")
    assert bank.journal_size() == before
    assert bank.client.bank.balance(token) == 1_000


def test_malformed_requests_are_refused_and_change_nothing(bank: Bank) -> None:
    token = bank.client.bank.login("alice", PIN).token
    api = bank.client.bank
    before = bank.ledger.journal(limit=100_000)[-1].seq
    cases: list[tuple[Callable[[], object], type[BaseException]]] = [
        (lambda: api.transfer(token, "nobody", 100, "t1"), UnknownAccount),
        (lambda: api.transfer(token, "alice", 100, "t2"), InvalidCommand),  # to itself
        (lambda: api.transfer(token, "bad name!", 100, "t3"), InvalidCommand),
        (lambda: api.transfer(token, ["bob"], 100, "t4"), InvalidCommand),
        (lambda: api.deposit(token, 100, ""), InvalidCommand),  # empty key
        (lambda: api.deposit(token, 100, "k" * 201), InvalidCommand),
        (lambda: api.deposit(token, 100, 42), InvalidCommand),
        (lambda: api.statement(token, -1), InvalidCommand),
        (lambda: api.statement(token, 10**6), InvalidCommand),
        (lambda: api.statement(token, "10"), InvalidCommand),
        (lambda: api.login("nobody", PIN), WrongPin),  # as a wrong PIN: no account probing
        (lambda: api.login({"a": 1}, PIN), InvalidCommand),
        (lambda: api.deposit(token, 100), netlet.BadArguments),
        (lambda: api.withdraw(token, 100, "k", "extra"), netlet.BadArguments),
        (lambda: api.execute("Deposit"), netlet.NotExposed),
        (lambda: api.outcomes(["k"] * 1001), InvalidCommand),
        (lambda: api.outcomes("not a list"), InvalidCommand),
        (lambda: api.accounts(42), InvalidCommand),
    ]
    for call, expected in cases:
        with pytest.raises(expected):
            call()
    # Only the transfer to an unknown account is journaled, as a refusal (so that a
    # retry of key t1 gets the same answer); no money moved.
    added = bank.ledger.journal(after=before)
    assert [(o.key, o.ok) for o in added] == [("t1", False)]
    assert bank.ledger.audit().n_entries == 0
    assert bank.client.bank.balance(token) == 0


def test_pin_hashes_are_checked_when_accounts_open(bank: Bank) -> None:
    api = bank.client.bank
    with pytest.raises(InvalidCommand, match="hash_pin"):
        api.open_account("carol", "Carol", "1234", "o1")  # a PIN in clear
    costly = hash_pin(PIN, n=2**16).replace("$8$", "$16$", 1)  # 128 MiB to check
    with pytest.raises(InvalidCommand, match="scrypt cost"):
        api.open_account("carol", "Carol", costly, "o2")
    assert all(a.account != "carol" for a in bank.client.accounts())


# -- idempotency and outcomes ------------------------------------------------------------


def test_same_key_same_answer_different_request_refused(bank: Bank) -> None:
    card = bank.client.card("alice", PIN)
    first = card.deposit(700, key="dep-1")
    again = card.deposit(700, key="dep-1")
    assert first == again == CashReceipt("alice", 700, 700)
    with pytest.raises(IdempotencyConflict):
        card.deposit(800, key="dep-1")
    with pytest.raises(IdempotencyConflict):
        card.withdraw(700, key="dep-1")
    with pytest.raises(InsufficientFunds):
        card.withdraw(5_000, key="wd-1")
    card.deposit(10_000)
    with pytest.raises(InsufficientFunds):  # a refusal is the first answer too
        card.withdraw(5_000, key="wd-1")
    assert card.balance() == 10_700


def test_outcome_reports_and_settles_keys(bank: Bank) -> None:
    card = bank.client.card("alice", PIN)
    card.deposit(300, key="o-dep")
    with pytest.raises(InsufficientFunds):
        card.withdraw(10_000, key="o-wd")
    applied = card.outcome("o-dep")
    assert applied is not None
    assert applied.ok
    assert applied.command == {"type": "Deposit", "account": "alice", "amount": 300}
    assert applied.result == CashReceipt("alice", 300, 300)
    refused = card.outcome("o-wd")
    assert refused is not None
    assert not refused.ok
    assert isinstance(refused.error, InsufficientFunds)
    assert card.outcome("never-sent") is None
    with pytest.raises(KeySettled):  # asking settled it: it can never apply now
        card.deposit(300, key="never-sent")
    assert card.deposit(300, key="o-dep").balance == 300  # known keys still answer
    bob = bank.client.card("bob", PIN)
    with pytest.raises(NotPermitted):
        bob.outcome("o-dep")
    assert [o and o.ok for o in bank.client.outcomes(["o-dep", "o-wd", "nope"])] == [
        True, False, None]


def test_keys_are_one_namespace_the_first_customer_takes_a_key(bank: Bank) -> None:
    """docs/bank.md: a key another customer used, or asked about, first is theirs."""
    alice, bob = bank.client.card("alice", PIN), bank.client.card("bob", PIN)
    alice.deposit(100, key="pay-1")
    with pytest.raises(IdempotencyConflict):  # the same amount, but bob's account
        bob.deposit(100, key="pay-1")
    assert alice.outcome("pay-2") is None  # alice asks first: fenced under her name
    with pytest.raises(KeySettled):
        bob.deposit(100, key="pay-2")
    with pytest.raises(NotPermitted):  # and bob may not ask about her fence
        bob.outcome("pay-2")
    assert (alice.balance(), bob.balance()) == (100, 0)


# -- the operator gate and keys -------------------------------------------------------------


def test_operator_calls_refused_when_the_bank_allows_none(
        tmp_path: Path, node_factory: Callable[..., netlet.Node]) -> None:
    gen = _make_bank(tmp_path, node_factory, operator=False)
    b = next(gen)
    try:
        for call in (lambda: b.client.open_account("x1", "X", PIN, pin_cost=CHEAP),
                     lambda: b.client.close_account("x1"), b.client.accounts,
                     lambda: b.client.outcomes(["k"]), b.client.audit):
            with pytest.raises(NotPermitted, match="operator"):
                call()
        assert b.client.info().operator is False
        assert b.journal_size() == 0
    finally:
        next(gen, None)


def test_keyed_bank_refuses_peers_without_the_key(
        tmp_path: Path, node_factory: Callable[..., netlet.Node]) -> None:
    key = netlet.generate_key()
    gen = _make_bank(tmp_path, node_factory, node_options={"key": key}, client_key=key)
    b = next(gen)
    try:
        b.client.open_account("carol", "Carol", PIN, pin_cost=CHEAP)
        stranger = BankClient(b.address, node=node_factory(call_timeout=5), retry_for=0)
        with pytest.raises(BankUnavailable, match="refused this ATM") as no_key:
            stranger.card("carol", PIN).deposit(100)
        assert not no_key.value.reached  # nothing was sent: a refusal, not an unknown
        wrong = BankClient(b.address, node=node_factory(key=netlet.generate_key()), retry_for=0)
        with pytest.raises(BankUnavailable, match="refused this ATM") as bad_key:
            wrong.accounts()
        assert not bad_key.value.reached
        assert [a.balance for a in b.client.accounts()] == [0]
    finally:
        next(gen, None)


def test_close_needs_an_empty_account(bank: Bank) -> None:
    card = bank.client.card("bob", PIN)
    card.deposit(100)
    with pytest.raises(AccountNotEmpty):
        bank.client.close_account("bob")
    card.withdraw(100)
    bank.client.close_account("bob")
    assert [a.status for a in bank.client.accounts("bob")] == ["closed"]


# -- the client's retries ------------------------------------------------------------------


class _Flaky:
    """Stands in for the bank proxy: fails ``failures`` times, then answers."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures, self.error = failures, error
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        flaky = self

        class Method:
            @staticmethod
            async def aio(*args: Any) -> Any:
                flaky.calls.append((name, *args))
                if len(flaky.calls) <= flaky.failures:
                    raise flaky.error
                if name == "login":
                    return Session("t" * 43, "alice", 300.0)
                return CashReceipt("alice", args[1], 100)

        return Method


def _virtual_client(bank: Bank, node_factory: Callable[..., netlet.Node],
                    retry_for: float) -> tuple[BankClient, VirtualClock]:
    """A client of ``bank`` whose retries and their deadline wait on a virtual clock."""
    clock = VirtualClock()
    node = node_factory(call_timeout=10, clock=clock)
    return BankClient(bank.address, node=node, timeout=10, retry_for=retry_for), clock


def _drive(clock: VirtualClock, fn: Callable[[], Any], step: float = 0.05) -> Any:
    """Run ``fn`` on a thread; each time it waits on ``clock`` (a timer armed beside the
    node's sweep), move the clock ``step`` on. Returns or raises what ``fn`` did."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(fn)
        deadline = time.monotonic() + 10
        while not fut.done():
            assert time.monotonic() < deadline, "the retries never ended"
            if clock.pending >= 2:
                clock.advance(step)
            else:
                concurrent.futures.wait([fut], 0.001)
        return fut.result()


def test_client_retries_the_same_request_and_tells(
        bank: Bank, node_factory: Callable[..., netlet.Node]) -> None:
    client, clock = _virtual_client(bank, node_factory, retry_for=5)
    flaky = _Flaky(3, netlet.ConnectionLost("cut"))
    notices: list[RetryNotice] = []
    client.bank = flaky  # type: ignore[assignment]
    client.on_retry = notices.append
    card = client.card("alice", PIN)
    card._token = "t" * 43
    assert _drive(clock, lambda: card.deposit(100, key="same")) == CashReceipt("alice", 100, 100)
    assert flaky.calls == [("deposit", "t" * 43, 100, "same")] * 4
    assert [n.attempt for n in notices] == [1, 2, 3]
    assert [n.delay for n in notices] == [0.05, 0.1, 0.2]  # the backoff, exactly
    assert all(isinstance(n.error, netlet.ConnectionLost) for n in notices)


class _Restarting:
    """Stands in for the bank proxy of a bank that restarts again and again: the first
    deposit is cut after it was sent (it may have been applied); every later one finds
    the session forgotten."""

    def __init__(self) -> None:
        self.deposits = 0
        self.logins = 0

    def __getattr__(self, name: str) -> Any:
        outer = self

        class Method:
            @staticmethod
            async def aio(*args: Any) -> Any:
                if name == "login":
                    outer.logins += 1
                    return Session("t" * 43, "alice", 300.0)
                outer.deposits += 1
                if outer.deposits == 1:
                    raise netlet.ConnectionLost("cut after sending")
                raise SessionExpired()

        return Method


def test_a_bank_that_keeps_forgetting_the_session_is_unknown_not_refused(
        bank: Bank, node_factory: Callable[..., netlet.Node]) -> None:
    """Restart upon restart during one request: the first attempt may have been applied,
    so giving up is OutcomeUnknown with the key, never "refused: card session expired"."""
    client, clock = _virtual_client(bank, node_factory, retry_for=1.0)
    client.bank.info()  # a link to the bank is up: what is sent may arrive
    restarting = _Restarting()
    client.bank = restarting  # type: ignore[assignment]
    card = client.card("alice", PIN)
    start = clock.monotonic()
    with pytest.raises(OutcomeUnknown) as exc:
        _drive(clock, lambda: card.deposit(100, key="forgotten"))
    assert exc.value.key == "forgotten"
    # It signed in again at once, then backed off (0.05, 0.1, 0.2, 0.4 s): it does not
    # hammer the bank with logins (each a slow PIN check there) until its deadline.
    assert restarting.logins == 6
    assert clock.monotonic() - start <= 1.0  # gave up by its deadline, on its clock


def test_a_session_refused_at_every_attempt_is_a_refusal(bank: Bank) -> None:
    card = bank.client.card("alice", PIN)
    card.sign_in()
    bank.clock.step = 301.0  # every session is forgotten as soon as it is used
    # Refused five times in a row, each answered: a refusal, long before retry_for (with
    # 0.5 s, a loaded machine cut the last attempt short: an outcome unknown instead).
    bank.client.retry_for = 60
    start = time.monotonic()
    with pytest.raises(SessionExpired):  # answered each time: nothing was applied
        card.deposit(100, key="forgotten")
    assert time.monotonic() - start < 30
    bank.clock.step = 0.0
    assert bank.ledger.outcome("forgotten") is None


def test_client_gives_up_with_the_key_and_never_claims_success(
        bank: Bank, node_factory: Callable[..., netlet.Node]) -> None:
    client, clock = _virtual_client(bank, node_factory, retry_for=0.3)
    client.bank.info()  # a link to the bank is up: what is sent may arrive
    flaky = _Flaky(10**6, netlet.PeerUnreachable("down"))
    client.bank = flaky  # type: ignore[assignment]
    notices: list[RetryNotice] = []
    client.on_retry = notices.append
    card = client.card("alice", PIN)
    card._token = "t" * 43
    with pytest.raises(OutcomeUnknown) as exc:
        _drive(clock, lambda: card.withdraw(100, key="lost-1"))
    assert exc.value.key == "lost-1"
    # The backoff, exactly: waits of 0.05 and 0.1 s; at 0.15 s a 0.2 s wait would pass
    # the 0.3 s deadline, so it gives up there, after three attempts.
    assert [n.delay for n in notices] == [0.05, 0.1]
    assert len(flaky.calls) == 3
    with pytest.raises(BankUnavailable):
        _drive(clock, card.balance)


# -- the command line ----------------------------------------------------------------------


def test_cli_open_operate_list_close_and_audit(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    with BankProcess(db) as srv:
        b = ("--bank", srv.address)
        for account in ("alice", "bob"):
            opened = run_netlet("bank", "open", account, *b, "--pin-stdin", stdin="4321\n")
            assert opened.returncode == 0, opened.stderr
        dup = run_netlet("bank", "open", "bob", *b, "--pin-stdin", stdin="4321\n")
        assert dup.returncode == 1
        assert "already exists" in dup.stderr

        def atm(*args: str, pin: str = "4321") -> Any:
            return run_netlet("atm", *b, "--account", "alice", "--pin-stdin", *args,
                              stdin=pin + "\n")

        ok = atm("deposit", "12.34")
        assert ok.returncode == 0
        assert "balance 12.34" in ok.stdout
        poor = atm("withdraw", "20")
        assert poor.returncode == 1
        assert "holds 12.34, less than 20.00" in poor.stderr
        for bad in ("-5", "0", "0.001", "abc", "1e3", "99999999999999999"):
            r = atm("deposit", bad)
            assert r.returncode == 2, (bad, r.stderr)
            assert "AMOUNT" in r.stderr
        assert atm("balance", pin="0000").returncode == 1
        assert atm("transfer", "bob", "2.34", "--key", "t-1").returncode == 0
        assert atm("transfer", "bob", "2.34", "--key", "t-1").stdout.strip().endswith("10.00")
        assert "different command" in atm("transfer", "bob", "1", "--key", "t-1").stderr
        assert "applied" in atm("outcome", "t-1").stdout
        assert "not applied" in atm("outcome", "t-2").stdout
        assert atm("statement", "-n", "5").stdout.count("\n") == 2
        listed = run_netlet("bank", "list", *b)
        assert "alice" in listed.stdout
        assert "10.00" in listed.stdout
        assert run_netlet("bank", "close", "bob", *b).returncode == 1  # holds 2.34
        good = run_netlet("bank", "audit", "--db", db)
        assert good.returncode == 0
        assert "audit OK" in good.stdout
    with sqlite3.connect(db) as conn:  # someone edits a balance behind the ledger's back
        conn.execute("UPDATE accounts SET balance = balance + 1 WHERE account = 'alice'")
    audited = run_netlet("bank", "audit", "--db", db)
    assert audited.returncode == 1
    assert "VIOLATION" in audited.stderr


def test_cli_keyed_bank_operator_needs_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "bank.key"
    netlet.transport.write_key(key_file)
    with BankProcess(tmp_path / "bank.db", "--key-file", str(key_file)) as srv:
        b = ("--bank", srv.address)
        refused = run_netlet("bank", "open", "alice", *b, "--pin-stdin", stdin="4321\n")
        assert refused.returncode == 1
        assert "key" in refused.stderr.lower()
        ok = run_netlet("bank", "open", "alice", *b, "--key-file", key_file, "--pin-stdin",
                        stdin="4321\n")
        assert ok.returncode == 0, ok.stderr
        dep = run_netlet("atm", *b, "--key-file", key_file, "--account", "alice",
                         "--pin-stdin", "deposit", "1", stdin="4321\n")
        assert dep.returncode == 0, dep.stderr


def test_cli_key_and_mutual_tls(tmp_path: Path) -> None:
    key_file, certs = tmp_path / "bank.key", tmp_path / "certs"
    for args in (("keygen", key_file), ("certs", "init", "--dir", certs),
                 ("certs", "node", "bank", "--dir", certs, "--host", "127.0.0.1"),
                 ("certs", "node", "atm1", "--dir", certs)):
        made = run_netlet(*args)
        assert made.returncode == 0, made.stderr
    ca = ("--tls-ca", str(certs / "ca.pem"))
    serve_tls = ("--tls-cert", str(certs / "bank.pem"), "--tls-key", str(certs / "bank.key"))
    atm_tls = ("--tls-cert", str(certs / "atm1.pem"), "--tls-key", str(certs / "atm1.key"))
    with BankProcess(tmp_path / "bank.db", "--key-file", str(key_file), *serve_tls, *ca) as srv:
        common = ("--bank", srv.address, "--key-file", key_file, *atm_tls, *ca)
        opened = run_netlet("bank", "open", "alice", *common, "--pin-stdin", stdin="4321\n")
        assert opened.returncode == 0, opened.stderr
        dep = run_netlet("atm", *common, "--account", "alice", "--pin-stdin", "deposit", "5",
                         stdin="4321\n")
        assert dep.returncode == 0, dep.stderr
        plain = run_netlet("atm", "--bank", srv.address, "--key-file", key_file,
                           "--retry-for", "0.3", "--account", "alice", "--pin-stdin",
                           "deposit", "5", stdin="4321\n")
        assert plain.returncode == 4, plain.stderr  # no TLS: the bank closes the connection
        assert "nothing was sent" in plain.stderr
        listed = run_netlet("bank", "list", *common)
        assert "5.00" in listed.stdout


def test_cli_bank_away_is_a_clear_error_and_nothing_is_done(tmp_path: Path) -> None:
    with BankProcess(tmp_path / "bank.db") as srv:
        run_netlet("bank", "open", "alice", "--bank", srv.address, "--pin-stdin",
                   stdin="4321\n")
        address = srv.address
    r = run_netlet("atm", "--bank", address, "--retry-for", "0.3", "--account", "alice",
                   "--pin-stdin", "deposit", "5", stdin="4321\n")
    assert r.returncode == 4  # not sent: nothing was done
    assert "did not answer" in r.stderr
    assert "nothing was sent" in r.stderr


# -- the public surface ------------------------------------------------------------------------


def test_service_and_atm_names_are_exported() -> None:
    import netlet.apps.bank as bank
    from netlet.apps.bank import _atm, _cli, _cli_atm, _service, _swarm, _terminal

    for module in (_service, _atm, _swarm, _cli, _cli_atm, _terminal):
        assert module.__doc__
        for name in module.__all__:
            assert getattr(module, name) is not None
    for name in ("BankService", "BankClient", "CardSession", "OutcomeUnknown", "Swarm",
                 "SessionExpired", "KeySettled", "NotPermitted", "register_errors"):
        assert name in bank.__all__
    assert not issubclass(SessionExpired, bank.BankError)  # the ledger's tree stays its own
    assert issubclass(OutcomeUnknown, netlet.NetletConnectionError)
