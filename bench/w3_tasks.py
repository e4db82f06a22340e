"""W3: 20,000 no-op tasks ``f(i) -> i`` on 2 worker processes, every result gathered.

One submit per task for the "submit" rows; ``map`` with chunksize 100 for the
"map" rows (the issue's second target compares those two).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import time
from typing import Any

from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params, require

__all__ = ["WORKLOAD", "noop"]

WORKERS = 2


def noop(i: int) -> int:
    return i


def _sizes(quick: bool) -> Params:
    return {"tasks": 2_000 if quick else 20_000}


def _rate(n: int, start: int) -> Figures:
    return {"tasks_per_s": n / ((time.perf_counter_ns() - start) / 1e9)}


def _submit_all(ex: Any, n: int) -> Figures:
    ex.submit(noop, 0).result()  # workers up before the clock starts
    start = time.perf_counter_ns()
    futures = [ex.submit(noop, i) for i in range(n)]
    if sum(f.result() for f in futures) != n * (n - 1) // 2:
        raise RuntimeError("wrong results")
    return _rate(n, start)


def _map_all(ex: Any, n: int) -> Figures:
    ex.submit(noop, 0).result()
    start = time.perf_counter_ns()
    if sum(ex.map(noop, range(n), chunksize=100)) != n * (n - 1) // 2:
        raise RuntimeError("wrong results")
    return _rate(n, start)


def ppe_submit(p: Params) -> Figures:
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as ex:
        return _submit_all(ex, p["tasks"])


def ppe_map(p: Params) -> Figures:
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as ex:
        return _map_all(ex, p["tasks"])


def pool_map(p: Params, chunksize: int | None) -> Figures:
    with mp.Pool(WORKERS) as pool:
        pool.map(noop, range(10))
        start = time.perf_counter_ns()
        pool.map(noop, range(p["tasks"]), chunksize=chunksize)
        return _rate(p["tasks"], start)


def pool_map_1(p: Params) -> Figures:
    return pool_map(p, 1)


def pool_map_default(p: Params) -> Figures:
    return pool_map(p, None)


def ray_tasks(p: Params) -> Figures:
    ray = require("ray", "ray")
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        f = ray.remote(noop)
        ray.get(f.remote(0))
        start = time.perf_counter_ns()
        ray.get([f.remote(i) for i in range(p["tasks"])])
        return _rate(p["tasks"], start)
    finally:
        ray.shutdown()


def dask_tasks(p: Params) -> Figures:
    distributed = require("distributed", "dask[distributed]")
    with distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.submit(noop, -1).result()
        start = time.perf_counter_ns()
        client.gather(client.map(noop, range(p["tasks"])))
        return _rate(p["tasks"], start)


def netlet_submit(p: Params) -> Figures:
    netlet = require("netlet", "-e .")
    with netlet.Executor(max_workers=WORKERS) as ex:
        return _submit_all(ex, p["tasks"])


def netlet_map(p: Params) -> Figures:
    netlet = require("netlet", "-e .")
    with netlet.Executor(max_workers=WORKERS) as ex:
        return _map_all(ex, p["tasks"])


NETLET = "netlet Executor, one submit per task"
NETLET_MAP = "netlet Executor.map(chunksize=100)"
PPE = "ProcessPoolExecutor, one submit per task"
PPE_MAP = "ProcessPoolExecutor.map(chunksize=100)"
RAY = "Ray remote function"

WORKLOAD = Workload(
    id="W3",
    title="20,000 no-op tasks on 2 worker processes: throughput",
    summary="f(i) -> i, all results gathered (quick: 2,000); workers started before the clock.",
    metrics=(Metric("tasks_per_s", "tasks/s", "higher"),),
    variants=(
        Variant(NETLET, netlet_submit, netlet=True),
        Variant(NETLET_MAP, netlet_map, netlet=True),
        Variant(PPE, ppe_submit),
        Variant(PPE_MAP, ppe_map),
        Variant("multiprocessing.Pool.map(chunksize=1)", pool_map_1),
        Variant("multiprocessing.Pool.map(default chunksize)", pool_map_default),
        Variant(RAY, ray_tasks),
        Variant("Dask LocalCluster map", dask_tasks),
    ),
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 90.0 if quick else 300.0,
    targets=(
        Target(NETLET, PPE, "tasks_per_s", ">="),
        Target(NETLET, RAY, "tasks_per_s", ">=", 5.0),
        Target(NETLET_MAP, PPE_MAP, "tasks_per_s", ">=", 0.5),
    ),
)
