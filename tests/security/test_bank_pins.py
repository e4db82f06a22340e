"""Attacks on a bank's sign-in: PIN guessing bursts, session eviction, account probing.

Each test starts a real ``netlet bank serve`` in a child process and attacks it
over a real socket from this process's own netlet node. The bank's ``info()``
counts the PIN hashes it checked (``pin_checks``), which is what the lockout
must bound: three wrong PINs per lock window, however many arrive at once.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import netlet
from netlet.apps.bank import CardLocked, Session, WrongPin, register_errors
from netlet.apps.bank._atm import BankClient
from netlet.apps.bank._service import SERVICE_NAME, NotPermitted
from netlet.transport import find_user_key
from tests.apps.bank.bank_server import BankProcess, free_port

PIN = "4321"
CHEAP = 16  # scrypt n: checked on the bank's loop
COSTLY = 2**12  # 4 MiB: checked on a worker thread, as the default cost is


NodeFor = Callable[[str | None], netlet.Node]


@pytest.fixture
def node_for(node_factory: Callable[..., netlet.Node]) -> NodeFor:
    """A client node holding the per-user key of the bank at an address (None: no key).

    The attacker in these tests is a customer, not a stranger: it gets in.
    """
    register_errors()

    def make(address: str | None) -> netlet.Node:
        key = find_user_key(address) if address else None
        return node_factory(key=key, call_timeout=60, max_inflight=4096)
    return make


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankProcess]:
    with BankProcess(tmp_path / "bank.db", "--lock-seconds", "120") as proc:
        yield proc


def _burst(node: netlet.Node, address: str, calls: list[tuple[str, str]]) -> list[Any]:
    """Send every ``(account, pin)`` sign-in at once; each answer or the exception it raised."""
    proxy = node.proxy(address, SERVICE_NAME, timeout=60)

    async def run() -> list[Any]:
        return await asyncio.gather(*(proxy.login.aio(a, p) for a, p in calls),
                                    return_exceptions=True)

    assert node.loop is not None
    return asyncio.run_coroutine_threadsafe(run(), node.loop).result(90)


def _pin_checks(client: BankClient) -> int:
    return client.info().pin_checks


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cost", [CHEAP, COSTLY], ids=["cheap-hash", "costly-hash"])
def test_a_burst_of_wrong_pins_gets_three_checked_and_the_right_pin_refused(
        bank: BankProcess, node_for: NodeFor, cost: int) -> None:
    client_node = node_for(bank.address)
    with BankClient(bank.address, node=client_node, retry_for=5) as client:
        client.open_account("victim", "Victim", PIN, pin_cost=cost)
        before = _pin_checks(client)
        # Three wrong guesses lead; then 600 more, one in four the right PIN, all at once.
        calls = [("victim", f"{i:04d}") for i in range(3)]
        calls += [("victim", PIN if i % 4 == 0 else f"{9000 + i:04d}") for i in range(600)]
        answers = _burst(client_node, bank.address, calls)
        signed_in = [a for a in answers if isinstance(a, dict)]
        others = [a for a in answers if not isinstance(a, dict | WrongPin | CardLocked)]
        assert not others, others[:3]
        assert not signed_in, f"{len(signed_in)} sign-ins succeeded on a card being locked"
        checked = _pin_checks(client) - before
        assert checked <= 3, f"{checked} PINs were checked in one lock window"
        # The card is locked now: the right PIN is refused, and checks nothing more.
        again = _burst(client_node, bank.address, [("victim", PIN)] * 50
                       + [("victim", "0000")] * 150)
        assert all(isinstance(a, CardLocked) for a in again), {type(a) for a in again}
        assert _pin_checks(client) - before == checked


@pytest.mark.timeout(120)
def test_signing_in_many_times_does_not_evict_other_customers(tmp_path: Path,
                                                               node_for: NodeFor) -> None:
    with BankProcess(tmp_path / "bank.db", "--max-sessions", "40") as proc, \
            BankClient(proc.address, node=(client_node := node_for(proc.address)),
                       retry_for=5) as client:
        client.open_account("victim", "Victim", PIN, pin_cost=CHEAP)
        client.open_account("mallory", "Mallory", PIN, pin_cost=CHEAP)
        victim = client.bank.login("victim", PIN).token
        answers = _burst(client_node, proc.address, [("mallory", PIN)] * 200)
        assert all(isinstance(a, Session) for a in answers)
        assert client.bank.balance(victim) == 0  # still signed in
        # Mallory keeps only her newest sessions, never more than the bank holds.
        live = 0
        for answer in answers:
            try:
                client.bank.balance(answer.token)
                live += 1
            except netlet.NetletError:
                pass
        assert 1 <= live < 40


@pytest.mark.timeout(120)
def test_unknown_account_answers_like_a_wrong_pin_in_about_the_same_time(
        tmp_path: Path, node_for: NodeFor) -> None:
    # --lock-seconds 0: a lock ends at once, so one account takes any number of guesses.
    with BankProcess(tmp_path / "bank.db", "--lock-seconds", "0") as proc, \
            BankClient(proc.address, node=node_for(proc.address), retry_for=5) as client:
        client.open_account("alice", "Alice", PIN)  # the default (realistic) PIN cost

        def attempt(account: str, i: int) -> tuple[tuple[str, Any], float]:
            start = time.monotonic()
            try:
                client.bank.login(account, f"{1000 + i}")
                seen: tuple[str, Any] = ("ok", None)
            except (WrongPin, CardLocked) as exc:
                seen = (type(exc).__name__, str(exc).replace(account, "X"))
            return seen, time.monotonic() - start

        attempt("alice", 0)  # warm up the connection and the bank's worker threads
        attempt("nobody", 0)
        # Interleaved, so that a busy machine slows both alike; medians, not sums.
        real, ghost, real_times, ghost_times = [], [], [], []
        for i in range(1, 30):
            seen, took = attempt("alice", i)
            real.append(seen)
            real_times.append(took)
            seen, took = attempt("nobody", i)
            ghost.append(seen)
            ghost_times.append(took)
        assert [kind for kind, _ in ghost] == [kind for kind, _ in real]
        assert [text for _, text in ghost if _ == "WrongPin"] == [
            text for _, text in real if _ == "WrongPin"]
        real_time, ghost_time = statistics.median(real_times), statistics.median(ghost_times)
        assert 0.5 < ghost_time / real_time < 2, (ghost_time, real_time)


@pytest.mark.timeout(60)
def test_operator_gate_looks_at_the_bound_address_not_the_advertised_one(
        tmp_path: Path, node_for: NodeFor) -> None:
    port = free_port()
    proc = BankProcess(tmp_path / "bank.db", "--insecure", "--advertise", "127.0.0.1",
                       port=port)
    proc.address = f"tcp://0.0.0.0:{port}"  # listen on every interface
    with proc:
        assert proc.stderr is not None
        proc.stderr.wait_for(r"operator calls refused")
        with BankClient(f"tcp://127.0.0.1:{port}", node=node_for(None), retry_for=5) as client, \
                pytest.raises(NotPermitted):
            client.accounts()


@pytest.mark.timeout(60)
def test_asking_about_another_customers_key_is_refused_and_changes_nothing(
        bank: BankProcess, node_for: NodeFor) -> None:
    with BankClient(bank.address, node=node_for(bank.address), retry_for=5) as client:
        client.open_account("victim", "Victim", PIN, pin_cost=CHEAP)
        client.open_account("mallory", "Mallory", PIN, pin_cost=CHEAP)
        victim, mallory = client.card("victim", PIN), client.card("mallory", PIN)
        first = victim.deposit(700, key="victim-key")
        with pytest.raises(NotPermitted):
            mallory.outcome("victim-key")
        assert victim.deposit(700, key="victim-key") == first  # still its first answer
        assert victim.balance() == 700
