"""``statistics()`` snapshots: the head, the node, the ledger and the prime search
publish frozen records of counters and gauges that a dashboard reads."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from netlet.apps.bank import Deposit, InsufficientFunds, Ledger, OpenAccount, Withdraw, hash_pin
from netlet.apps.primes import PrimeSearch, SearchConfig
from netlet.cluster import HeadStatistics, TaskPage
from netlet.cluster._stats import from_dict
from netlet.cluster._worker import Worker, WorkerOptions
from netlet.errors import NetletError
from netlet.node import LinkStatistics, Node
from netlet.web import Dashboard
from tests.web.conftest import Kit, dashboard_for, kit, wait_until

__all__ = ["dashboard_for", "kit"]

pytestmark = pytest.mark.timeout(60)


def test_head_statistics_count_tasks_by_state_and_list_workers(kit: Kit) -> None:
    kit.on_head(kit.embedded.head._monitor.track)
    good = [kit.cluster.submit("math:sqrt", float(i)) for i in range(20)]
    bad = kit.cluster.submit("math:sqrt", -1.0)
    assert [f.result(10) for f in good] == [float(i) ** 0.5 for i in range(20)]
    with pytest.raises(ValueError, match="math domain error"):
        bad.result(10)
    stats = kit.on_head(kit.embedded.head.statistics)
    assert isinstance(stats, HeadStatistics)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.clients = 3  # type: ignore[misc]
    assert stats.tasks.submitted == 21
    assert stats.tasks.done == 20
    assert stats.tasks.failed == 1
    assert stats.tasks.queued == stats.tasks.running == 0
    alive = [w for w in stats.workers if w.state == "alive"]
    assert len(alive) == 2
    assert sum(w.done for w in alive) >= 20
    assert all(w.pid and w.host and w.heartbeat_age < 5 for w in alive)
    page = kit.on_head(lambda: kit.embedded.head.task_page(state="failed"))
    assert isinstance(page, TaskPage)
    assert page.total == 1
    failed = page.tasks[0]
    assert failed.fn == "math:sqrt"
    assert failed.error_type == "ValueError"
    assert "math domain error" in failed.traceback
    assert "Traceback" in failed.traceback
    assert failed.history
    assert failed.history[0].worker in {w.node for w in alive}
    done = kit.on_head(lambda: kit.embedded.head.task_page(state="done", limit=5))
    assert isinstance(done, TaskPage)
    assert done.total == 20
    assert len(done.tasks) == 5


def test_a_killed_worker_turns_dead_with_an_event(kit: Kit) -> None:
    victim = kit.embedded.procs[0]
    victim.send_signal(signal.SIGKILL)

    def dead() -> bool:
        stats = kit.on_head(kit.embedded.head.statistics)
        assert isinstance(stats, HeadStatistics)
        return any(w.state == "dead" and w.pid == victim.pid for w in stats.workers)

    wait_until(dead, what="the killed worker shown dead")
    events = kit.on_head(kit.embedded.head.events)
    assert isinstance(events, list)
    assert any(e.kind == "dead" for e in events)
    assert any(e.kind == "join" for e in events)


def test_a_remote_dashboard_reads_statistics_with_the_key_only(kit: Kit) -> None:
    with Node(key=kit.embedded.key) as node:
        head = node.proxy(kit.embedded.address, "netlet.head")
        stats = from_dict(HeadStatistics, head.dashboard("statistics"))
        assert stats.head == kit.embedded.node.id
        assert len(stats.workers) >= 2
        assert stats.tracking  # asking turned per-task history on
        with pytest.raises(NetletError, match="unknown dashboard query"):
            head.dashboard("<script>")
    with Node(key=b"x" * 32) as stranger, pytest.raises(NetletError):
        stranger.proxy(kit.embedded.address, "netlet.head", timeout=5).dashboard("statistics")


def test_node_statistics_count_calls_bytes_and_handshake_failures(kit: Kit) -> None:
    before = kit.embedded.node.statistics()
    with Node(key=kit.embedded.key) as node:
        node.proxy(kit.embedded.address, "netlet.head").dashboard("events")
        mine = node.statistics()
        assert mine.calls_out >= 1
        assert mine.bytes_out > 0
        assert mine.connections == 1
    with Node(key=b"y" * 32) as stranger, pytest.raises(NetletError):
        stranger.proxy(kit.embedded.address, "netlet.head", timeout=5).status()
    wait_until(lambda: kit.embedded.node.statistics().handshake_failures
               > before.handshake_failures, what="the refused handshake counted")
    after = kit.embedded.node.statistics()
    assert after.calls_in > before.calls_in
    assert after.bytes_in > before.bytes_in
    assert after.connections_total > before.connections_total


def test_ledger_statistics_count_ops_by_kind_and_outcome(tmp_path: Path) -> None:
    with Ledger(str(tmp_path / "bank.db")) as led:
        led.execute(OpenAccount("alice", "Alice", hash_pin("1234", n=16)), "k1")
        led.execute(Deposit("alice", 100), "k2")
        with pytest.raises(InsufficientFunds):
            led.execute(Withdraw("alice", 1_000), "k3")
        stats = led.statistics()
    assert ("Deposit", "ok", 1) in stats.ops
    assert ("OpenAccount", "ok", 1) in stats.ops
    assert ("Withdraw", "InsufficientFunds", 1) in stats.ops
    assert stats.latency is not None
    assert stats.latency.counts[-1] == 3
    assert stats.batch_sizes is not None
    assert stats.batch_sizes.counts[-1] == stats.commits
    assert stats.commit_seconds is not None
    assert stats.commit_seconds.total > 0


def test_prime_search_statistics_follow_the_run(kit: Kit, tmp_path: Path) -> None:
    config = SearchConfig(0, 20_000, "sieve", chunk=2_000, state=tmp_path / "p.db")
    search = PrimeSearch(kit.cluster, config)
    assert search.statistics().progress is None
    summary = search.run()
    stats = search.statistics()
    assert stats.progress is not None
    assert stats.progress.primes == summary.primes == 2262
    assert stats.progress.chunks_done == 10
    assert stats.in_flight == 0
    assert stats.eta == 0.0
    assert abs(sum(n.share for n in stats.progress.nodes) - 1.0) < 1e-9


def test_a_worker_process_reports_its_own_statistics(kit: Kit) -> None:
    worker = Worker(WorkerOptions(kit.embedded.address, key=kit.embedded.key, name="w-stats"))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        before = worker.statistics()
        assert before.name == "w-stats"
        assert before.done == 0
        futures = [kit.cluster.submit("math:sqrt", float(i)) for i in range(30)]
        assert [f.result(10) for f in futures] == [float(i) ** 0.5 for i in range(30)]
        after = wait_until(lambda: (s := worker.statistics()).epoch and s, what="a join")
        assert after.node == worker.node.id
        assert after.running == ""
    finally:
        worker.close()
        thread.join(10)
    stats = kit.on_head(kit.embedded.head.statistics)
    assert isinstance(stats, HeadStatistics)
    mine = [w for w in stats.workers if w.node == worker.node.id]
    assert mine
    assert mine[0].done == worker.statistics().done


def test_the_head_s_connections_are_listed_locally_and_remotely(
        kit: Kit, dashboard_for: Callable[..., Dashboard]) -> None:
    workers = {m["node"] for m in kit.cluster.status()["nodes"] if m["role"] == "worker"}
    d = dashboard_for()
    with httpx.Client(base_url=d.base_url, timeout=10) as web:
        links = web.get("/api/v1/connections").json()
    assert workers <= {lk["peer"] for lk in links}
    assert all(lk["frames_in"] > 0 and lk["bytes_out"] >= 0 for lk in links
               if lk["peer"] in workers)
    with Node(key=kit.embedded.key) as node:
        head = node.proxy(kit.embedded.address, "netlet.head")
        remote = [from_dict(LinkStatistics, lk) for lk in head.dashboard("links")]
        assert node.id in {lk.peer for lk in remote}
        assert workers <= {lk.peer for lk in remote}
