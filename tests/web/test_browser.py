"""The dashboard in a real browser: pages update live as a real cluster works.

A head with real worker processes; tasks are submitted and the pages, kept
open, must show them appear, run and end (by server-sent events, no reload);
a failed task shows its traceback; a killed worker turns dead; the bank and a
prime search update their pages; the token is enforced and a hostile worker
name is shown as text.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netlet.apps.bank import Deposit, Ledger, OpenAccount, hash_pin
from netlet.apps.bank._dashboard import BankProvider
from netlet.apps.primes import PrimeSearch, SearchConfig
from netlet.apps.primes._dashboard import PrimesProvider
from netlet.cluster._member_messages import JoinInfo
from netlet.node import Node
from netlet.web import Dashboard, LocalHead
from tests.web.browser import chromium
from tests.web.conftest import Kit, dashboard_for, kit

__all__ = ["dashboard_for", "kit"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module (each test opens its own page, cookies apart)."""
    with chromium() as b:
        yield b

expect = pytest.importorskip("playwright.sync_api").expect
pytestmark = pytest.mark.timeout(90)
STEP = 10_000  # ms: the longest any one thing may take to show


def test_tasks_workers_and_failures_show_live(kit: Kit, browser: Any,
                                              dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for()
    with browser.new_context() as context:
        page = context.new_page()
        page.goto(d.base_url + "/tasks")
        expect(page.locator("#status")).to_have_text("live", timeout=STEP)
        slow = kit.cluster.submit("time:sleep", 1.0)
        row = page.locator("tr.task").first
        expect(row.locator(".badge")).to_have_text("running", timeout=STEP)
        slow.result(10)
        expect(row.locator(".badge")).to_have_text("done", timeout=STEP)
        bad = kit.cluster.submit("math:sqrt", -1.0)
        with pytest.raises(ValueError, match="math domain error"):
            bad.result(10)
        failed = page.locator("tr.task.failed")
        expect(failed).to_have_count(1, timeout=STEP)
        failed.locator("a").click()
        expect(page.locator("#traceback")).to_contain_text("ValueError: math domain error")
        page.goto(d.base_url + "/")
        victim = kit.embedded.procs[0]
        row = page.locator(f"tr.worker:has(td:text-is('{victim.pid}'))")
        expect(row.locator(".badge")).to_have_text("alive", timeout=STEP)
        victim.send_signal(signal.SIGKILL)
        expect(row.locator(".badge")).to_have_text("dead", timeout=STEP)


def test_the_token_is_enforced_and_hostile_names_are_text(
        kit: Kit, browser: Any, dashboard_for: Callable[..., Dashboard]) -> None:
    token = "browser-test-token-0123456789"
    d = dashboard_for(token=token)
    hostile = '<img src=x onerror="window.pwned=1">'
    with Node(key=kit.embedded.key) as member, browser.new_context() as context:
        member.proxy(kit.embedded.address, "netlet.head").join(
            member.id, "worker", JoinInfo(hostile, "", 1, "", 1))
        page = context.new_page()
        response = page.goto(d.base_url + "/")
        assert response is not None
        assert response.status == 401
        page.goto(d.url)  # the printed URL: the token becomes a cookie
        assert "token=" not in page.url
        name = page.locator("td.name", has_text="onerror")
        expect(name).to_have_text(hostile, timeout=STEP)
        expect(page.locator("#status")).to_have_text("live", timeout=STEP)
        assert page.evaluate("window.pwned") is None
        assert page.locator("img").count() == 0


def test_bank_and_prime_pages_update(kit: Kit, browser: Any, tmp_path: Path) -> None:
    with Ledger(str(tmp_path / "bank.db")) as ledger:
        ledger.execute(OpenAccount("alice", "Alice", hash_pin("1234", n=16)), "open")
        search = PrimeSearch(kit.cluster, SearchConfig(0, 400_000, "sieve", chunk=20_000,
                                                       state=tmp_path / "p.db"))
        d = Dashboard(LocalHead(kit.embedded.head), [BankProvider(ledger),
                                                     PrimesProvider(search)],
                      listen="127.0.0.1:0", interval=0.2).start()
        stop = threading.Event()

        def deposits() -> None:
            n = 0
            while not stop.is_set() and n < 2000:
                n += 1
                ledger.execute(Deposit("alice", 1), f"d{n}")

        bank = threading.Thread(target=deposits, daemon=True)
        try:
            with browser.new_context() as context:
                page = context.new_page()
                page.goto(d.base_url + "/apps/bank")
                expect(page.locator("#status")).to_have_text("live", timeout=STEP)
                bank.start()
                expect(page.locator("td", has_text="Deposit")).to_be_visible(timeout=STEP)
                page.goto(d.base_url + "/apps/primes")
                expect(page.locator("p.empty")).to_be_visible(timeout=STEP)
                summary = search.run()
                expect(page.locator(".card b").first).to_have_text("100 %", timeout=STEP)
                expect(page.get_by_text(f"{summary.primes:,}", exact=True)).to_be_visible(
                    timeout=STEP)
        finally:
            stop.set()
            bank.join(10)
            d.stop()


def test_pages_load_nothing_from_elsewhere_and_break_no_policy(
        kit: Kit, browser: Any, dashboard_for: Callable[..., Dashboard], tmp_path: Path) -> None:
    """It works with no internet: every request a page makes, live updates included, goes to
    the dashboard itself, and nothing the pages or their streamed parts hold is refused by
    their Content-Security-Policy (an inline style or script would be, and say so)."""
    with Ledger(str(tmp_path / "bank.db")) as ledger:
        d = dashboard_for(providers=[BankProvider(ledger)])
        with pytest.raises(ValueError, match="math domain error"):
            kit.cluster.submit("math:sqrt", -1.0).result(10)
        requests: list[str] = []
        complaints: list[str] = []
        with browser.new_context() as context:
            context.on("request", lambda r: requests.append(r.url))
            page = context.new_page()
            page.on("console", lambda m: complaints.append(m.text)
                    if m.type in ("error", "warning") else None)
            page.goto(d.base_url + "/tasks?state=failed")
            expect(page.locator("#status")).to_have_text("live", timeout=STEP)
            page.locator("tr.task.failed a").first.click()
            for path in ("", "/names", "/events", "/apps/bank"):
                expect(page.locator("#status")).to_have_text("live", timeout=STEP)
                page.goto(d.base_url + (path or "/"))
            expect(page.locator("#status")).to_have_text("live", timeout=STEP)
    assert requests
    assert [u for u in requests if not u.startswith(d.base_url + "/")] == []
    assert [c for c in complaints if "Content Security Policy" in c or "Refused" in c] == []
