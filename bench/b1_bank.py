"""B1: 64 swarm ATMs against one bank for 30 s, beside the same ledger with one fsync per request.

Each run is two real processes on this machine: ``netlet bank serve`` on a fresh
SQLite ledger in a temporary directory (WAL, ``synchronous=FULL``: every commit is
fsync'd before any of its requests is answered), and ``netlet atm swarm`` with 64
ATMs over 1,000 accounts doing random deposits, withdrawals and transfers. The
figure is acknowledged requests per second (applied and refused alike: both are
journaled and durable before the answer) with p50/p99 latency, as the swarm
reports them. The swarm's end-of-run check (every acknowledged request applied
exactly once, no refused one applied, the money adds up, the bank's audit clean)
must pass, or the run fails.

The two variants differ only in the bank's commit mode: group commit (the default:
the requests that queue up while the ledger commits share the next commit and its
fsync) or ``--no-group-commit`` (one transaction and one fsync per request).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params, require

__all__ = ["WORKLOAD"]

NETLET = [sys.executable, "-c", "from netlet.cli import main; main(prog_name='netlet')"]
_STARTUP = 60.0


def _sizes(quick: bool) -> Params:
    return {"atms": 64, "seconds": 3.0 if quick else 30.0, "accounts": 1000}


def _last_lines(path: Path, n: int = 3) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(lines[-n:]) if lines else "no output"


def _start_bank(db: Path | str, options: list[str], log: Path) -> tuple[subprocess.Popen[str], str]:
    """``netlet bank serve`` on an ephemeral port; returns it and the address it printed."""
    with log.open("w") as err:
        bank = subprocess.Popen([*NETLET, "bank", "serve", "--listen", "tcp://127.0.0.1:0",
                                 "--db", str(db), *options], stdout=subprocess.PIPE,
                                stderr=err, stdin=subprocess.DEVNULL, text=True)
    assert bank.stdout is not None
    ready, _, _ = select.select([bank.stdout], [], [], _STARTUP)
    line = bank.stdout.readline() if ready else ""  # the address, once it listens
    if not line.startswith("tcp://"):
        bank.kill()
        bank.wait()
        raise RuntimeError(f"the bank did not start: {_last_lines(log)}")
    return bank, line.strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run(p: Params, options: list[str]) -> Figures:
    require("netlet", "-e .")
    with tempfile.TemporaryDirectory(prefix="bench-b1-") as tmp:
        root = Path(tmp)
        bank, address = _start_bank(root / "b1.db", options, root / "bank.log")
        try:
            report, log = root / "swarm.json", root / "swarm.log"
            with log.open("w") as out:
                swarm = subprocess.run(
                    [*NETLET, "atm", "swarm", "--bank", address, "--atms", str(p["atms"]),
                     "--seconds", str(p["seconds"]), "--accounts", str(p["accounts"]),
                     "--seed", str(1 + p.get("repetition", 0)), "--plain",
                     "--report", str(report)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    timeout=p["seconds"] + 240)
            if swarm.returncode != 0:
                raise RuntimeError(f"swarm exit {swarm.returncode}: {_last_lines(log)}")
            summary = json.loads(report.read_text())["summary"]
        finally:
            _stop(bank)
    if summary["problems"]:  # the swarm exits 1 then; never report figures of a failed check
        raise RuntimeError(f"the swarm's check failed: {summary['problems'][:3]}")
    bank_info = summary["bank"]
    return {
        "ops_per_s": float(summary["ops_per_s"]),
        "p50_ms": float(summary["p50_ms"]),
        "p99_ms": float(summary["p99_ms"]),
        "mean_batch": float(bank_info["mean_batch_size"]),
    }


def group_commit(p: Params) -> Figures:
    return _run(p, [])


def one_fsync(p: Params) -> Figures:
    return _run(p, ["--no-group-commit"])


GROUP = "netlet bank, group commit"
ONE = "same ledger, one fsync per request"

WORKLOAD = Workload(
    id="B1",
    title="bank: 64 swarm ATMs against one bank, acknowledged durable requests",
    summary=("netlet atm swarm (64 ATMs, 1,000 accounts, random deposits, withdrawals and "
             "transfers) against netlet bank serve on a fresh SQLite ledger (WAL, fsync on "
             "every commit) for 30 s (quick: 3 s); the swarm's exactly-once check must pass. "
             "--pin does not apply: the bank and the swarm are never pinned."),
    metrics=(
        Metric("ops_per_s", "ops/s", "higher"),
        Metric("p50_ms", "p50 ms", "lower", digits=1),
        Metric("p99_ms", "p99 ms", "lower", digits=1),
        Metric("mean_batch", "requests per commit", "higher", digits=1, ratio=False),
    ),
    variants=(
        Variant(GROUP, group_commit, netlet=True),
        Variant(ONE, one_fsync, netlet=True),
    ),
    reference=GROUP,
    sizes=_sizes,
    timeout=lambda quick: 150.0 if quick else 330.0,
    targets=(
        Target(GROUP, ONE, "ops_per_s", ">=", 3.0),
        Target(GROUP, "", "p99_ms", "<", 50.0),
    ),
)
