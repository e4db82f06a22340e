"""A paused client fills the head's result budget: backpressure, never a stall or a loss.

Issue 12: "A slow or paused client gets backpressure, never a stall or a
loss." A real head (``--result-budget 8`` MiB), two real workers returning
256 KiB results, and a client process that is SIGSTOPped once it submitted:
the head must stop handing out its work once the results waiting for the
client fill its part of the budget (workers idle while its tasks stay
queued), its memory must stay near the budget rather than grow with the run,
and once the client runs again every result must arrive, intact and in full.
Meanwhile another client's tasks must run (they stalled until the stopped
client's grace ran out). A client stopped for longer than its grace is
forgotten with its results: the head must then hand out work again, and the
client, once it runs again, resubmits what was dropped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netlet.cluster import Cluster
from tests.cluster import tasks
from tests.cluster.conftest import STEP, ClusterKit, Proc, wait_until

BUDGET_MIB = 8
SIZE = 256 * 1024
TASKS = 800  # 200 MiB of results: 25 times the budget

_CLIENT = f"""
import sys
from netlet.cluster import Cluster
from tests.cluster import tasks
from tests.cluster.test_scheduling import blob
c = Cluster(sys.argv[1])
futures = [c.submit(blob, i, {SIZE}) for i in range({TASKS})]
print("submitted", flush=True)
ok = 0
for i in range(len(futures)):
    value = futures[i].result(120)
    ok += len(value) == {SIZE} and value[:4] == i.to_bytes(4, "big") == value[-4:]
    futures[i] = None  # holds no more than one result at a time
print("results", ok, flush=True)
c.close()
"""


def _kib(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (the peak) of ``pid``, in KiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def _done(kit: ClusterKit, cluster: Cluster) -> int:
    return sum(int(n["done"]) for n in kit.alive_workers(cluster))


def _start_paused_client(kit: ClusterKit, tmp_path: Path, head: Proc,
                         watcher: Cluster) -> tuple[Proc, int]:
    """The client process, SIGSTOPped once the head holds all its tasks, and how many
    of them were done right after it stopped."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(_CLIENT))
    client = kit.spawn([sys.executable, str(script), head.address], name="client")
    client.stdout.wait_for(r"^submitted$", STEP)

    def all_at_head() -> bool:  # submits travel in the background: all of them first
        st = watcher.status()
        return bool(st["queued"] + st["running"] + _done(kit, watcher) >= TASKS)

    wait_until(all_at_head, STEP, f"{TASKS} tasks at the head", interval=0.01)
    client.signal(signal.SIGSTOP)  # alive and connected, but it reads nothing
    return client, _done(kit, watcher)


@pytest.mark.timeout(240)
def test_a_paused_client_fills_the_budget_and_loses_nothing(cluster_kit: ClusterKit,
                                                             tmp_path: Path) -> None:
    head = cluster_kit.head(extra=["--result-budget", str(BUDGET_MIB)])
    cluster_kit.workers(head.address, 2)
    watcher = cluster_kit.client(head.address)
    cluster_kit.wait_workers(watcher, 2)
    rss0 = _kib(head.pid, "VmRSS")
    client, done0 = _start_paused_client(cluster_kit, tmp_path, head, watcher)
    try:
        head.stderr.wait_for(r"part of the budget .*: holding back its tasks", 60)
        # Backpressure: the workers run out of work while tasks stay queued (they
        # finish what they held, then their pulls wait).
        last = [-1, time.monotonic()]

        def settled() -> bool:
            done, now = _done(cluster_kit, watcher), time.monotonic()
            if done != last[0]:
                last[:] = [done, now]
            return now - last[1] >= 1.5

        wait_until(settled, 60, "the workers idle while the client is paused", interval=0.1)
        st = watcher.status()
        held = (int(last[0]) - done0) * SIZE  # done since it stopped: none delivered
        print(f"paused: {last[0]} of {TASKS} done, {held >> 20} MiB since the client stopped, "
              f"queued {st['queued']}, "
              f"head RSS {rss0 >> 10} -> {_kib(head.pid, 'VmRSS') >> 10} MiB")
        assert st["queued"] > TASKS // 2, st
        assert held < 4 * BUDGET_MIB * 2**20, f"{held >> 20} MiB of results for a paused client"
    finally:
        client.signal(signal.SIGCONT)
    assert client.stdout.wait_for(r"^results \d+$", 180).group(0) == f"results {TASKS}"
    assert client.wait(STEP) == 0
    assert watcher.status()["queued"] == 0
    peak = _kib(head.pid, "VmHWM")
    print(f"head RSS {rss0 >> 10} MiB before, peak {peak >> 10} MiB "
          f"({TASKS * SIZE >> 20} MiB of results, budget {BUDGET_MIB} MiB)")
    assert peak - rss0 < 8 * BUDGET_MIB * 1024, (rss0, peak)


