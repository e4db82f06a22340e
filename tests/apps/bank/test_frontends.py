"""Several front-ends on one PostgreSQL ledger: what one process decided, all of them hold.

Two :class:`Ledger` objects on one database stand for two ``bank serve``
processes (each has its own writer, pool and connections; nothing is shared but
the database): a key raced on both applies once with one answer, a fence set on
one holds on the other, the PIN lockout counts every attempt on either, and the
hash chain stays one chain. The last test runs three real ``bank serve``
processes and ATMs through the command line that retry each key on another
front-end, and SIGKILLs one front-end mid-run.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from netlet.apps.bank import (
    BankError,
    CardLocked,
    Deposit,
    KeySettled,
    Ledger,
    OpenAccount,
    Transfer,
    WrongPin,
    hash_pin,
)
from tests.apps.bank.bank_server import BankProcess, netlet
from tests.apps.bank.conftest import raw_sql
from tests.apps.bank.pgserver import PgServer

PIN_HASH = hash_pin("2468", n=16)


@pytest.fixture
def pair(pg_server: PgServer) -> Iterator[tuple[Ledger, Ledger]]:
    url = pg_server.new_db()
    with Ledger(url) as one, Ledger(url) as two:
        one.execute(OpenAccount("alice", "Alice", PIN_HASH), "open-alice")
        two.execute(OpenAccount("bob", "Bob", PIN_HASH), "open-bob")
        yield one, two


def _race(*targets: Any) -> None:
    start = threading.Barrier(len(targets))

    def run(target: Any) -> None:
        start.wait()
        target()

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "a front-end hung"


def test_a_key_raced_on_two_front_ends_applies_once(pair: tuple[Ledger, Ledger]) -> None:
    one, two = pair
    answers: dict[tuple[int, int], dict[str, Any]] = {}

    def send(led: Ledger, n: int) -> None:
        for k in range(40):
            answers[(n, k)] = led.execute(Deposit("alice", 100 + k), f"dep-{k}")

    _race(*(lambda n=n: send((one, two)[n % 2], n) for n in range(6)))
    for k in range(40):
        assert len({repr(answers[(n, k)]) for n in range(6)}) == 1  # the same answer everywhere
    assert one.balance("alice") == two.balance("alice") == sum(100 + k for k in range(40))
    rows = raw_sql(one.path, "SELECT count(*), count(DISTINCT key) FROM commands")
    assert rows == [(42, 42)]
    report = two.audit()
    assert report.ok, report.violations  # one hash chain through both writers' batches


def test_a_fence_on_one_front_end_holds_on_the_other(pair: tuple[Ledger, Ledger]) -> None:
    one, two = pair
    assert isinstance(one.settle(["k-never"])[0].error, KeySettled)
    with pytest.raises(KeySettled):
        two.execute(Deposit("alice", 5), "k-never")
    # Raced: every key is either applied (and the fence finds it) or fenced (and refused).
    settled: dict[str, Any] = {}
    executed: dict[str, Any] = {}

    def fence() -> None:
        for k in range(60):
            settled[f"r{k}"] = one.settle([f"r{k}"])[0]

    def deposit() -> None:
        for k in range(60):
            try:
                executed[f"r{k}"] = two.execute(Deposit("bob", 1), f"r{k}")
            except KeySettled as exc:
                executed[f"r{k}"] = exc

    _race(fence, deposit)
    applied = 0
    for key, outcome in settled.items():
        if outcome.ok:
            assert executed[key] == outcome.result
            applied += 1
        else:
            assert isinstance(executed[key], KeySettled), key
    assert two.balance("bob") == applied
    assert one.audit().ok


def test_the_pin_lockout_counts_attempts_on_every_front_end(
        pair: tuple[Ledger, Ledger]) -> None:
    one, two = pair
    with pytest.raises(WrongPin) as first:
        one.check_pin("alice", "1111", now=1_000)
    assert first.value.attempts_left == 2
    with pytest.raises(WrongPin) as second:
        two.check_pin("alice", "1111", now=1_001)
    assert second.value.attempts_left == 1
    with pytest.raises(CardLocked):
        one.check_pin("alice", "1111", now=1_002)
    with pytest.raises(CardLocked):
        two.check_pin("alice", "2468", now=1_003)  # even the right PIN, on the other one
    assert two.check_pin("alice", "2468", now=1_400) is True
    # A burst of wrong guesses at both at once: at most three PINs are ever checked.
    before = one.statistics().pin_checks + two.statistics().pin_checks
    results: list[BaseException] = []

    def guess(led: Ledger, pin: str) -> None:
        try:
            led.check_pin("bob", pin, now=2_000)
        except BankError as exc:
            results.append(exc)

    _race(*(lambda n=n: guess((one, two)[n % 2], f"{n:04d}") for n in range(16)))
    checked = one.statistics().pin_checks + two.statistics().pin_checks - before
    assert checked == 3, results
    assert sum(isinstance(r, WrongPin) for r in results) == 2
    assert sum(isinstance(r, CardLocked) for r in results) == 14
    for unknown in range(3):  # a ghost card locks across front-ends too
        led = (one, two)[unknown % 2]
        with pytest.raises(WrongPin if unknown < 2 else CardLocked):
            led.check_pin("nobody", "1234", now=3_000)


def test_transfers_from_two_front_ends_conserve_money(pair: tuple[Ledger, Ledger]) -> None:
    one, two = pair
    one.execute(Deposit("alice", 50_000), "seed-a")
    two.execute(Deposit("bob", 50_000), "seed-b")

    def work(led: Ledger, n: int) -> None:
        rng = random.Random(n)
        for i in range(30):
            src, dst = ("alice", "bob") if rng.random() < 0.5 else ("bob", "alice")
            try:
                led.execute(Transfer(src, dst, rng.randint(1, 9_000)), f"t{n}-{i}")
            except BankError:
                pass

    _race(*(lambda n=n: work((one, two)[n % 2], n) for n in range(8)))
    assert one.balance("alice") + one.balance("bob") == 100_000
    assert min(two.balance("alice"), two.balance("bob")) >= 0
    assert one.audit().ok
    assert two.audit().ok


# -- three bank serve processes, ATMs through the command line ---------------------------

PIN = "2468\n"


def _atm(front: BankProcess, account: str, *args: str) -> tuple[int, str, str]:
    r = netlet("atm", "--bank", front.address, "--account", account, "--pin-stdin",
               "--timeout", "2", "--retry-for", "2", *args, stdin=PIN, timeout=60)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.timeout(120)
def test_three_front_ends_a_key_retried_on_another_applies_once(pg_server: PgServer) -> None:
    url = pg_server.new_db()
    fronts = [BankProcess(url) for _ in range(3)]
    try:
        for front in fronts:
            front.start()
        for name in ("alice", "bob"):
            r = netlet("bank", "open", name, "--bank", fronts[0].address, "--pin-stdin",
                       stdin=PIN)
            assert r.returncode == 0, r.stderr
        ops: list[tuple[str, str, tuple[str, ...], bool]] = []  # key, account, args, applied
        lock, killed = threading.Lock(), threading.Event()

        def worker(n: int) -> None:
            rng = random.Random(n)
            for i in range(8):
                account = ("alice", "bob")[rng.randrange(2)]
                other = "bob" if account == "alice" else "alice"
                cents = rng.randint(1, 9_999)
                amount = f"{cents // 100}.{cents % 100:02d}"
                args = rng.choice([("deposit", amount), ("deposit", amount),
                                   ("transfer", other, amount), ("withdraw", amount)])
                key = f"fe-{n}-{i}"
                first = rng.randrange(3)
                answers = []
                for attempt in range(3):  # the same key on another front-end each time
                    front = fronts[(first + attempt) % 3]
                    if not front.alive():
                        continue
                    code, out, err = _atm(front, account, *args, "--key", key)
                    assert code in (0, 1, 3, 4), (code, out, err)
                    answers.append((code, out.strip()))
                    if n == 0 and i == 3 and not killed.is_set():
                        killed.set()
                        fronts[1].kill()  # SIGKILL one front-end in the middle of the run
                decided = [a for a in answers if a[0] in (0, 1)]
                assert len(set(decided)) <= 1, (key, answers)  # one answer everywhere
                with lock:
                    ops.append((key, account, args, bool(decided) and decided[0][0] == 0))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(100)
            assert not t.is_alive()
        assert killed.is_set()
        assert not fronts[1].alive()
        journal = {str(key): (ok, kind) for key, ok, kind in
                   raw_sql(url, "SELECT key, ok, kind FROM commands")}
        flow = 0
        for key, _account, args, applied in ops:
            ok, kind = journal.get(key, (0, "-"))
            assert not applied or (ok == 1 and kind != "Fence"), key
            if ok == 1 and args[0] != "transfer":
                cents = int(args[-1].replace(".", ""))
                flow += cents if args[0] == "deposit" else -cents
        ((n_keys, n_distinct),) = raw_sql(url, "SELECT count(key), count(DISTINCT key) "
                                               "FROM commands")
        assert n_keys == n_distinct  # each key journaled once
        balances = dict(raw_sql(url, "SELECT account, balance FROM accounts "
                                     "WHERE status != 'system'"))
        assert sum(balances.values()) == flow  # money neither made nor lost
        assert min(balances.values()) >= 0
        audit = netlet("bank", "audit", "--db", url)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert re.search(r"audit OK", audit.stdout)
        assert pg_server.password not in audit.stdout + audit.stderr
    finally:
        for front in fronts:
            front.kill()


def test_the_pin_gate_keeps_a_connection_for_every_pin_thread(pg_server: PgServer) -> None:
    """As many sign-ins at once as the ledger has PIN threads reuse their connections the
    next time (the gate kept 8, and every sign-in beyond 8 at once paid a new connection
    with its SCRAM handshake, then closed it)."""
    from netlet.apps.bank._pinguard import PIN_THREADS

    with Ledger(pg_server.new_db()) as ledger:
        gate: Any = ledger._store.pins
        opened = [0]
        connect = gate._connect

        def counting() -> Any:
            opened[0] += 1
            return connect()

        gate._connect = counting
        for _ in range(2):
            with contextlib.ExitStack() as held:
                for _ in range(PIN_THREADS):
                    held.enter_context(gate._conn())
        assert opened[0] == PIN_THREADS
