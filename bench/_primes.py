"""What P1 and P2 share: each row is a whole program, timed inside and from outside.

Every row of P1 and P2 runs one program in a fresh interpreter: `netlet primes
... --json` itself, or a small ``python -c`` program for a peer (one process, a
``multiprocessing.Pool``, ``primesieve``). Each program reports two times:

- ``seconds``: the work alone, with the pool or cluster already started and
  warmed (the program's own clock; for `netlet primes` the summary's
  ``seconds``, which starts once its workers have joined and loaded the method);
- ``wall``: the whole program from ``exec`` to exit, measured here: interpreter
  start, imports, starting workers, the work, shutting down.

The baseline (one process running the same function) runs in the same variant
process just before and just after the row's program; its lower time of the
two is the reference, so a speedup is never inflated by a slow baseline run and
drifting load on this shared machine hits the row and its baseline alike.
``speedup = baseline seconds / row seconds``; ``wall speedup`` likewise with
walls. Every program's answer is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._measure import Figures

__all__ = [
    "ANSWERS",
    "chunks_of",
    "netlet_command",
    "python_program",
    "run_program",
    "with_baseline",
]

ANSWERS = {30_000: 3_245, 300_000: 25_997, 10**8: 5_761_455, 10**9: 50_847_534}
"""pi(n) for the sizes P1 and P2 use (full and quick)."""

_PROGRAM_TIMEOUT = 300.0


def chunks_of(method: str, start: int, end: int, workers: int) -> list[tuple[int, int]]:
    """The chunks `netlet primes` cuts the range into by default for ``workers`` workers."""
    from netlet.apps.primes import default_chunk

    step = default_chunk(method, start, end, workers)
    return [(lo, min(lo + step, end)) for lo in range(start, end, step)]


def run_program(argv: list[str], expected: int) -> tuple[dict[str, Any], float]:
    """Run ``argv`` in a scratch directory; its last stdout line is a JSON object.

    Returns that object and the program's wall time. Raises if it fails or its
    ``count`` is not ``expected``.
    """
    with tempfile.TemporaryDirectory(prefix="bench-primes-") as cwd:
        t0 = time.perf_counter()
        out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                             timeout=_PROGRAM_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    if out.returncode != 0:
        last = (out.stderr.strip() or out.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"exit code {out.returncode}: {last[:300]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result.get("count") != expected:
        raise RuntimeError(f"counted {result.get('count')}, not {expected}")
    return result, wall


def python_program(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def netlet_command(*args: str) -> list[str]:
    """``netlet ARGS``: the installed console script, else the same entry point via -c."""
    script = Path(sys.executable).with_name("netlet")
    if script.exists():
        return [str(script), *args]
    return python_program("import sys; from netlet.cli import main; sys.exit(main())", *args)


def with_baseline(baseline: list[str], row: list[str], expected: int,
                  extra: dict[str, Any] | None = None) -> tuple[Figures, dict[str, Any]]:
    """Baseline, row, baseline again: the row's figures and its speedups over the baseline."""
    before, before_wall = run_program(baseline, expected)
    result, wall = run_program(row, expected)
    after, after_wall = run_program(baseline, expected)
    base = min(float(before["seconds"]), float(after["seconds"]))
    base_wall = min(before_wall, after_wall)
    seconds = float(result["seconds"])
    figures: Figures = {"speedup": base / seconds, "seconds": seconds,
                        "wall_speedup": base_wall / wall, "wall": wall,
                        "baseline_seconds": base}
    return {**figures, **(extra or {})}, result
