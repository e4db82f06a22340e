"""What a workload declares, and running it: variants interleaved over repetitions.

A workload module defines ``WORKLOAD = Workload(...)``: its figures (``Metric``), its
variants (``Variant``: a name and a function run in a fresh subprocess), the netlet
variant the ratio columns compare against, the project's targets, and its sizes.

``run_workload`` runs repetition 1 of every variant, then repetition 2, and so on
(the order rotated each time), one variant at a time, each in its own process group
with a hard timeout; the group is killed afterwards whatever happened, so no server
outlives its variant. A variant that fails, times out or is unavailable is not run
again; the report shows the figures of the runs that succeeded, or "n/a" and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench._measure import Figures, Params
from bench.servers import PIN_ENV

__all__ = [
    "Metric",
    "Target",
    "Variant",
    "VariantResult",
    "Workload",
    "WorkloadResult",
    "run_workload",
]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Metric:
    """One figure of a workload, e.g. p50 latency."""

    key: str
    label: str
    better: Literal["lower", "higher"]
    digits: int = 0
    ratio: bool = True
    """Whether the table shows netlet's ratio to each row for this figure."""

    def format(self, value: float) -> str:
        return f"{value:,.{self.digits}f}"


@dataclass(frozen=True)
class Variant:
    """One row: ``func(params)`` runs in its own subprocess and returns ``Figures``."""

    name: str
    func: Callable[[Params], Figures]
    params: Mapping[str, Any] = field(default_factory=dict)
    """Merged over the workload's params for this variant only."""
    netlet: bool = False


@dataclass(frozen=True)
class Target:
    """A goal the project set: ``netlet <op> factor x peer`` on one figure.

    With ``peer=""`` the bound is absolute: ``netlet <op> factor``.
    """

    netlet: str
    peer: str
    metric: str
    op: Literal["<=", "<", ">="]
    factor: float = 1.0
    text: str = ""

    def check(self, netlet_value: float, peer_value: float) -> bool:
        bound = self.factor * peer_value
        if self.op == "<=":
            return netlet_value <= bound
        if self.op == "<":
            return netlet_value < bound
        return netlet_value >= bound


@dataclass(frozen=True)
class Workload:
    id: str
    title: str
    summary: str
    metrics: tuple[Metric, ...]
    variants: tuple[Variant, ...]
    reference: str
    """Name of the netlet variant the ratio columns divide by each row."""
    sizes: Callable[[bool], Params]
    """The workload's params, full size or (``quick=True``) a tenth of it."""
    timeout: Callable[[bool], float]
    """Hard limit in seconds for one run of one variant."""
    targets: tuple[Target, ...] = ()
    pinned: bool = False
    """Whether its variants start ``bench/servers.py`` servers, which ``--pin`` places."""

    def metric(self, key: str) -> Metric:
        return next(m for m in self.metrics if m.key == key)


@dataclass
class VariantResult:
    name: str
    netlet: bool
    runs: list[Figures] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failure: str | None = None
    notes: list[str] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        values = [v for run in self.runs if isinstance(v := run.get(key), int | float)]
        return statistics.median(values) if values else None

    def why_missing(self, key: str) -> str:
        """The reason a figure has no value: the variant's failure or the figure's own."""
        if self.failure:
            return self.failure
        reasons = {str(run[key]) for run in self.runs if isinstance(run.get(key), str)}
        return "; ".join(sorted(reasons)) or "no successful run"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "netlet": self.netlet,
            "runs": self.runs,
            "seconds": [round(s, 3) for s in self.seconds],
            "failure": self.failure,
            "notes": self.notes,
        }


@dataclass
class WorkloadResult:
    workload: Workload
    params: Params
    repeat: int
    variants: list[VariantResult]
    seconds: float = 0.0
    pin: str = "split"

    def variant(self, name: str) -> VariantResult | None:
        return next((v for v in self.variants if v.name == name), None)

    @property
    def reference(self) -> str:
        """The row the ratio columns divide: the workload's reference netlet variant,
        or, when that has no figures, the first netlet variant that has some."""
        ref = self.variant(self.workload.reference)
        if ref is not None and ref.runs:
            return ref.name
        fallback = next((v for v in self.variants if v.netlet and v.runs), None)
        return fallback.name if fallback else self.workload.reference


