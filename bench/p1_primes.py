"""P1: `netlet primes --method naive` on [2, 300000) with 1 and 2 workers: speedup over serial.

Every row is a whole program (see ``bench/_primes.py``): `netlet primes ... --json`
itself, or a ``python -c`` program for a peer. All rows cut the range into the
chunks `netlet primes` makes by default for their worker count and call the same
function (``count_naive``) on each. Two figures per row:

- ``speedup``: the work alone (pool or cluster started and warmed; for netlet the
  summary's ``seconds``: workers joined, first chunk submitted to last recorded,
  state file included) against one process running the same chunks, timed just
  before and after in this same variant run;
- ``wall speedup``: the whole program, interpreter start to exit (imports,
  starting the embedded cluster or the pool), against the whole serial program.

The "2 plain processes" row deals the chunks alternately to two processes forked
in advance and released together: no coordination at all, so it shows what two
processes computing at once can reach on this machine (two vCPUs shared with
other work run each process slower than one alone does).
"""

from __future__ import annotations

import json
from collections.abc import Callable

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

METHOD = "naive"

_SERIAL = """\
import json, sys, time
from netlet.apps.primes import count_naive
chunks = json.loads(sys.argv[1])
t = time.perf_counter()
n = sum(count_naive(lo, hi) for lo, hi in chunks)
print(json.dumps({"count": n, "seconds": time.perf_counter() - t}))
"""

_POOL = """\
import json, multiprocessing as mp, sys, time
from netlet.apps.primes import count_naive
chunks, k = json.loads(sys.argv[1]), int(sys.argv[2])
with mp.Pool(k) as pool:
    pool.map(abs, range(k), chunksize=1)
    t = time.perf_counter()
    n = sum(pool.starmap(count_naive, chunks, chunksize=1))
    s = time.perf_counter() - t
print(json.dumps({"count": n, "seconds": s}))
"""

_PLAIN = """\
import json, multiprocessing as mp, sys, time
from netlet.apps.primes import count_naive
chunks, k = json.loads(sys.argv[1]), int(sys.argv[2])
ctx = mp.get_context("fork")
go, results = ctx.Barrier(k + 1), ctx.SimpleQueue()
def work(mine):
    go.wait()
    results.put(sum(count_naive(lo, hi) for lo, hi in mine))
procs = [ctx.Process(target=work, args=(chunks[i::k],)) for i in range(k)]
for p in procs:
    p.start()
go.wait()
t = time.perf_counter()
n = sum(results.get() for _ in procs)
s = time.perf_counter() - t
for p in procs:
    p.join()
print(json.dumps({"count": n, "seconds": s}))
"""


def _sizes(quick: bool) -> Params:
    return {"start": 2, "end": 30_000 if quick else 300_000}


def _chunks(p: Params, workers: int) -> tuple[list[tuple[int, int]], str]:
    chunks = chunks_of(METHOD, p["start"], p["end"], workers)
    return chunks, json.dumps(chunks)


def _run(p: Params, make_row: Callable[[str], list[str]], workers: int) -> Figures:
    chunks, text = _chunks(p, workers)
    figures, result = with_baseline(python_program(_SERIAL, text), make_row(text),
                                    ANSWERS[p["end"]], {"chunks": float(len(chunks))})
    if "chunks" in result and result["chunks"] != len(chunks):
        raise RuntimeError(f"netlet cut {result['chunks']} chunks, the peers {len(chunks)}")
    return figures


def serial(p: Params) -> Figures:
    """The baseline itself: speedup 1 by definition (the chunks of 2 workers)."""
    chunks, text = _chunks(p, 2)
    result, wall = run_program(python_program(_SERIAL, text), ANSWERS[p["end"]])
    return {"speedup": 1.0, "seconds": float(result["seconds"]), "wall_speedup": 1.0,
            "wall": wall, "chunks": float(len(chunks))}


def plain_processes(p: Params) -> Figures:
    k = p["workers"]
    return _run(p, lambda chunks: python_program(_PLAIN, chunks, str(k)), k)


def pool(p: Params) -> Figures:
    k = p["workers"]
    return _run(p, lambda chunks: python_program(_POOL, chunks, str(k)), k)


def netlet_primes(p: Params) -> Figures:
    require("netlet", "-e .")
    k = p["workers"]
    command = netlet_command("primes", "--method", METHOD, "--start", str(p["start"]),
                             "--end", str(p["end"]), "--workers", str(k), "--json")
    return _run(p, lambda chunks: command, k)


NETLET = "netlet primes --method naive -w 2"
SERIAL = "one process, serial"
POOL2 = "multiprocessing.Pool(2).starmap(chunksize=1)"

WORKLOAD = Workload(
    id="P1",
    title="netlet primes --method naive on [2, 300000): speedup over one serial process",
    summary=("Whole programs, one chunk per task, the chunks netlet primes cuts by default; "
             "speedup: the work with workers up, vs the same chunks serially in one process "
             "timed in the same run; wall: the whole program vs the whole serial program; "
             "answer checked (25,997; quick: [2, 30000), 3,245)."),
    metrics=(Metric("speedup", "speedup", "higher", digits=2),
             Metric("seconds", "seconds", "lower", digits=3, ratio=False),
             Metric("wall_speedup", "wall speedup", "higher", digits=2),
             Metric("wall", "wall s", "lower", digits=3, ratio=False),
             Metric("chunks", "chunks", "lower", ratio=False)),
    variants=(
        Variant(NETLET, netlet_primes, {"workers": 2}, netlet=True),
        Variant("netlet primes --method naive -w 1", netlet_primes, {"workers": 1},
                netlet=True),
        Variant(SERIAL, serial),
        Variant("2 plain processes, chunks dealt alternately", plain_processes,
                {"workers": 2}),
        Variant(POOL2, pool, {"workers": 2}),
        Variant("multiprocessing.Pool(1).starmap(chunksize=1)", pool, {"workers": 1}),
    ),
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 120.0,
    targets=(
        Target(NETLET, SERIAL, "speedup", ">=", 1.85,
               "netlet primes -w 2 speedup >= 1.85 over one serial process (issue 6)"),
    ),
)
