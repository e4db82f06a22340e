"""A Jepsen-style run through the command line only: every exit status must tell the truth.

Four workers run ``netlet atm ... deposit|withdraw|transfer --key K`` as child
processes against ``netlet bank serve`` while a nemesis SIGKILLs and restarts
the bank and pauses it with SIGSTOP. On PostgreSQL there are two front-ends on
one database: each request goes to either, the nemesis hits either, and an
unknown outcome is asked of the other one. Every exit status is classified: 0
applied, 1 refused, 3 unknown (then ``netlet atm ... outcome K`` gives the
final word), 4 not sent; anything else fails the test. Afterwards, and again
after one more SIGKILL and restart, the ledger file itself must agree: every
request reported applied is journaled as applied, none reported refused, not
sent or "not applied, and now never will be" is, every refusal is one the
bank journaled (so it answered), a retry of a settled key still applies
nothing, and ``netlet bank audit`` passes.
"""

from __future__ import annotations

import random
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.apps.bank.bank_server import BankProcess, netlet
from tests.apps.bank.conftest import raw_sql

SECONDS = 14
WORKERS = 4
ACCOUNTS = ("alice", "bob", "carol")
PIN = "4321\n"


@dataclass
class Op:
    key: str
    account: str
    args: tuple[str, ...]
    bank: int = 0  # which front-end it was sent to
    code: int = -1
    final: str = ""  # applied / refused / not sent / never (settled by outcome)


def _atm(bank: str, account: str, *args: str, retry_for: float = 5) -> tuple[int, str, str]:
    r = netlet("atm", "--bank", bank, "--account", account, "--pin-stdin", "--timeout", "1",
               "--retry-for", str(retry_for), *args, stdin=PIN, timeout=60)
    return r.returncode, r.stdout, r.stderr


def _journal(db: str) -> dict[str, tuple[int, str]]:
    """The ledger's own record, read behind the bank's back."""
    rows = raw_sql(db, "SELECT key, ok, kind FROM commands")
    return {str(key): (int(str(ok)), str(kind)) for key, ok, kind in rows}


def _check(ops: list[Op], db: str) -> None:
    journal = _journal(db)
    for op in ops:
        ok, kind = journal.get(op.key, (0, "-"))
        applied = ok == 1 and kind != "Fence"
        if op.final == "applied":
            assert applied, f"{op} was reported applied but is not in the journal"
        else:
            assert not applied, f"{op} was reported {op.final} but was applied"
        if op.final == "refused":  # every request here is well formed: a refusal is journaled
            assert op.key in journal, f"{op} was reported refused, but the bank never answered"


@pytest.mark.timeout(180)
def test_exit_statuses_tell_the_truth_under_kills_and_pauses(
        backend: str, new_db: Callable[[], str]) -> None:
    db = new_db()
    banks = [BankProcess(db).start() for _ in range(2 if backend == "postgresql" else 1)]
    try:
        for name in ACCOUNTS:
            opened = netlet("bank", "open", name, "--bank", banks[0].address, "--pin-stdin",
                            stdin=PIN)
            assert opened.returncode == 0, opened.stderr
        ops: list[Op] = []
        lock, stop = threading.Lock(), threading.Event()
        codes: dict[int, int] = {}

        def worker(n: int) -> None:
            rng = random.Random(n)
            i = 0
            while not stop.is_set():
                account = rng.choice(ACCOUNTS)
                kind = rng.choice(("deposit", "deposit", "withdraw", "transfer"))
                amount = f"{rng.randint(1, 50)}.{rng.randint(0, 99):02d}"
                args: tuple[str, ...] = (kind, amount)
                if kind == "transfer":
                    args = (kind, rng.choice([a for a in ACCOUNTS if a != account]), amount)
                op = Op(f"jepsen-{n}-{i}", account, args, rng.randrange(len(banks)))
                i += 1
                # Some give up soon (unknown outcomes), some outlast the nemesis.
                op.code, _, err = _atm(banks[op.bank].address, account, *args, "--key", op.key,
                                       retry_for=rng.choice((0.5, 1.0, 3.0)))
                with lock:
                    ops.append(op)
                    codes[op.code] = codes.get(op.code, 0) + 1
                assert op.code in (0, 1, 3, 4), (op, err)
                assert op.code != 3 or f"key: {op.key}" in err, err

        def nemesis() -> None:
            rng, pausing = random.Random(99), False
            while not stop.wait(rng.uniform(1.0, 2.5)):
                bank = rng.choice(banks)
                if pausing and bank.proc is not None:  # a pause longer than --timeout
                    bank.proc.send_signal(signal.SIGSTOP)
                    stop.wait(rng.uniform(1.5, 3.0))
                    bank.proc.send_signal(signal.SIGCONT)
                else:
                    bank.kill()
                    bank.start()
                pausing = not pausing

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
        threads.append(threading.Thread(target=nemesis))
        for t in threads:
            t.start()
        stop.wait(SECONDS)
        stop.set()
        for t in threads:
            t.join(90)
            assert not t.is_alive()
        for bank in banks:
            if not bank.alive():
                bank.start()
        assert codes.get(0, 0) > 0, codes
        # The final word on each unknown, from the bank, through the command line.
        for op in ops:
            if op.code == 0:
                op.final = "applied"
            elif op.code in (1, 4):
                op.final = "refused" if op.code == 1 else "not sent"
            else:
                other = banks[(op.bank + 1) % len(banks)]
                code, out, err = _atm(other.address, op.account, "outcome", op.key)
                assert code == 0, err
                found = re.search(rf"{op.key}: (applied|refused|not applied)", out)
                assert found, out
                op.final = {"applied": "applied", "refused": "refused"}.get(found[1], "never")
        _check(ops, db)
        for bank in banks:  # and after one more crash and restart
            bank.kill()
            bank.start()
        _check(ops, db)
        for op in [op for op in ops if op.final == "never"][:5]:  # settled keys stay settled
            code, out, err = _atm(banks[-1].address, op.account, *op.args, "--key", op.key)
            assert code == 1, (op, out, err, _journal(db).get(op.key))
        _check(ops, db)
        audit = netlet("bank", "audit", "--db", db)
        assert audit.returncode == 0, audit.stderr
        print(f"\njepsen: {len(ops)} requests, exit statuses {sorted(codes.items())}, "
              f"{sum(b.starts for b in banks)} bank starts ({backend})")
    finally:
        for bank in banks:
            if bank.proc is not None:
                bank.proc.send_signal(signal.SIGCONT)
            bank.kill()