Progress = Callable[[str], None]


def run_workload(
    workload: Workload,
    *,
    quick: bool,
    repeat: int,
    timeout: float | None = None,
    match: str | None = None,
    pin: str = "split",
    progress: Progress = print,
) -> WorkloadResult:
    params = workload.sizes(quick)
    limit = timeout if timeout is not None else workload.timeout(quick)
    chosen = [v for v in workload.variants if not match or match.lower() in v.name.lower()]
    results = {v.name: VariantResult(v.name, v.netlet) for v in chosen}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"bench-{workload.id}-") as tmp:
        for rep in range(repeat):
            shift = rep % len(chosen) if chosen else 0
            for variant in chosen[shift:] + chosen[:shift]:
                result = results[variant.name]
                if result.failure:
                    continue
                run_params = {**params, **variant.params, "repetition": rep}
                label = f"{workload.id} {rep + 1}/{repeat} {variant.name}"
                outcome, seconds = _run_once(variant, run_params, limit, Path(tmp), label, pin)
                _record(result, outcome, seconds)
                progress(_progress_line(label, result, outcome, seconds))
    return WorkloadResult(
        workload, params, repeat, list(results.values()), time.monotonic() - started, pin
    )


def _record(result: VariantResult, outcome: dict[str, Any], seconds: float) -> None:
    if "figures" in outcome:
        result.runs.append(outcome["figures"])
        result.seconds.append(seconds)
        if note := outcome.get("note"):
            result.notes.append(note)
        return
    reason = outcome.get("unavailable") or outcome.get("error") or "no outcome"
    if result.runs:
        result.notes.append(f"run {len(result.runs) + 1} failed, later runs skipped: {reason}")
        # Keep the figures of the runs that succeeded; say the rest failed.
        return
    result.failure = reason


def _progress_line(label: str, result: VariantResult, outcome: dict[str, Any], s: float) -> str:
    if "figures" in outcome:
        shown = ", ".join(
            f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}=n/a"
            for k, v in outcome["figures"].items()
        )
        return f"  {label:<60} {s:6.1f} s  {shown}"
    return f"  {label:<60} {s:6.1f} s  n/a: {result.failure or result.notes[-1]}"


def _run_once(
    variant: Variant, params: Params, limit: float, tmp: Path, label: str, pin: str
) -> tuple[dict[str, Any], float]:
    """Run ``variant`` once in a new session; always kill its process group after."""
    stem = uuid.uuid4().hex[:12]
    spec_path, outcome_path, log_path = (tmp / f"{stem}.{ext}" for ext in ("spec", "out", "log"))
    spec = {
        "module": variant.func.__module__,
        "func": variant.func.__qualname__,
        "params": params,
        "outcome": str(outcome_path),
        "root": str(ROOT),
    }
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", PIN_ENV: pin}
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench._runner", str(spec_path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc)
    seconds = time.monotonic() - started
    outcome = _read_outcome(outcome_path)
    if outcome is not None:
        if proc.returncode == 3:
            outcome["note"] = f"{label}: client process hung at exit ({_last_line(log_path)})"
        return outcome, seconds
    if timed_out:
        return {"error": f"timed out after {limit:.0f} s"}, seconds
    return {"error": f"exit code {proc.returncode}: {_last_line(log_path)}"}, seconds


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM everything in the variant's session, then SIGKILL whatever is left.

    The runner leads a new session and process group. Most of what it starts stays
    in that group; some peers move their workers to groups of their own (Ray does)
    but never leave the session, so on Linux the session is swept too.
    """
    sid = proc.pid
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if not _signal_session(sid, sig):
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.05)
            if not _session_alive(sid):
                break
        if not _session_alive(sid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (Linux ``/proc``; empty elsewhere)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may contain spaces and parens.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _session_alive(sid: int) -> bool:
    if Path("/proc/self").exists():
        return bool(_session_pids(sid))
    try:
        os.killpg(sid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_session(sid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group and every member of the session; False if none left."""
    sent = False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, sig)
        sent = True
    for pid in _session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            sent = True
    return sent


def _read_outcome(path: Path) -> dict[str, Any] | None:
    try:
        outcome: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return outcome


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"
