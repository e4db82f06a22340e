"""Commands that share one group commit see what they would have seen one by one.

The writer applies a run of commands in memory and writes their rows at the
end (``_batch``); these tests queue whole sequences behind a job that holds
the writer, so that they commit as one batch, and check every answer against
the dict model of ``test_ledger_model`` and the books after.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlet.apps.bank import (
    BankError,
    CloseAccount,
    Command,
    Deposit,
    KeySettled,
    Ledger,
    OpenAccount,
    Reversal,
    Transfer,
    Withdraw,
)
from tests._support import wait_until
from tests.apps.bank.test_ledger_model import NAMES, PIN_HASH, Model, amounts

Call = Callable[[Ledger], Any]


def in_one_batch(ledger: Ledger, calls: list[Call]) -> list[Any]:
    """Run ``calls`` (each submits one job) queued in this order behind a job that holds the
    writer, so that they commit together; their results (or the BankError each raised)."""
    gate, held = threading.Event(), threading.Event()

    def hold(conn: Any, now: float) -> tuple[Any, None]:
        held.set()
        gate.wait(30)
        return None, None

    holder = threading.Thread(target=ledger._submit, args=(hold,))
    holder.start()
    held.wait(30)
    results: list[Any] = [None] * len(calls)

    def call(i: int) -> None:
        try:
            results[i] = calls[i](ledger)
        except BankError as exc:
            results[i] = exc

    threads = []
    for i in range(len(calls)):
        threads.append(threading.Thread(target=call, args=(i,)))
        threads[-1].start()
        wait_until(lambda i=i: ledger._queue.qsize() == i + 1, what="the call to queue")
    before = ledger.statistics().max_batch_size
    gate.set()
    for thread in [holder, *threads]:
        thread.join(30)
    assert len(calls) <= 1 or ledger.statistics().max_batch_size >= max(before, len(calls))
    return results


def execute(command: Command, key: str) -> Call:
    return lambda ledger: ledger.execute(command, key)


@pytest.fixture
def ledger(new_db: Callable[[], str]) -> Iterator[Ledger]:
    with Ledger(new_db(), max_wait=0) as opened:
        yield opened


def outcome(result: Any) -> tuple[str, Any]:
    return ("error", type(result)) if isinstance(result, BankError) else ("ok", result)


def commands() -> st.SearchStrategy[list[tuple[Command | str, str]]]:
    """(command, key) lists; a str command is a reversal of that list position's key."""
    name = st.sampled_from(NAMES)
    one = st.one_of(
        st.builds(lambda a: OpenAccount(a, a.title(), PIN_HASH), name),
        st.builds(CloseAccount, name),
        st.builds(Deposit, name, amounts),
        st.builds(Withdraw, name, amounts),
        st.builds(lambda p, n: Transfer(p[0], p[1], n), st.permutations(NAMES), amounts),
        st.integers(0, 30).map(lambda i: f"#{i}"),  # a reversal of an earlier key
    )
    return st.lists(st.tuples(one, st.integers(0, 40).map(lambda k: f"k{k}")),
                    min_size=2, max_size=30)


@pytest.mark.timeout(240)
def test_a_batch_answers_as_commands_one_by_one(new_db: Callable[[], str]) -> None:
    """Keys repeated in a batch, reversals of its own commands, accounts opened, funded,
    emptied and closed in it: each answer and the books are the model's. About 3 s."""

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(first=commands(), second=commands())
    def check(first: list[tuple[Command | str, str]],
              second: list[tuple[Command | str, str]]) -> None:
        model = Model()
        with Ledger(new_db(), max_wait=0) as ledger:
            for batch in (first, second):  # the second meets the first's rows in the tables
                calls, expected = [], []
                keys = [key for _, key in batch]
                for command, key in batch:
                    if isinstance(command, str):
                        command = Reversal(keys[int(command[1:]) % len(keys)])
                    calls.append(execute(command, key))
                    expected.append(model.execute(command, key))
                got = [outcome(r) for r in in_one_batch(ledger, calls)]
                assert got == expected
                listed = {a.account: a.balance for a in ledger.accounts()}
                assert listed == model.balances
                closed = {a.account for a in ledger.accounts() if a.status == "closed"}
                assert closed == model.closed
                report = ledger.audit()
                assert report.ok, report.violations
                assert report.n_commands == len(model.done)
                for account in model.balances:  # entries in journal order, newest first
                    seqs = [ledger.outcome(e.key).seq  # type: ignore[union-attr]
                            for e in ledger.statement(account, limit=100)]
                    assert seqs == sorted(seqs, reverse=True)
            assert ledger.statistics().careful_batches == 0  # all in memory, no fallback

    check()


def test_a_fence_inside_a_batch(ledger: Ledger) -> None:
    """A settle between two runs of commands: the key it fences is refused after it, one
    applied before it is reported applied, and the run after reads the fence's row."""
    results = in_one_batch(ledger, [
        execute(OpenAccount("ann", "Ann", PIN_HASH), "o"),
        execute(Deposit("ann", 50), "d1"),
        lambda ledger: ledger.settle(["d1", "d2"]),
        execute(Deposit("ann", 70), "d2"),
        execute(Deposit("ann", 5), "d3"),
    ])
    settled = results[2]
    assert settled[0].ok
    assert settled[0].result["balance"] == 50
    assert isinstance(settled[1].error, KeySettled)
    assert isinstance(results[3], KeySettled)
    assert results[4]["balance"] == 55
    assert ledger.balance("ann") == 55
    assert ledger.audit().ok
    assert ledger.statistics().careful_batches == 0  # done in memory, not by the fallback


