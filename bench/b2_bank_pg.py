"""B2: the B1 swarm against 1, 2 and 4 ``bank serve`` front-ends on one PostgreSQL database.

Each run starts a private PostgreSQL server (``initdb`` into a temporary
directory, run as an unprivileged user, on a loopback port, with the machine's
PostgreSQL binaries, ``fsync`` and ``synchronous_commit`` on: every commit is
durable before its requests are answered, as B1's), then N front-ends on one
database with one key file, then ``netlet atm swarm`` with B1's 64 ATMs over
1,000 accounts spread over the front-ends. The swarm's exactly-once check must
pass. The reference row is B1's group-commit bank on SQLite, run in the same
session. Without PostgreSQL binaries (``apt-get install postgresql``) or psycopg
(``pip install -e '.[postgres]'``) the PostgreSQL rows show n/a and why.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params, Unavailable, require
from bench.b1_bank import NETLET, _last_lines, _run, _sizes, _start_bank, _stop

__all__ = ["WORKLOAD"]


def _on_postgres(p: Params, fronts: int) -> Figures:
    require("netlet", "-e .")
    require("psycopg", "-e '.[postgres]'")
    try:
        from tests.apps.bank.pgserver import PgServer, pg_bin
    except ImportError as exc:  # bench runs from the repository root
        raise Unavailable(f"tests/apps/bank/pgserver.py not found: {exc}") from None
    if pg_bin() is None:
        raise Unavailable("no PostgreSQL binaries (/usr/lib/postgresql/*/bin); "
                          "apt-get install postgresql")
    server = PgServer(durable=True).start()
    banks: list[subprocess.Popen[str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-b2-") as tmp:
            root = Path(tmp)
            key = root / "bank.key"
            subprocess.run([*NETLET, "keygen", str(key)], check=True, capture_output=True)
            db, addresses = server.new_db(), []
            for n in range(fronts):  # the first creates the ledger's schema
                bank, address = _start_bank(db, ["--key-file", str(key)], root / f"bank{n}.log")
                banks.append(bank)
                addresses.append(address)
            report, log = root / "swarm.json", root / "swarm.log"
            with log.open("w") as out:
                swarm = subprocess.run(
                    [*NETLET, "atm", "swarm", "--bank", ",".join(addresses), "--key-file",
                     str(key), "--atms", str(p["atms"]), "--seconds", str(p["seconds"]),
                     "--accounts", str(p["accounts"]), "--seed", str(1 + p.get("repetition", 0)),
                     "--plain", "--report", str(report)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    timeout=p["seconds"] + 240)
            if swarm.returncode != 0:
                raise RuntimeError(f"swarm exit {swarm.returncode}: {_last_lines(log)}")
            summary = json.loads(report.read_text())["summary"]
    finally:
        for bank in banks:
            _stop(bank)
        server.stop()
    if summary["problems"]:
        raise RuntimeError(f"the swarm's check failed: {summary['problems'][:3]}")
    return {
        "ops_per_s": float(summary["ops_per_s"]),
        "p50_ms": float(summary["p50_ms"]),
        "p99_ms": float(summary["p99_ms"]),
        "mean_batch": float(summary["bank"]["mean_batch_size"]),
    }


def sqlite(p: Params) -> Figures:
    return _run(p, [])


def postgres_1(p: Params) -> Figures:
    return _on_postgres(p, 1)


def postgres_2(p: Params) -> Figures:
    return _on_postgres(p, 2)


def postgres_4(p: Params) -> Figures:
    return _on_postgres(p, 4)


SQLITE = "B1: one bank on SQLite (group commit)"
PG1 = "PostgreSQL, 1 front-end"

WORKLOAD = Workload(
    id="B2",
    title="bank on PostgreSQL: the B1 swarm against 1, 2 and 4 front-ends on one database",
    summary=("netlet atm swarm (64 ATMs, 1,000 accounts) spread over N netlet bank serve "
             "front-ends sharing one ledger on a private PostgreSQL server (fsync and "
             "synchronous_commit on), for 30 s (quick: 3 s); beside B1's bank on SQLite. "
             "The swarm's exactly-once check must pass. Requests per commit: the first "
             "front-end's."),
    metrics=(
        Metric("ops_per_s", "ops/s", "higher"),
        Metric("p50_ms", "p50 ms", "lower", digits=1),
        Metric("p99_ms", "p99 ms", "lower", digits=1),
        Metric("mean_batch", "requests per commit", "higher", digits=1, ratio=False),
    ),
    variants=(
        Variant(SQLITE, sqlite, netlet=True),
        Variant(PG1, postgres_1, netlet=True),
        Variant("PostgreSQL, 2 front-ends", postgres_2, netlet=True),
        Variant("PostgreSQL, 4 front-ends", postgres_4, netlet=True),
    ),
    reference=PG1,
    sizes=_sizes,
    timeout=lambda quick: 150.0 if quick else 330.0,
    targets=(Target(PG1, "", "p99_ms", "<", 100.0),),
)
