"""The ledger from async code, one fsync per command against group commit, canonical text.

``Ledger.execute_aio`` is what the bank service uses: tasks on one event loop
queue their commands without blocking the loop, the writer commits them in
groups and wakes the loop once per commit. The same commands in the same order
must give the same answers and the same books whatever the commit mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlet.apps.bank import (
    BankError,
    Command,
    Deposit,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    Ledger,
    LedgerClosed,
    OpenAccount,
    Reversal,
    Transfer,
    Withdraw,
    hash_pin,
)
from netlet.apps.bank._ledgerfile import LedgerInUse
from netlet.apps.bank._records import canonical as _canonical
from tests.apps.bank.test_ledger_model import Model
from tests.conftest import arun

PIN_HASH = hash_pin("1234", n=16)
NAMES = ["ann", "ben", "cat", "dan", "eve"]


def _script(seed: int, n: int) -> list[tuple[Command, str]]:
    """``n`` random commands with their keys: openings, movements, reversals, repeats."""
    rng = random.Random(seed)
    script: list[tuple[Command, str]] = [(OpenAccount(a, a.title(), PIN_HASH), f"open-{a}")
                                         for a in NAMES[:-1]]
    for i in range(n):
        x, a, b = rng.random(), rng.choice(NAMES), rng.choice(NAMES)
        amount = rng.randint(1, 5_000)
        command: Command
        if x < 0.3:
            command = Deposit(a, amount)
        elif x < 0.5:
            command = Withdraw(a, amount)
        elif x < 0.7 and a != b:
            command = Transfer(a, b, amount)
        elif x < 0.8:
            command = Reversal(rng.choice(script)[1])
        elif x < 0.9:
            script.append(rng.choice(script))  # the same key again: a retry
            continue
        elif x < 0.95:
            command = OpenAccount(NAMES[-1], "Eve", PIN_HASH)
        else:
            command = Deposit(a, amount)
            script.append((command, rng.choice(script)[1]))  # a key reused: a conflict
            continue
        script.append((command, f"k{i}"))
    return script


async def _run_all(ledger: Ledger, script: list[tuple[Command, str]]) -> list[Any]:
    """Every command at once from one loop, in order: the writer takes them as queued."""

    async def one(command: Command, key: str) -> Any:
        try:
            return ("ok", await ledger.execute_aio(command, key))
        except BankError as exc:
            return ("error", type(exc))

    return await asyncio.gather(*(one(c, k) for c, k in script))


def _model(script: list[tuple[Command, str]]) -> list[Any]:
    model = Model()
    return [model.execute(command, key) for command, key in script]


@pytest.mark.parametrize("group_commit", [True, False], ids=["group", "one-fsync"])
def test_async_answers_match_the_model(tmp_path: Path, group_commit: bool) -> None:
    script = _script(seed=7, n=400)
    with Ledger(tmp_path / "bank.db", group_commit=group_commit, max_wait=0.05) as led:
        answers = arun(_run_all(led, script))
        stats = led.statistics()
        assert led.audit().ok
    assert answers == _model(script)
    assert stats.commands == len(script)
    if group_commit:
        assert stats.commits < len(script) / 4  # queued at once: committed in few groups
    else:
        assert stats.commits == len(script)


def test_both_modes_give_the_same_books_and_journal(tmp_path: Path) -> None:
    script = _script(seed=11, n=300)
    journals, books = [], []
    for mode in (True, False):
        with Ledger(tmp_path / f"{mode}.db", group_commit=mode) as led:
            arun(_run_all(led, script))
            journals.append([(o.seq, o.key, o.command, o.result, repr(o.error))
                             for o in led.journal(limit=10_000)])
            books.append((led.accounts(), [led.statement(a, 1000) for a in NAMES[:-1]]))
    assert journals[0] == journals[1]
    assert [(a.account, a.balance) for a in books[0][0]] == \
        [(a.account, a.balance) for a in books[1][0]]


def test_sync_and_async_callers_share_the_writer(tmp_path: Path) -> None:
    with Ledger(tmp_path / "bank.db") as led:
        led.execute(OpenAccount("ann", "Ann", PIN_HASH), "open")

        async def main() -> None:
            sync = asyncio.gather(*(asyncio.to_thread(led.execute, Deposit("ann", 1), f"s{i}")
                                    for i in range(20)))
            tasks = asyncio.gather(*(led.execute_aio(Deposit("ann", 2), f"a{i}")
                                     for i in range(20)))
            await asyncio.gather(sync, tasks)

        arun(main())
        assert led.balance("ann") == 60
        assert led.audit().ok


def test_async_refusals_and_bad_input(tmp_path: Path) -> None:
    with Ledger(tmp_path / "bank.db") as led:

        async def main() -> None:
            await led.execute_aio(OpenAccount("ann", "Ann", PIN_HASH), "open")
            with pytest.raises(InsufficientFunds):
                await led.execute_aio(Withdraw("ann", 5), "w")
            with pytest.raises(InsufficientFunds):  # the same refusal for the same key
                await led.execute_aio(Withdraw("ann", 5), "w")
            with pytest.raises(IdempotencyConflict):
                await led.execute_aio(Deposit("ann", 5), "w")
            with pytest.raises(InvalidAmount):  # malformed: refused before it is queued
                await led.execute_aio(Deposit("ann", 0), "d")
            assert led.outcome("d") is None

        arun(main())


def test_a_cancelled_caller_does_not_undo_its_command(tmp_path: Path) -> None:
    with Ledger(tmp_path / "bank.db", max_wait=0.2) as led:
        led.execute(OpenAccount("ann", "Ann", PIN_HASH), "open")

        async def main() -> None:
            task = asyncio.ensure_future(led.execute_aio(Deposit("ann", 7), "d"))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the writer finishes it all the same, and the next caller is served
            assert (await led.execute_aio(Deposit("ann", 7), "d"))["balance"] == 7

        arun(main())
        assert led.balance("ann") == 7


def test_closed_ledger_refuses_async_callers(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "bank.db")
    led.close()
    with pytest.raises(LedgerClosed):
        arun(led.execute_aio(Deposit("ann", 1), "k"))


flat_values = st.one_of(st.integers(-(10**20), 10**20), st.text(max_size=20), st.booleans(),
                        st.none(), st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), flat_values, max_size=6))
def test_canonical_text_is_json_dumps(record: dict[str, Any]) -> None:
    assert _canonical(record) == json.dumps(record, sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False)


# -- other connections to the same file ------------------------------------------------


def test_changes_by_another_connection_are_seen(tmp_path: Path) -> None:
    """Every decision reads the file as committed, whoever committed it."""
    path = tmp_path / "bank.db"
    with Ledger(path) as led:
        led.execute(OpenAccount("ann", "Ann", PIN_HASH), "open")
        led.execute(Deposit("ann", 100), "d1")
        raw = sqlite3.connect(path)
        with raw:
            raw.execute("UPDATE accounts SET balance = 5 WHERE account = 'ann'")
        raw.close()
        with pytest.raises(InsufficientFunds):
            led.execute(Withdraw("ann", 50), "w1")  # decided on 5, not on the 100 it knew
        assert led.execute(Deposit("ann", 1), "d2")["balance"] == 6


def test_a_second_ledger_on_one_file_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    with Ledger(path) as one:
        one.execute(OpenAccount("ann", "Ann", PIN_HASH), "open")
        with pytest.raises(LedgerInUse, match=rf"in use by process {os.getpid()}"):
            Ledger(path)
        one.execute(Deposit("ann", 10), "d")  # the first one goes on, untouched
    with Ledger(path) as again:  # once it is closed, the file is free
        assert again.balance("ann") == 10


def test_a_schema_1_ledger_gets_its_chain_on_first_open(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    with Ledger(path) as led:
        led.execute(OpenAccount("ann", "Ann", PIN_HASH), "open")
        for i in range(5):
            led.execute(Deposit("ann", 10), f"d{i}")
    with sqlite3.connect(path) as conn:  # as the first version of the ledger left it
        conn.execute("ALTER TABLE commands DROP COLUMN chain")
        conn.execute("PRAGMA user_version=1")
    Path(f"{path}-head").unlink()
    with Ledger(path) as led:
        assert led.audit().ok
        assert led.execute(Deposit("ann", 10), "d5")["balance"] == 60
    with Ledger(path) as led:
        assert led.audit().ok
