"""The dashboard over real HTTP: pages, the live stream, /api/v1 and /metrics."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import netlet
from netlet.apps.bank import Deposit, Ledger, OpenAccount, hash_pin
from netlet.apps.bank._dashboard import BankProvider
from netlet.apps.primes import PrimeSearch, SearchConfig
from netlet.apps.primes._dashboard import PrimesProvider
from netlet.node import Node, expose
from netlet.web import Dashboard
from netlet.web._security import csrf_token
from tests.web.conftest import Kit, wait_until

pytestmark = pytest.mark.timeout(60)


def test_pages_and_api_show_tasks_and_workers(kit: Kit,
                                              dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for()
    ok = kit.cluster.submit("math:sqrt", 16.0)
    bad = kit.cluster.submit("math:sqrt", -1.0)
    assert ok.result(10) == 4.0
    with pytest.raises(ValueError, match="math domain error"):
        bad.result(10)
    with httpx.Client(base_url=d.base_url, timeout=10) as web:
        home = web.get("/")
        assert home.status_code == 200
        assert "Workers" in home.text
        assert "content-security-policy" in home.headers
        page = web.get("/api/v1/tasks", params={"state": "failed"}).json()
        assert page["total"] == 1
        tid = page["tasks"][0]["id"]
        detail = web.get(f"/api/v1/tasks/{tid}").json()
        assert detail["error_type"] == "ValueError"
        assert "math domain error" in detail["traceback"]
        html = web.get(f"/tasks/{tid}").text
        assert "math domain error" in html
        assert "ValueError" in web.get("/tasks", params={"state": "failed"}).text
        assert web.get("/api/v1/tasks", params={"state": "nonsense"}).status_code == 422
        assert web.get("/api/v1/tasks/nope").status_code == 404
        workers = web.get("/api/v1/workers").json()
        assert sum(1 for w in workers if w["state"] == "alive") == 2
        spec = web.get("/api/v1/openapi.json").json()
        assert "/api/v1/tasks/{task_id}" in spec["paths"]
        events = web.get("/api/v1/events").json()
        assert any(e["kind"] == "join" for e in events)


def test_metrics_parse_with_the_prometheus_parser(kit: Kit,
                                                   dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for()
    kit.cluster.submit("math:sqrt", 4.0).result(10)
    with httpx.Client(base_url=d.base_url, timeout=10) as web:
        text = web.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["netlet_head_tasks_finished"].type == "counter"
    done = [s for s in families["netlet_head_tasks_finished"].samples
            if s.labels.get("outcome") == "done" and s.name.endswith("_total")]
    assert done[0].value >= 1
    assert families["netlet_head_task_duration_seconds"].type == "histogram"
    assert families["netlet_head_queue_depth"].type == "gauge"
    assert families["netlet_node_received_bytes"].samples[0].value > 0
    for name in families:
        assert name.startswith("netlet_")


def test_the_stream_sends_the_live_part_as_it_changes(
        kit: Kit, dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for()
    with httpx.Client(base_url=d.base_url, timeout=10) as web, \
            web.stream("GET", "/stream/overview") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        wait_until(lambda: next(lines).startswith("event: update"), what="a first update")
        kit.cluster.submit("math:sqrt", 9.0).result(10)
        seen: list[str] = []

        def shows_the_done_task() -> bool:
            line = next(lines)
            seen.append(line)
            return 'class="card ok"><b>1</b>' in line

        wait_until(shows_the_done_task, what="the stream showing the finished task")


@expose
class Greeter:
    def hello(self) -> str:
        return "hello"


def test_names_page_lists_where_each_name_lives(kit: Kit,
                                                dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for()
    with Node(key=kit.embedded.key) as owner:
        ref = owner.serve(Greeter())
        owner.proxy(kit.embedded.address, "netlet.head").register(
            "<b>greeter</b>", owner.proxy_for(ref), owner.id)
        with httpx.Client(base_url=d.base_url, timeout=10) as web:
            names = web.get("/api/v1/names").json()
            assert [(n["name"], n["node"], n["actor"]) for n in names] == [
                ("<b>greeter</b>", owner.id, False)]
            html = web.get("/names").text
    assert "&lt;b&gt;greeter&lt;/b&gt;" in html
    assert "<b>greeter" not in html


@pytest.mark.timeout(90)
def test_an_embedded_executor_serves_its_dashboard(capfd: pytest.CaptureFixture[str]) -> None:
    with netlet.Executor(1, dashboard=True) as ex:
        assert ex.submit(pow, 2, 5).result(30) == 32
        assert ex.dashboard_url is not None
        assert f"netlet dashboard at {ex.dashboard_url}" in capfd.readouterr().err
        with httpx.Client(base_url=ex.dashboard_url.rstrip("/"), timeout=10) as web:
            stats = web.get("/api/v1/statistics").json()
    assert stats["tasks"]["done"] >= 1
    with pytest.raises(netlet.ConfigError, match="embedded"):
        netlet.Executor("tcp://127.0.0.1:1", dashboard=True)


def test_the_bank_page_and_an_audit_started_from_it(tmp_path: Path) -> None:
    token = "bank-dashboard-token-0123456789"
    with Ledger(str(tmp_path / "bank.db")) as ledger:
        ledger.execute(OpenAccount("alice", "Alice", hash_pin("1234", n=16)), "open")
        provider = BankProvider(ledger)
        assert "gauge:p50_ms" not in provider.counters()  # no interval yet
        ledger.execute(Deposit("alice", 500), "d1")
        recent = provider.counters()  # the latency of the commands since the last call
        assert recent["gauge:p50_ms"] > 0
        assert recent["gauge:p99_ms"] >= recent["gauge:p50_ms"]
        assert recent["gauge:per_commit"] == 1.0  # one deposit, one commit
        assert provider.counters()["gauge:per_commit"] == 0.0  # no commit since
        with Dashboard(None, [provider], listen="127.0.0.1:0", token=token,
                       control=True) as d, \
                httpx.Client(base_url=d.base_url, timeout=10,
                             headers={"authorization": f"Bearer {token}"}) as web:
            assert web.get("/", follow_redirects=False).headers["location"] == "/apps/bank"
            assert web.get("/api/v1/statistics").status_code == 404  # it watches no head
            snap = web.get("/api/v1/apps/bank").json()
            assert snap["commands"] == 2
            assert snap["audit"] is None
            path = "/api/v1/apps/bank/actions/audit"
            assert web.post(path).status_code == 403
            r = web.post(path, headers={"x-csrf-token": csrf_token(token)})
            assert r.status_code == 200
            assert r.json()["result"]["ok"] is True
            assert "last audit" in web.get("/apps/bank").text
            metrics = web.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    assert families["netlet_bank_audit_ok"].samples[0].value == 1.0
    ops = {(s.labels["kind"], s.labels["outcome"]): s.value
           for s in families["netlet_bank_ops"].samples if s.name.endswith("_total")}
    assert ops[("Deposit", "ok")] == 1
    assert families["netlet_bank_op_latency_seconds"].type == "histogram"


def test_latency_quantiles_are_interpolated_inside_their_bucket() -> None:
    """The tile and the chart read one estimate; a bucket's upper bound alone made a
    p50 of about 1 ms read 5 ms on the bank page."""
    from netlet.apps.bank._dashboard import quantile
    from netlet.cluster import Histogram

    h = Histogram((0.001, 0.005, 0.01), (10, 30, 40, 40), 0.1)  # cumulative, then +Inf
    assert quantile(h, 0.25) == pytest.approx(0.001)  # rank 10: the first bucket's top
    assert quantile(h, 0.5) == pytest.approx(0.001 + 0.004 * 10 / 20)  # rank 20 of 10..30
    assert quantile(h, 1.0) == pytest.approx(0.01)
    assert quantile(Histogram((0.001,), (0, 0), 0.0), 0.5) is None


def _documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """docs/dashboard.md's metrics table: name -> (type, label names)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "dashboard.md").read_text()
    table = text[text.index("## Metrics"):text.index("Useful Grafana queries")]
    found: dict[str, tuple[str, set[str]]] = {}
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`netlet_"):
            continue
        labels = set(re.findall(r"`(\w+)`", cells[2]))
        for name in re.findall(r"`(netlet_\w+)`", cells[0]):
            found[name] = (cells[1], labels)
    return found


@pytest.mark.timeout(60)
def test_metrics_are_exactly_the_documented_ones(kit: Kit, tmp_path: Path,
                                                 dashboard_for: Callable[..., Dashboard]) -> None:
    """Grafana boards are built from docs/dashboard.md: every metric it names is scraped with
    its type and labels, and nothing it does not name is."""
    documented = _documented_metrics()
    assert len(documented) > 30, "the metrics table was not found or not parsed"
    with Ledger(str(tmp_path / "bank.db")) as ledger:
        ledger.execute(OpenAccount("alice", "Alice", hash_pin("1234", n=16)), "open")
        ledger.execute(Deposit("alice", 5), "d1")
        bank = BankProvider(ledger)
        bank.run_audit()
        search = PrimeSearch(kit.cluster, SearchConfig(0, 1000, "naive", chunk=1000,
                                                       state=tmp_path / "p.db"))
        d = dashboard_for(providers=[bank, PrimesProvider(search)])
        kit.cluster.submit("math:sqrt", 4.0).result(10)
        with httpx.Client(base_url=d.base_url, timeout=10) as web:
            text = web.get("/metrics").text
    scraped = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
        scraped[name] = (family.type, labels)
    assert sorted(set(scraped) - set(documented)) == [], "scraped but not documented"
    assert sorted(set(documented) - set(scraped)) == [], "documented but not scraped"
    for name, (kind, labels) in documented.items():
        assert scraped[name] == (kind, labels), name
