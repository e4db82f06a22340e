"""Crash test: SIGKILL the bank again and again while an ATM swarm runs against it.

The swarm (``netlet atm swarm``) and the bank (``netlet bank serve``) are real
processes. The test kills the bank each time the swarm reports more answers
from the bank it restarted, and a last time just before the swarm's run ends
and leaves it dead until the swarm has given up: the requests in flight then
have no known outcome, and the swarm must settle them by asking the restarted
bank for their keys. Afterwards the test reads the ledger file itself: every
request the swarm saw acknowledged is journaled exactly once with its two
entries, none that was refused moved money, every settled one agrees with the
journal, no balance is negative, and ``netlet bank audit`` passes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.apps.bank.bank_server import ENV, NETLET, BankProcess, netlet
from tests.apps.bank.conftest import raw_sql
from tests.conftest import LineReader

SECONDS = 12
PROGRESS = r"progress t=(?P<t>[\d.]+)s answered=(?P<answered>\d+)"


def wait_progress(lines: LineReader, since: int, *, answered: int = 0,
                  elapsed: float = 0.0) -> tuple[int, int]:
    """Wait for a progress line with at least ``answered`` answers at ``elapsed`` seconds.

    Returns the index after that line and its answer count.
    """
    while True:
        index, match = lines.wait_for_index(PROGRESS, timeout=20, since=since)
        since = index + 1
        if int(match["answered"]) >= answered and float(match["t"]) >= elapsed:
            return since, int(match["answered"])


@pytest.mark.timeout(120)
def test_swarm_survives_repeated_sigkill_of_the_bank(tmp_path: Path,
                                                     new_db: Callable[[], str]) -> None:
    db, report = new_db(), tmp_path / "swarm.json"
    with BankProcess(db) as bank:
        swarm = subprocess.Popen(
            [*NETLET, "atm", "swarm", "--bank", bank.address, "--atms", "16",
             "--seconds", str(SECONDS), "--accounts", "40", "--grace", "1", "--seed", "7",
             "--plain", "--report", str(report)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=ENV)
        err = LineReader(swarm.stderr, "swarm stderr")
        out = LineReader(swarm.stdout, "swarm stdout")
        try:
            since, answered = 0, 0
            for _ in range(3):  # a kill once the bank has answered more since the last
                since, answered = wait_progress(err, since, answered=answered + 150)
                bank.kill()
                bank.start()  # same port, same ledger
            wait_progress(err, since, elapsed=SECONDS - 4)
            bank.kill()  # requests in flight now can only give up: their outcome is unknown
            err.wait_for(r"checking the bank's books", timeout=30)
            bank.start()
            code = swarm.wait(60)
        finally:
            if swarm.poll() is None:
                swarm.kill()
                swarm.wait()
            err.join()
            out.join()
            for pipe in (swarm.stdout, swarm.stderr):
                if pipe is not None:
                    pipe.close()
        assert code == 0, f"{out.text()}\n{err.text()}"
        assert bank.starts == 5
    assert "check OK" in out.text()
    data = json.loads(report.read_text())
    summary, ops = data["summary"], data["ops"]
    assert summary["problems"] == []
    assert summary["resolved_applied"] + summary["resolved_not_applied"] > 0, (
        "the last kill should have left requests without a known outcome")
    check_ledger_against(db, ops)
    audit = netlet("bank", "audit", "--db", db)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def check_ledger_against(db: str, ops: list[dict[str, Any]]) -> None:
    """Read the ledger's database directly and compare it with what the swarm saw."""
    commands = {str(key): (seq, ok, kind) for seq, key, ok, kind in
                raw_sql(db, "SELECT seq, key, ok, kind FROM commands")}
    entries = dict(raw_sql(db, "SELECT seq, COUNT(*) FROM entries GROUP BY seq"))
    negative = raw_sql(db, "SELECT account, balance FROM accounts "
                           "WHERE status != 'system' AND balance < 0")
    ((n_keys, n_distinct),) = raw_sql(db, "SELECT COUNT(key), COUNT(DISTINCT key) FROM commands")
    assert negative == []
    assert n_keys == n_distinct
    statuses = {op["status"] for op in ops}
    assert statuses <= {"ok", "refused", "applied", "not-applied"}, statuses
    assert {"ok", "refused"} <= statuses
    for op in ops:
        found = commands.get(op["key"])
        moved = found is not None and found[1] == 1 and entries.get(found[0]) == 2
        if op["status"] in ("ok", "applied"):
            assert found is not None, f"{op}: acknowledged but not journaled"
            assert (found[1], found[2]) == (1, op["kind"]), op
            assert moved, f"{op}: acknowledged but its entries are missing"
        else:
            assert found is None or (found[1] == 0 and found[0] not in entries), (
                f"{op}: refused or settled as not applied, yet the journal moved money")
