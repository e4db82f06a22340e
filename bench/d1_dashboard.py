"""D1: what a dashboard costs the head, and how fast its pages load on a big head.

Throughput rows: W3's 20,000 no-op tasks on 2 workers (one submit per task),
bare and with a dashboard attached (per-task history on) while a browser-like
client keeps the overview's event stream open and fetches the first tasks
page, the API overview and /metrics once a second. Target: at most 5% slower.
Beside the rate, the CPU this process (head, client, dashboard) spent per task:
steadier than the rate on a loaded machine.

Page rows: a head holding 1,000 workers and 100,000 queued tasks (joined and
submitted in-process, no worker processes); the median time to load the
overview page (1,000 worker rows), a tasks page, a filtered API page deep in
the list, and /metrics, over HTTP. Target: under 300 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params, require
from bench.w3_tasks import WORKERS, _submit_all

__all__ = ["WORKLOAD"]


def _sizes(quick: bool) -> Params:
    return {"tasks": 2_000 if quick else 20_000, "big_workers": 1_000,
            "big_tasks": 10_000 if quick else 100_000}


def _run(ex: Any, n: int) -> Figures:
    cpu = time.process_time()
    figures = _submit_all(ex, n)
    figures["cpu_us"] = (time.process_time() - cpu) / n * 1e6
    return figures


def bare(p: Params) -> Figures:
    netlet = require("netlet", "-e .")
    with netlet.Executor(max_workers=WORKERS) as ex:
        return _run(ex, p["tasks"])


WATCH = """
import sys, threading, time
import httpx
with httpx.Client(base_url=sys.argv[1], timeout=10) as web:
    def stream():
        with web.stream("GET", "/stream/overview") as s:
            for _ in s.iter_lines():
                pass
    threading.Thread(target=stream, daemon=True).start()
    while True:
        web.get("/tasks")
        web.get("/api/v1/overview")
        web.get("/metrics")
        print("ready", flush=True)
        time.sleep(1.0)
"""
"""What an open dashboard tab and a Prometheus scraper ask, once a second: another
process, as a browser is."""


def watched(p: Params) -> Figures:
    netlet = require("netlet", "-e .")
    web = require("netlet.web", "-e '.[web]'")
    with netlet.Executor(max_workers=WORKERS) as ex:
        board = web.Dashboard(web.LocalHead(ex.head), listen="127.0.0.1:0").start()
        watcher = subprocess.Popen([sys.executable, "-c", WATCH, board.base_url],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert watcher.stdout is not None
            watcher.stdout.readline()  # it is up and watching: only then the clock starts
            return _run(ex, p["tasks"])
        finally:
            watcher.kill()
            watcher.wait()
            board.stop()


class _Sink:
    async def results(self, batch: list[Any]) -> None: ...
    async def started(self, tids: list[str]) -> None: ...
    def claim(self, tid: str) -> bool:
        return True


def big_head(p: Params) -> Figures:
    cluster = require("netlet.cluster", "-e .")
    web = require("netlet.web", "-e '.[web]'")
    node_mod = require("netlet.node", "-e .")
    messages = require("netlet.cluster._messages", "-e .")
    import httpx

    node = node_mod.Node()
    head = cluster.Head(node)
    loop = node.loop

    async def fill() -> None:
        for i in range(p["big_workers"]):
            await head.join(f"w{i:04d}" + "0" * 27, "worker",
                            {"name": f"worker-{i}", "host": "bench", "pid": 10_000 + i})
        tasks = [(f"c:{i}", "math:sqrt", b"", 0) for i in range(p["big_tasks"])]
        await head.submit(node.id, _Sink(), messages.Tasks.of(tasks), {})

    asyncio.run_coroutine_threadsafe(fill(), loop).result(300)
    board = web.Dashboard(web.LocalHead(head), listen="127.0.0.1:0").start()
    figures: Figures = {}
    try:
        with httpx.Client(base_url=board.base_url, timeout=30) as client:
            pages = {"overview_ms": "/", "tasks_ms": "/tasks?page=3",
                     "api_deep_ms": f"/api/v1/tasks?state=queued&fn=sqrt&offset="
                                    f"{p['big_tasks'] - 100}&limit=50",
                     "metrics_ms": "/metrics"}
            for key, path in pages.items():
                times = []
                for _ in range(7):
                    t0 = time.perf_counter()
                    r = client.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    if r.status_code != 200:
                        raise RuntimeError(f"{path}: HTTP {r.status_code}")
                figures[key] = statistics.median(times)
    finally:
        board.stop()
        node.close()
    return figures


BARE = "netlet Executor, one submit per task"
WATCHED = "the same, dashboard attached and watched"
BIG = "head with 1,000 workers and 100,000 queued tasks"

WORKLOAD = Workload(
    id="D1",
    title="Dashboard cost: W3 throughput with a dashboard watching, page loads on a big head",
    summary="W3 bare and with a dashboard (stream open, pages and /metrics each second); "
            "page load times (median of 7) on a head with 1,000 workers and 100,000 tasks.",
    metrics=(Metric("tasks_per_s", "tasks/s", "higher"),
             Metric("cpu_us", "CPU µs/task", "lower", 1, ratio=False),
             Metric("overview_ms", "overview ms", "lower", 1, ratio=False),
             Metric("tasks_ms", "tasks page ms", "lower", 1, ratio=False),
             Metric("api_deep_ms", "API deep page ms", "lower", 1, ratio=False),
             Metric("metrics_ms", "/metrics ms", "lower", 1, ratio=False)),
    variants=(
        Variant(BARE, bare, netlet=True),
        Variant(WATCHED, watched, netlet=True),
        Variant(BIG, big_head, netlet=True),
    ),
    reference=BARE,
    sizes=_sizes,
    timeout=lambda quick: 120.0 if quick else 400.0,
    targets=(
        Target(WATCHED, BARE, "tasks_per_s", ">=", 0.95,
               text="a watched dashboard costs at most 5% of W3 throughput"),
        Target(BIG, "", "overview_ms", "<", 300.0),
        Target(BIG, "", "tasks_ms", "<", 300.0),
        Target(BIG, "", "api_deep_ms", "<", 300.0),
    ),
)
