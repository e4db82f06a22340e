"""W6: cold start, from a fresh process until a 2-worker cluster returned one task.

Each measurement is a new interpreter (imports included), timed from its first
line to the first result; the figure is seconds (median of the runs). The bench compiles netlet's
bytecode first (``bench/__main__.py``), as installing a wheel does; a tree
whose bytecode is compiled at every import starts ~60 ms slower per process.
"""

from __future__ import annotations

import subprocess
import sys

from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params

__all__ = ["WORKLOAD"]

PROGRAMS = {
    "netlet": ("import netlet\n"
               "with netlet.Executor(max_workers=2) as ex:\n"
               "    assert ex.submit(abs, -1).result() == 1\n"),
    "ppe": ("import concurrent.futures as cf\n"
            "with cf.ProcessPoolExecutor(2) as ex:\n"
            "    assert ex.submit(abs, -1).result() == 1\n"),
    "ray": ("import ray\n"
            "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,"
            " logging_level='ERROR')\n"
            "def f(x):\n    return abs(x)\n"
            "assert ray.get(ray.remote(f).remote(-1)) == 1\n"),
    "dask": ("from distributed import Client, LocalCluster\n"
             "with LocalCluster(n_workers=2, threads_per_worker=1,"
             " dashboard_address=None) as c, Client(c) as cl:\n"
             "    assert cl.submit(abs, -1).result() == 1\n"),
}


def _sizes(quick: bool) -> Params:
    return {}


def _cold(kind: str) -> Figures:
    code = ("import time\nt0 = time.perf_counter()\n" + PROGRAMS[kind]
            + "print(time.perf_counter() - t0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
    return {"seconds": float(out.stdout.strip().splitlines()[-1])}


def netlet_cold(p: Params) -> Figures:
    return _cold("netlet")


def ppe_cold(p: Params) -> Figures:
    return _cold("ppe")


def ray_cold(p: Params) -> Figures:
    return _cold("ray")


def dask_cold(p: Params) -> Figures:
    return _cold("dask")


NETLET = "netlet Executor(max_workers=2), embedded"

WORKLOAD = Workload(
    id="W6",
    title="cold start of an embedded 2-worker cluster running one task",
    summary="A new interpreter per run, timed from its first line (imports included).",
    metrics=(Metric("seconds", "seconds", "lower", digits=3),),
    variants=(
        Variant(NETLET, netlet_cold, netlet=True),
        Variant("ProcessPoolExecutor(2)", ppe_cold),
        Variant("Ray init", ray_cold),
        Variant("Dask LocalCluster", dask_cold),
    ),
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 120.0,
    targets=(
        Target(NETLET, "", "seconds", "<=", 0.25),
        Target(NETLET, "Ray init", "seconds", "<=", 0.1),
        Target(NETLET, "Dask LocalCluster", "seconds", "<=", 0.5),
    ),
)
