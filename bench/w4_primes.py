"""W4: count the primes below 300,000 by trial division, in 300 equal chunks, on 1 and 2 workers.

Every variant first times the same chunks serially in its own process, then
times its pool (workers started and warmed before the clock), so each row's
"speedup" is measured against a serial run made moments before on the same
machine. One chunk is one task, except in the two rows that group chunks the
way ``multiprocessing.Pool.map`` does by default (38 chunks per task for 300
chunks on 2 workers): Pool's own, and netlet's ``map`` given that chunksize.
The targets are checked on both readings.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params, require
from netlet.apps.primes import count_naive

__all__ = ["WORKLOAD"]

ANSWER = 25_997  # pi(300,000)


def _sizes(quick: bool) -> Params:
    # Quick keeps the range (its answer is known) but uses fewer, larger chunks.
    return {"end": 300_000, "chunks": 30 if quick else 300}


def _chunks(p: Params) -> tuple[list[int], list[int]]:
    step = p["end"] // p["chunks"]
    starts = list(range(0, p["end"], step))
    return starts, [s + step for s in starts]


def _count_chunk(bounds: tuple[int, int]) -> int:
    return count_naive(*bounds)


def _serial(p: Params) -> float:
    starts, ends = _chunks(p)
    t0 = time.perf_counter()
    total = sum(count_naive(a, b) for a, b in zip(starts, ends, strict=True))
    seconds = time.perf_counter() - t0
    if total != ANSWER:
        raise RuntimeError(f"serial counted {total}, not {ANSWER}")
    return seconds


def _timed(p: Params, serial: float, warm: Callable[[], Any],
           run: Callable[[list[int], list[int]], int]) -> Figures:
    """Time ``run`` after ``warm``; ``serial`` was measured before any pool started."""
    warm()
    starts, ends = _chunks(p)
    t0 = time.perf_counter()
    total = run(starts, ends)
    seconds = time.perf_counter() - t0
    if total != ANSWER:
        raise RuntimeError(f"counted {total}, not {ANSWER}")
    return {"seconds": seconds, "speedup": serial / seconds}


def serial(p: Params) -> Figures:
    _serial(p)  # the same warm-up every other row gets
    seconds = _serial(p)
    return {"seconds": seconds, "speedup": 1.0}


def _pool_chunksize(items: int, workers: int) -> int:
    """The chunksize multiprocessing.Pool.map picks by default."""
    chunksize, extra = divmod(items, workers * 4)
    return chunksize + 1 if extra else chunksize


def _executor(ex: concurrent.futures.Executor, p: Params, serial: float) -> Figures:
    def warm() -> None:
        list(ex.map(count_naive, [0] * 8, [10] * 8))

    chunksize = _pool_chunksize(p["chunks"], p["workers"]) if p.get("pool_chunks") else 1
    return _timed(p, serial, warm,
                  lambda s, e: sum(ex.map(count_naive, s, e, chunksize=chunksize)))


def netlet_map(p: Params) -> Figures:
    netlet = require("netlet", "-e .")
    serial = _serial(p)
    with netlet.Executor(max_workers=p["workers"]) as ex:
        return _executor(ex, p, serial)


def ppe_map(p: Params) -> Figures:
    serial = _serial(p)
    with concurrent.futures.ProcessPoolExecutor(p["workers"]) as ex:
        return _executor(ex, p, serial)


def pool_map(p: Params) -> Figures:
    serial = _serial(p)
    with mp.Pool(p["workers"]) as pool:
        return _timed(p, serial, lambda: pool.map(abs, range(8)),
                      lambda s, e: sum(pool.map(_count_chunk, zip(s, e, strict=True),
                                                chunksize=p["chunksize"])))


def ray_map(p: Params) -> Figures:
    ray = require("ray", "ray")
    serial = _serial(p)
    ray.init(num_cpus=p["workers"], include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        f = ray.remote(count_naive)
        return _timed(p, serial, lambda: ray.get([f.remote(0, 10) for _ in range(8)]),
                      lambda s, e: sum(ray.get([f.remote(a, b) for a, b in zip(s, e,
                                                                            strict=True)])))
    finally:
        ray.shutdown()


def dask_map(p: Params) -> Figures:
    distributed = require("distributed", "dask[distributed]")
    serial = _serial(p)
    with distributed.LocalCluster(n_workers=p["workers"], threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        def warm() -> None:
            client.gather(client.map(count_naive, [0] * 8, range(8, 16)))

        return _timed(p, serial, warm,
                      lambda s, e: sum(client.gather(client.map(count_naive, s, e))))


NETLET = "netlet Executor.map, 2 workers"
NETLET_GROUPED = "netlet Executor.map(chunksize as Pool's default), 2 workers"
SERIAL = "serial, one process"
POOL_1 = "multiprocessing.Pool(2).map(chunksize=1)"
POOL = "multiprocessing.Pool(2).map, default chunksize"

WORKLOAD = Workload(
    id="W4",
    title="primes below 300,000 by trial division in 300 chunks: speedup over serial",
    summary=("Each run times the chunks serially in its own process, then on the pool "
             "(started and warmed before the clock); answer checked (25,997)."),
    metrics=(Metric("speedup", "speedup", "higher", digits=2),
             Metric("seconds", "seconds", "lower", digits=3)),
    variants=(
        Variant(NETLET, netlet_map, {"workers": 2}, netlet=True),
        Variant(NETLET_GROUPED, netlet_map, {"workers": 2, "pool_chunks": True}, netlet=True),
        Variant("netlet Executor.map, 1 worker", netlet_map, {"workers": 1}, netlet=True),
        Variant(SERIAL, serial),
        Variant("ProcessPoolExecutor(2).map", ppe_map, {"workers": 2}),
        Variant(POOL_1, pool_map,
                {"workers": 2, "chunksize": 1}),
        Variant(POOL, pool_map, {"workers": 2, "chunksize": None}),
        Variant("multiprocessing.Pool(1).map, default chunksize", pool_map,
                {"workers": 1, "chunksize": None}),
        Variant("Ray, 2 CPUs", ray_map, {"workers": 2}),
        Variant("Dask LocalCluster, 2 workers", dask_map, {"workers": 2}),
    ),
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 120.0,
    targets=(
        Target(NETLET, SERIAL, "speedup", ">=", 1.85,
               "one task per chunk: speedup with 2 workers >= 1.85"),
        Target(NETLET, POOL_1, "speedup", ">=", 1.0,
               "one task per chunk: no worse than multiprocessing.Pool"),
        Target(NETLET_GROUPED, SERIAL, "speedup", ">=", 1.85,
               "chunks grouped as Pool groups them: speedup with 2 workers >= 1.85"),
        Target(NETLET_GROUPED, POOL, "speedup", ">=", 1.0,
               "chunks grouped as Pool groups them: no worse than multiprocessing.Pool"),
    ),
)
