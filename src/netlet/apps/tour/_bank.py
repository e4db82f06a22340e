"""The tour's bank part: ``netlet bank serve`` on a fresh ledger, an ATM swarm, the audit.

The bank is the real command in a child process (see ``_child``), on
loopback with a fresh key, its SQLite ledger in the tour's temp directory.
The swarm (``netlet atm swarm``'s code) runs here for a few seconds and then
checks the bank's books against what its ATMs saw; the bank is stopped as
Ctrl-C would stop it, and its ledger file is audited as ``netlet bank audit``
does, independently of the process that wrote it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from netlet.apps.bank import Ledger, Swarm, SwarmConfig
from netlet.apps.bank._swarm import run_with_display
from netlet.apps.tour._core import Figures, PartFailed, Tour
from netlet.cli._demo import first_line
from netlet.transport import write_key

__all__ = ["SWARM_FULL", "SWARM_QUICK", "bank"]

SWARM_FULL = SwarmConfig(atms=16, seconds=15.0, accounts=200, grace=5.0, timeout=5.0)
"""The full tour's swarm: long enough to watch the live display."""
SWARM_QUICK = SwarmConfig(atms=4, seconds=2.0, accounts=20, grace=5.0, timeout=5.0)

_START_TIMEOUT = 20.0
"""Seconds the bank process may take to print its address."""
_STOP_TIMEOUT = 15.0
"""Seconds the bank may take to commit what is queued and exit after SIGTERM."""


def bank(tour: Tour) -> Figures:
    """Part 4: serve a bank, run an ATM swarm against it, check its books, audit its ledger."""
    console = tour.console
    where = tour.tmp / "bank"
    where.mkdir()
    key_file, db, log = where / "bank.key", where / "bank.db", where / "bank.log"
    key = write_key(key_file)
    config = SWARM_QUICK if tour.quick else SWARM_FULL
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "netlet.apps.tour._child", "bank", "serve",
             "--listen", "tcp://127.0.0.1:0", "--db", str(db), "--key-file", str(key_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
    tour.on_abort(proc.kill)
    try:
        address = _first_line(proc, log)
        console.print(f"bank process {proc.pid} (netlet bank serve) listens on [cyan]{address}"
                      "[/] with a fresh key; its ledger: bank.db in a temp directory")
        tour.check()
        figures = _swarm(tour, address, key, config)
        code = _stop(proc)
        if code != 0:
            raise PartFailed(f"the bank exited with status {code} after SIGTERM: "
                             f"{_tail(log)}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
    with Ledger(db) as ledger:
        audit = ledger.audit()
    verdict = "[green]audit passed ✓[/]" if audit.ok else "[bold red]audit FAILED[/]"
    console.print(f"netlet bank audit --db bank.db: {audit.n_commands:,} commands, "
                  f"{audit.n_entries:,} entries, journal total {audit.total}: {verdict}")
    if not audit.ok:
        raise PartFailed(f"audit failed: {'; '.join(audit.violations[:3])}")
    return [*figures, f"audit passed ({audit.n_commands:,} commands, {audit.n_entries:,} "
                      "entries)"]


def _swarm(tour: Tour, address: str, key: bytes, config: SwarmConfig) -> Figures:
    """Open the swarm's accounts, run its ATMs with the live display, check the books."""
    console = tour.console
    sw = Swarm(address, config, key=key)
    tour.on_abort(sw.stop)
    try:
        console.print(f"opening {config.accounts} accounts, then {config.atms} ATMs make random "
                      f"deposits, withdrawals and transfers for {config.seconds:g} s ...")
        sw.prepare()
        tour.check()
        run_with_display(sw, console, plain=not console.is_terminal)
        tour.check()
        console.print("checking the bank's books against what the ATMs saw ...")
        report = sw.verify()
    finally:
        sw.close()
    for line in sw.summary(report)[1:]:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise PartFailed(f"the swarm's check failed: {report.problems[0]}")
    return [f"{config.atms} ATMs for {config.seconds:g} s: {report.answered:,} requests, "
            f"{report.ops_per_s:,.0f} ops/s",
            f"latency p50 {report.p50_ms:.1f} ms, p99 {report.p99_ms:.1f} ms",
            "books checked: every acknowledged request applied once"]


def _first_line(proc: subprocess.Popen[str], log: Path) -> str:
    """The address the bank prints once it listens; fail if it does not within the limit."""
    line = first_line(proc, _START_TIMEOUT)
    if not line:
        proc.kill()
        raise PartFailed(f"the bank did not start within {_START_TIMEOUT:g} s: {_tail(log)}")
    return line


def _stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, as Ctrl-C would: the bank commits what is queued and exits."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise PartFailed(f"the bank did not stop within {_STOP_TIMEOUT:g} s of SIGTERM") from None


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return " / ".join(lines[-3:]) or "(it printed nothing)"