@pytest.mark.timeout(240)
def test_a_client_paused_past_its_grace_stalls_nothing(cluster_kit: ClusterKit,
                                                       tmp_path: Path) -> None:
    """The paused client is disconnected (keepalive) and, after ``--client-grace``,
    forgotten with the results that filled the budget: the head must hand out work
    again (another client's tasks run while it is still stopped), and when it runs
    again it resubmits what the head dropped and gets every result."""
    head = cluster_kit.head(extra=["--result-budget", str(BUDGET_MIB), "--client-grace", "1"])
    cluster_kit.workers(head.address, 2)
    watcher = cluster_kit.client(head.address)
    cluster_kit.wait_workers(watcher, 2)
    client, _ = _start_paused_client(cluster_kit, tmp_path, head, watcher)
    try:
        head.stderr.wait_for(r"part of the budget .*: holding back its tasks", 60)
        head.stderr.wait_for(r"client \w+ is gone", 60)
        wait_until(lambda: watcher.status()["queued"] == 0, 30,
                   "the head forgetting the paused client's tasks")
        # Another client's work runs while the paused one is still stopped.
        assert watcher.submit(tasks.add, 2, 3).result(30) == 5
    finally:
        client.signal(signal.SIGCONT)
    assert client.stdout.wait_for(r"^results \d+$", 180).group(0) == f"results {TASKS}"
    assert client.wait(STEP) == 0


@pytest.mark.timeout(180)
def test_a_paused_client_holds_back_only_its_own_tasks(cluster_kit: ClusterKit,
                                                       tmp_path: Path) -> None:
    """Issue 12: one stopped client whose results fill its part of the budget must
    not stall the others. Another client submits once the stopped one is held: its
    tasks must run while the stopped one is still stopped, well inside its grace
    (60 s), and the stopped one's tasks stay queued (held back, not lost)."""
    head = cluster_kit.head(extra=["--result-budget", str(BUDGET_MIB)])
    cluster_kit.workers(head.address, 2)
    watcher = cluster_kit.client(head.address)
    cluster_kit.wait_workers(watcher, 2)
    client, _ = _start_paused_client(cluster_kit, tmp_path, head, watcher)
    try:
        head.stderr.wait_for(r"part of the budget .*: holding back its tasks", 60)
        t0 = time.monotonic()
        futures = [watcher.submit(tasks.add, i, 1) for i in range(20)]
        assert [f.result(20) for f in futures] == [i + 1 for i in range(20)]
        print(f"the other client's 20 tasks took {time.monotonic() - t0:.2f} s")
        status = watcher.status()
        assert status["queued"] > TASKS // 2, "the stopped client's tasks ran"
        assert client.alive
        # The operator sees why those tasks wait: which client is held, and for how much.
        held = [n for n in status["nodes"] if n.get("held")]
        assert [n["pid"] for n in held] == [client.pid], status["nodes"]
        assert held[0]["results_waiting"] > BUDGET_MIB * 1024 * 1024 // 4
        assert status["results_waiting"] >= held[0]["results_waiting"]
        shown = subprocess.run(
            [sys.executable, "-c", "from netlet.cli import main; main()", "status",
             "--head", head.address], capture_output=True, text=True, timeout=30, check=True)
        assert f"held back: client {held[0]['node'][:8]}'s queued tasks" in shown.stdout, \
            shown.stdout
        _dashboard_shows_held(head.address, held[0]["node"])
    finally:
        client.signal(signal.SIGCONT)
    assert client.stdout.wait_for(r"^results \d+$", 120).group(0) == f"results {TASKS}"
    assert client.wait(STEP) == 0


def _dashboard_shows_held(address: str, client: str) -> None:
    """The dashboard of that head (watching it as a client) says the same."""
    import httpx

    from netlet.transport import find_user_key
    from netlet.web import Dashboard, RemoteHead

    with Dashboard(RemoteHead(address, key=find_user_key(address)),
                   listen="127.0.0.1:0") as board, \
            httpx.Client(base_url=board.base_url, timeout=30) as web:
        def notice() -> bool:
            page = web.get("/").text
            return f"/tasks?client={client}" in page and "Held back:" in page

        wait_until(notice, STEP, "the overview's notice of the held client", interval=0.05)
        metrics = web.get("/metrics").text
        assert "netlet_head_clients_held 1.0" in metrics, metrics
        assert client in web.get("/api/v1/overview").json()["statistics"]["held_clients"]