def test_a_write_refused_by_the_database_fails_only_its_command(ledger: Ledger) -> None:
    """A batch whose bulk write fails runs again job by job: the command the database
    refuses gets StorageError (outcome unknown), its batch-mates are applied."""
    from netlet.apps.bank import StorageError
    from tests.apps.bank.conftest import raw_sql

    ledger.execute(OpenAccount("ann", "Ann", PIN_HASH), "o-ann")
    ledger.execute(OpenAccount("bob", "Bob", PIN_HASH), "o-bob")
    if ledger.location.startswith("postgresql"):
        raw_sql(ledger.path,
                "CREATE FUNCTION no_bob() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.account = 'bob' THEN RAISE EXCEPTION 'no bob'; END IF; RETURN NEW; "
                "END $$",
                "CREATE TRIGGER no_bob BEFORE INSERT ON entries FOR EACH ROW "
                "EXECUTE FUNCTION no_bob()")
    else:
        raw_sql(ledger.path, "CREATE TRIGGER no_bob BEFORE INSERT ON entries "
                "WHEN NEW.account = 'bob' BEGIN SELECT RAISE(ABORT, 'no bob'); END")
    results = in_one_batch(ledger, [execute(Deposit("ann", 5), "a1"),
                                    execute(Deposit("bob", 5), "b1"),
                                    execute(Deposit("ann", 7), "a2")])
    assert results[0]["balance"] == 5
    assert results[2]["balance"] == 12
    assert isinstance(results[1], StorageError)
    assert "no bob" in str(results[1])
    assert ledger.outcome("b1") is None
    assert ledger.balance("bob") == 0
    assert ledger.audit().ok
    assert ledger.statistics().careful_batches == 1


def test_commands_after_a_fence_follow_it_in_the_journal(ledger: Ledger) -> None:
    """A batch of a fence alone, then one that begins with a fence: the commands after them
    take the next seqs (the writer once kept the head from before the fence, and every
    later command failed on the journal's UNIQUE seq)."""
    ledger.execute(OpenAccount("ann", "Ann", PIN_HASH), "o")
    assert ledger.settle(["x1"])[0].error is not None
    assert ledger.execute(Deposit("ann", 5), "d1")["balance"] == 5
    results = in_one_batch(ledger, [lambda ledger: ledger.settle(["x2"]),
                                    execute(Deposit("ann", 6), "d2")])
    assert results[1]["balance"] == 11
    assert ledger.execute(Deposit("ann", 7), "d3")["balance"] == 18
    assert [o.key for o in ledger.journal()] == ["o", "x1", "d1", "x2", "d2", "d3"]
    assert ledger.audit().ok
    assert ledger.statistics().careful_batches == 0


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_batch_costs_the_same_round_trips_however_many_commands(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL a batch waits for the server a fixed number of times (the reads sent
    with BEGIN, the writes with COMMIT): 3 commands and 30 cost the same. It was one wait
    per command or more."""
    from psycopg._pipeline_base import BasePipeline

    waits = [0]
    fetch, sync = BasePipeline._fetch_gen, BasePipeline._sync_gen

    def counted(real: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if threading.current_thread().name == "netlet-ledger" and kwargs.get("flush", 1):
                waits[0] += 1
            return real(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(BasePipeline, "_fetch_gen", counted(fetch))
    monkeypatch.setattr(BasePipeline, "_sync_gen", counted(sync))
    for name in ("ann", "bob"):
        ledger.execute(OpenAccount(name, name.title(), PIN_HASH), f"o-{name}")
    counts = []
    for n in (3, 30):
        waits[0] = 0
        in_one_batch(ledger, [execute(Transfer("ann", "bob", 1) if i % 2 else
                                      Deposit("ann", 5), f"{n}-{i}") for i in range(n)])
        counts.append(waits[0])
    assert counts[0] == counts[1] <= 6, counts
    assert ledger.audit().ok


def test_moves_that_cancel_out_in_a_batch(ledger: Ledger) -> None:
    """Two transfers that leave both balances as they were: the batch has entries but no
    balance to change, and still commits in memory (on PostgreSQL an empty balance
    update failed the batch, which then ran again job by job)."""
    for name in ("ann", "bob"):
        ledger.execute(OpenAccount(name, name.title(), PIN_HASH), f"o-{name}")
    ledger.execute(Deposit("ann", 10), "d")
    results = in_one_batch(ledger, [execute(Transfer("ann", "bob", 4), "t1"),
                                    execute(Transfer("bob", "ann", 4), "t2")])
    assert results[1] == {"src": "bob", "dst": "ann", "amount": 4, "src_balance": 0,
                          "dst_balance": 10}
    assert [ledger.balance("ann"), ledger.balance("bob")] == [10, 0]
    assert ledger.audit().ok
    assert ledger.statistics().careful_batches == 0
