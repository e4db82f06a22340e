"""Take the screenshots of docs/dashboard.md: ``python -m tests.web.make_screenshots``.

A real embedded cluster with three workers (one drained, one killed), some
tasks (one failing), named actors and a channel, a bank with traffic and a
prime search, each page opened in Chromium.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from netlet.apps.bank import Deposit, Ledger, OpenAccount, Transfer, hash_pin
from netlet.apps.bank._dashboard import BankProvider
from netlet.apps.primes import PrimeSearch, SearchConfig
from netlet.apps.primes._dashboard import PrimesProvider
from netlet.cluster import Cluster, EmbeddedCluster, HeadConfig
from netlet.web import Dashboard, LocalHead
from tests.cluster.tasks import Counter
from tests.web.browser import ARGS, CHROMIUM

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"


def main() -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="netlet-shots-"))
    emb = EmbeddedCluster(3, config=HeadConfig(heartbeat=0.2, dead_after=1.5))
    cluster = Cluster(emb.address, node=emb.node)
    ledger = Ledger(str(tmp / "bank.db"))
    for who in ("alice", "bob"):
        ledger.execute(OpenAccount(who, who.title(), hash_pin("1234", n=16)), f"open-{who}")
    search = PrimeSearch(cluster, SearchConfig(0, 20_000_000_000, "sieve", chunk=50_000_000,
                                               state=tmp / "p.db"))
    board = Dashboard(LocalHead(emb.head), [BankProvider(ledger), PrimesProvider(search)],
                      listen="127.0.0.1:0", interval=0.5).start()
    stop = threading.Event()

    def bank_traffic(who: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"k{who}-{n}"
            ledger.execute(Deposit("alice", 100), key) if n % 3 else _refused(ledger, key)

    for client in range(6):  # clients at once: the ledger commits their requests together
        threading.Thread(target=bank_traffic, args=(client,), daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while sum(1 for m in cluster.status()["nodes"] if m["role"] == "worker") < 3:
            if time.monotonic() > deadline:
                sys.exit("workers did not join")
            time.sleep(0.1)
        for name in ("counter", "sessions", "rate-limiter"):
            cluster.spawn(Counter, 5, name=name, restart="on-failure")
        cluster.register("scratch-alias", cluster.spawn(Counter, 0, name="scratch"))
        futures = [cluster.submit("time:sleep", 0.05 * (i % 7)) for i in range(120)]
        bad = cluster.submit("math:sqrt", -1.0)
        for f in futures[:60]:
            f.result(30)
        try:
            bad.result(30)
        except ValueError:
            pass
        emb.procs[2].send_signal(signal.SIGKILL)
        drained = next(m["node"] for m in cluster.status()["nodes"] if m["role"] == "worker"
                       and m["pid"] == emb.procs[1].pid)

        async def drain() -> bool:
            return emb.head.drain_worker(drained)

        assert emb.node.loop is not None
        asyncio.run_coroutine_threadsafe(drain(), emb.node.loop).result(10)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            time.sleep(12)  # a screenshot script, not a test: let the charts fill
            for name, path in [("overview", "/"), ("tasks", "/tasks"),
                               ("names", "/names"), ("events", "/events"),
                               ("bank", "/apps/bank")]:
                page.goto(board.base_url + path)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(OUT / f"dashboard-{name}.png"), full_page=name != "tasks")
            tid = cluster_failed(board)
            page.goto(board.base_url + f"/tasks/{tid}")
            page.wait_for_timeout(500)
            page.screenshot(path=str(OUT / "dashboard-task.png"), full_page=True)
            threading.Thread(target=search.run, daemon=True).start()
            page.goto(board.base_url + "/apps/primes")
            while (p := search.statistics().progress) is None or p.fraction < 0.4:
                time.sleep(0.2)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(OUT / "dashboard-primes.png"), full_page=True)
            browser.close()
    finally:
        stop.set()
        board.stop()
        cluster.close()
        emb.close()
        ledger.close()
    print("screenshots in", OUT)


def _refused(ledger: Ledger, key: str) -> None:
    try:
        ledger.execute(Transfer("alice", "bob", 10**12), key)
    except Exception:
        pass


def cluster_failed(board: Dashboard) -> str:
    import httpx

    page = httpx.get(board.base_url + "/api/v1/tasks", params={"state": "failed"}).json()
    return str(page["tasks"][0]["id"])


if __name__ == "__main__":
    main()
