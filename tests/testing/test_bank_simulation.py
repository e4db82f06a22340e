"""``netlet.testing.simulate_bank``: bank seeds that must pass, runs that must repeat, and
each of the bank's checks made to fire on a doctored record.

``make test`` runs 100 bank seeds (about 5 s of CPU); ``make soak`` runs 10,000.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from netlet.apps.bank import (
    AuditReport,
    BankService,
    Closed,
    InsufficientFunds,
    RequestOutcome,
)
from netlet.testing import BankSimConfig, simulate_bank
from netlet.testing._bankcheck import check_books
from netlet.testing._bankparts import BankFace, Op, unordered_methods
from tests.testing._seeds import failures

SEEDS = 100
CHUNK = 25



def _failures(seeds: list[int], config: Any = None) -> list[str]:
    return failures(simulate_bank, seeds, config)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_bank_seeds_find_no_violation(first: int) -> None:
    failures = _failures(list(range(first, first + CHUNK)))
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(60)
def test_the_same_bank_seed_gives_the_same_run_event_for_event() -> None:
    a, b = simulate_bank(21), simulate_bank(21)
    assert a.trace == b.trace
    assert len(a.trace) > 50
    assert simulate_bank(22).digest != a.digest


@pytest.mark.timeout(60)
def test_a_bank_seed_replays_in_another_process_with_another_hash_seed() -> None:
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-m", "netlet.testing", "--bank", "--seed", "10"],
                              env=env, capture_output=True, text=True, timeout=50, check=True)
        [digest] = re.findall(r"trace ([0-9a-f]{16})", done.stdout)
        digests.add(digest)
    assert digests == {simulate_bank(10).digest}


@pytest.mark.timeout(60)
def test_faults_leave_requests_unknown_and_the_check_settles_them() -> None:
    """Seed 21 kills the bank right after commits: requests applied but never answered,
    which the check finds applied when it asks the bank. Seed 8: a request the client
    says never left the ATM (checked not applied)."""
    report = simulate_bank(21)
    assert report.ok, report.violations
    assert report.unknown_applied >= 1
    assert report.bank_starts >= 2
    assert any("bank killed right after a commit" in line for line in report.trace)
    report = simulate_bank(8)
    assert report.ok, report.violations
    assert report.unsent >= 1


@pytest.mark.timeout(60)
def test_a_bank_baseline_with_no_faults_answers_every_request() -> None:
    report = simulate_bank(3, BankSimConfig(faults=False))
    assert report.ok, report.violations
    assert report.ops > 20
    assert report.acknowledged + report.refused == report.ops
    assert report.bank_starts == 1
    assert "--no-faults" in report.replay


@pytest.mark.timeout(60)
def test_a_request_still_in_flight_at_the_deadline_is_a_violation() -> None:
    report = simulate_bank(1, BankSimConfig(settle=0.0, chaos=3.0, atms=6))
    assert any("still in flight" in v for v in report.violations), report.violations
    assert report.replay.startswith("python -m netlet.testing --bank --seed 1 ")
    assert "--settle 0.0" in report.replay
    assert "--atms 6" in report.replay


def test_every_async_method_of_the_ledger_runs_on_the_loop_in_a_simulation() -> None:
    """A Ledger method SimLedger does not replace would hand work to a thread, and a run
    would no longer repeat: this fails when one is added (or renamed)."""
    assert unordered_methods() == []


def test_the_face_serves_every_method_of_the_bank_service() -> None:
    def public(cls: type) -> set[str]:
        return {name for name, member in inspect.getmembers(cls, inspect.isfunction)
                if not name.startswith("_")}

    assert public(BankFace) == public(BankService)
    assert all(inspect.iscoroutinefunction(getattr(BankFace, name))
               for name in public(BankFace))


# -- the checker on doctored records --------------------------------------------------


def _books() -> tuple[list[Op], dict[str, RequestOutcome | None], dict[str, int],
                      dict[str, Any]]:
    """A consistent record: 100 in, 30 moved, 10 out, one request refused, one unknown.
    (The audit is a dict a doctor may change; ``_problems`` makes it an AuditReport.)"""
    ops = [Op("k1", "Deposit", "a", "", 100, "ok"),
           Op("k2", "Transfer", "a", "b", 30, "ok"),
           Op("k3", "Withdraw", "b", "", 10, "ok"),
           Op("k4", "Withdraw", "b", "", 999, "refused", "InsufficientFunds"),
           Op("k5", "Deposit", "b", "", 5, "unknown")]
    outcomes: dict[str, RequestOutcome | None] = {
        op.key: RequestOutcome(op.key, seq, op.command(),
                               Closed("a") if op.status == "ok" else None,
                               None if op.status == "ok" else InsufficientFunds("b", 20, 999),
                               1.0)
        for seq, op in enumerate(ops[:4])}
    outcomes["k5"] = None  # never reached the bank: fenced when asked
    return ops, outcomes, {"a": 70, "b": 20}, {"ok": True, "commands": 5, "violations": []}


def test_the_checker_passes_consistent_books() -> None:
    ops, outcomes, balances, audit = _books()
    problems, books = check_books(ops, outcomes, balances, _audit(audit), other_commands=0)
    assert problems == []
    assert (books.applied, books.unknown_applied, books.unknown_not_applied) == (3, 0, 1)


def _problems(doctor: Any) -> list[str]:
    ops, outcomes, balances, audit = _books()
    doctor(ops, outcomes, balances, audit)
    return check_books(ops, outcomes, balances, _audit(audit), other_commands=0)[0]


def _audit(audit: dict[str, Any]) -> AuditReport:
    return AuditReport(audit["ok"], 0, audit["commands"], 0, tuple(audit["violations"]))


def test_the_checker_finds_an_acknowledged_request_not_applied() -> None:
    def doctor(ops: list[Op], outcomes: dict[str, Any], balances: dict[str, int],
               audit: dict[str, Any]) -> None:
        ops[4].status = "ok"

    assert any("acknowledged Deposit is not applied" in p for p in _problems(doctor))


def test_the_checker_finds_a_refused_or_unsent_request_applied() -> None:
    def refused(ops: list[Op], outcomes: dict[str, Any], balances: dict[str, int],
                audit: dict[str, Any]) -> None:
        ops[0].status = "refused"

    def unsent(ops: list[Op], outcomes: dict[str, Any], balances: dict[str, int],
               audit: dict[str, Any]) -> None:
        ops[0].status = "unsent"

    assert any("refused Deposit" in p and "was applied" in p for p in _problems(refused))
    assert any("nothing was sent" in p for p in _problems(unsent))


def test_the_checker_finds_another_command_under_a_key() -> None:
    def doctor(ops: list[Op], outcomes: dict[str, Any], balances: dict[str, int],
               audit: dict[str, Any]) -> None:
        k2 = outcomes["k2"]
        outcomes["k2"] = dataclasses.replace(k2, command={**k2.command, "amount": 31})

    assert any("k2: the bank journaled" in p for p in _problems(doctor))


def test_the_checker_finds_money_made_or_lost() -> None:
    def made(ops: list[Op], outcomes: dict[str, Any], balances: dict[str, int],
             audit: dict[str, Any]) -> None:
        balances["b"] += 1

    problems = _problems(made)
    assert any("b: the bank holds 21" in p for p in problems)
    assert any("money does not add up" in p for p in problems)


def test_the_checker_finds_a_key_applied_twice_or_a_stray_command() -> None:
    def doctor(ops: list[Op], outcomes: dict[str, Any], balances: dict[str, int],
               audit: dict[str, Any]) -> None:
        audit["commands"] = 6

    assert any("6 commands for 5 keys" in p for p in _problems(doctor))


def test_the_checker_reports_the_audits_violations() -> None:
    def doctor(ops: list[Op], outcomes: dict[str, Any], balances: dict[str, int],
               audit: dict[str, Any]) -> None:
        audit.update(ok=False, violations=["a: cached balance 1 != journal 0"])

    assert "audit: a: cached balance 1 != journal 0" in _problems(doctor)


def test_the_checker_holds_the_bank_to_what_it_told_an_atm() -> None:
    def not_applied(ops: list[Op], outcomes: dict[str, Any], balances: dict[str, int],
                    audit: dict[str, Any]) -> None:
        ops[0].status, ops[0].told = "unknown", "not-applied"

    def applied(ops: list[Op], outcomes: dict[str, Any], balances: dict[str, int],
                audit: dict[str, Any]) -> None:
        ops[4].told = "applied"

    assert any("told its ATM the Deposit was not-applied, but in the end it is applied" in p
               for p in _problems(not_applied))
    assert any("was applied, but in the end it is not applied" in p for p in _problems(applied))


@pytest.mark.timeout(60)
def test_a_long_run_replays_in_the_same_process() -> None:
    """Seed 91 of a long run (700 requests) found that the check's ``outcomes`` answer,
    over 64 KiB, was decoded on the node's decode thread: the loop jumped past it, and
    a second run in the same process differed. Answers are now kept small, and the loop
    reports any wake-up from a thread."""
    config = BankSimConfig(atms=6, chaos=60.0, retry_for=4.0)
    a, b = simulate_bank(91, config), simulate_bank(91, config)
    assert a.ok, a.violations
    assert a.ops > 500
    assert a.trace == b.trace


@pytest.mark.timeout(60)
def test_the_command_line_runs_bank_seeds_and_replays_a_failing_one() -> None:
    done = subprocess.run([sys.executable, "-m", "netlet.testing", "--bank", "--seed", "1",
                           "--settle", "0", "--chaos", "3", "--atms", "6"],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "still in flight" in done.stdout
    assert ("replay: python -m netlet.testing --bank --seed 1 --atms 6 --chaos 3.0 "
            "--settle 0.0 --trace") in done.stdout


@pytest.mark.timeout(60)
def test_the_bank_seed_that_found_an_unretrieved_dial_error_passes() -> None:
    """Seed 1118 of the 10,000-seed soak: an ATM's dial to the bank was still going
    when its caller was cancelled (the ATM was killed); the dial then failed and its
    error was left for asyncio to report as never retrieved. Such errors now count
    as violations, and the node's link table looks at a finished dial's error."""
    failures = _failures([1118])
    assert not failures, "\n".join(failures)
