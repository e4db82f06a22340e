"""``netlet demo --dashboard``: a cluster, a bank and a slow prime search to watch.

An embedded cluster with two workers, a bank under a trickle of deposits and
refused transfers, and a prime search by trial division (slow on purpose),
all on one dashboard, until Ctrl-C. Everything lives in a temp directory,
removed at the end.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from netlet.apps.bank import Deposit, Ledger, OpenAccount, Transfer, hash_pin
from netlet.apps.bank._commands import BankError
from netlet.apps.bank._dashboard import BankProvider
from netlet.apps.primes import PrimeSearch, SearchConfig
from netlet.apps.primes._dashboard import PrimesProvider
from netlet.cli._dashboard import start_dashboard
from netlet.cluster import Executor
from netlet.web import LocalHead

__all__ = ["watch"]


def _bank_traffic(ledger: Ledger, stop: threading.Event) -> None:
    n = 0
    while not stop.wait(0.01):
        n += 1
        try:
            if n % 5:
                ledger.execute(Deposit("alice", 100), f"d{n}")
            else:
                ledger.execute(Transfer("alice", "bob", 10**12), f"t{n}")  # refused
        except BankError:
            pass


def _search_forever(ex: Executor, tmp: Path, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        search = PrimeSearch(ex.cluster, SearchConfig(0, 2_000_000, "naive", chunk=20_000,
                                                      state=tmp / f"primes-{n}.db"))
        _current[0] = search
        try:
            search.run()
        except Exception:
            if stop.is_set():  # Ctrl-C: the executor cancelled its chunks
                return
            raise


_current: list[PrimeSearch | None] = [None]


def _latest() -> PrimeSearch:
    search = _current[0]
    assert search is not None
    return search


def watch(addr: str, workers: int = 2) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="netlet-demo-"))
    stop = threading.Event()
    try:
        with Executor(max_workers=workers) as ex, Ledger(str(tmp / "bank.db")) as ledger:
            for who in ("alice", "bob"):
                ledger.execute(OpenAccount(who, who.title(), hash_pin("1234", n=16)),
                               f"open-{who}")
            _current[0] = PrimeSearch(ex.cluster, SearchConfig(0, 1, "naive",
                                                               state=tmp / "p0.db"))
            assert ex.head is not None
            board = start_dashboard(addr, head=LocalHead(ex.head),
                                    providers=[BankProvider(ledger), PrimesProvider(_latest)],
                                    title="netlet demo")
            threads = [threading.Thread(target=_bank_traffic, args=(ledger, stop), daemon=True),
                       threading.Thread(target=_search_forever, args=(ex, tmp, stop),
                                        daemon=True)]
            for t in threads:
                t.start()
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
            finally:
                stop.set()
                board.stop()
                ex.shutdown(wait=False, cancel_futures=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
