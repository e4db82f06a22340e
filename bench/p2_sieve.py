"""P2: `netlet primes --method sieve` up to 10^9 with 2 workers: seconds and rate.

Every row is a whole program (see ``bench/_primes.py``): `netlet primes --end
10**9 --json` itself, or a ``python -c`` program for a peer. The baseline is one
process calling ``count_sieve(0, N)``: the numpy segmented sieve netlet's workers
run, over the whole range in one call (the best one process does with it). Each
row runs that baseline just before and after itself, and ``x numpy`` is the
baseline's time over the row's, with ``wall x numpy`` likewise for the whole
programs (interpreter start, imports, workers). ``seconds`` is the work alone:
for netlet the summary's ``seconds`` (workers joined and loaded, first chunk
submitted to last recorded), for a pool the map once the pool runs.

``primesieve`` (C++, the practical limit: segmented, wheel, cache-sized, and
multithreaded) needs the system library to build (``apt-get install
libprimesieve-dev``, then ``pip install primesieve``); without it its rows are n/a.
"""

from __future__ import annotations

import json

from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params, require
from bench._primes import (
    ANSWERS,
    chunks_of,
    netlet_command,
    python_program,
    run_program,
    with_baseline,
)

__all__ = ["WORKLOAD"]

METHOD = "sieve"

_NUMPY = """\
import json, sys, time
from netlet.apps.primes import count_sieve
end = int(sys.argv[1])
count_sieve(0, 100)  # numpy and the sieve's tables loaded before the clock, as on the workers
t = time.perf_counter()
n = count_sieve(0, end)
print(json.dumps({"count": n, "seconds": time.perf_counter() - t}))
"""

_POOL = """\
import json, multiprocessing as mp, sys, time
from netlet.apps.primes import count_sieve
chunks, k = json.loads(sys.argv[1]), int(sys.argv[2])
count_sieve(0, 100)  # numpy and the sieve's tables loaded before the workers fork
with mp.Pool(k) as pool:
    pool.map(abs, range(k), chunksize=1)
    t = time.perf_counter()
    n = sum(pool.starmap(count_sieve, chunks, chunksize=1))
    s = time.perf_counter() - t
print(json.dumps({"count": n, "seconds": s}))
"""

_PRIMESIEVE = """\
import json, sys, time
import primesieve
end, threads = int(sys.argv[1]), int(sys.argv[2])
primesieve.set_num_threads(threads)
primesieve.count_primes(100)
t = time.perf_counter()
n = primesieve.count_primes(end - 1)  # [0, end - 1]: the primes below end
print(json.dumps({"count": n, "seconds": time.perf_counter() - t}))
"""


def _sizes(quick: bool) -> Params:
    return {"end": 10**8 if quick else 10**9}


def _run(p: Params, row: list[str], workers: int = 0) -> Figures:
    end = p["end"]
    figures, result = with_baseline(python_program(_NUMPY, str(end)), row, ANSWERS[end])
    if workers and result["chunks"] != len(chunks_of(METHOD, 0, end, workers)):
        raise RuntimeError(f"netlet cut {result['chunks']} chunks, a pool would get "
                           f"{len(chunks_of(METHOD, 0, end, workers))}")
    figures["rate"] = end / float(figures["seconds"]) / 1e6
    return figures


def numpy_one_process(p: Params) -> Figures:
    """The baseline itself: x numpy is 1 by definition."""
    require("numpy", "numpy")
    result, wall = run_program(python_program(_NUMPY, str(p["end"])), ANSWERS[p["end"]])
    seconds = float(result["seconds"])
    return {"speedup": 1.0, "seconds": seconds, "rate": p["end"] / seconds / 1e6,
            "wall_speedup": 1.0, "wall": wall}


def pool(p: Params) -> Figures:
    require("numpy", "numpy")
    k = p["workers"]
    chunks = json.dumps(chunks_of(METHOD, 0, p["end"], k))
    return _run(p, python_program(_POOL, chunks, str(k)))


def primesieve(p: Params) -> Figures:
    require("primesieve", "primesieve (its build needs apt-get install libprimesieve-dev)")
    require("numpy", "numpy")
    return _run(p, python_program(_PRIMESIEVE, str(p["end"]), str(p["threads"])))


def netlet_primes(p: Params) -> Figures:
    require("numpy", "numpy")
    return _run(p, netlet_command("primes", "--method", METHOD, "--end", str(p["end"]),
                                  "--workers", str(p["workers"]), "--json"), p["workers"])


NETLET = "netlet primes --method sieve -w 2"
NUMPY = "numpy segmented sieve, one process"

WORKLOAD = Workload(
    id="P2",
    title="netlet primes --method sieve up to 10^9: seconds and rate",
    summary=("Whole programs; x numpy: the work with workers up vs count_sieve(0, N) in "
             "one process, timed in the same run; wall: whole programs; answer checked "
             "(50,847,534; quick: 10^8, 5,761,455)."),
    metrics=(Metric("speedup", "x numpy", "higher", digits=2, ratio=False),
             Metric("seconds", "seconds", "lower", digits=3),
             Metric("rate", "M numbers/s", "higher", ratio=False),
             Metric("wall_speedup", "wall x numpy", "higher", digits=2, ratio=False),
             Metric("wall", "wall s", "lower", digits=3)),
    variants=(
        Variant(NETLET, netlet_primes, {"workers": 2}, netlet=True),
        Variant("netlet primes --method sieve -w 1", netlet_primes, {"workers": 1},
                netlet=True),
        Variant(NUMPY, numpy_one_process),
        Variant("multiprocessing.Pool(2).starmap, same chunks", pool, {"workers": 2}),
        Variant("primesieve.count_primes, 1 thread", primesieve, {"threads": 1}),
        Variant("primesieve.count_primes, 2 threads", primesieve, {"threads": 2}),
    ),
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 120.0 if quick else 240.0,
    targets=(
        Target(NETLET, NUMPY, "speedup", ">=", 1.8,
               "netlet primes -w 2 at least 1.8x faster than one numpy process (issue 6)"),
    ),
)
