"""Tables of results: on the terminal (rich), in ``latest.md`` and in ``latest.json``.

Each workload gets one table: a row per variant with the median of its runs, and for
each figure marked ``ratio`` a column "netlet / row" that divides the reference
netlet variant's figure by that row's, with the direction that is better stated in
the caption. Under the table, one line per target: met, NOT met or n/a, and the value.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench._harness import ROOT, Target, VariantResult, Workload, WorkloadResult

__all__ = ["TargetOutcome", "machine_info", "print_workload", "write_results"]

PLACEMENT = {
    "split": "client pinned to one CPU, bench server to another",
    "same": "client and bench server pinned to the same CPU",
    "none": "left to the scheduler",
}
"""How ``--pin`` places the processes of variants that use ``bench/servers.py``; the
workers Ray, Dask and ProcessPoolExecutor start are never pinned (nor their clients)."""

_PACKAGES = ("netlet", "msgpack", "pyro5", "serpent", "ray", "dask", "distributed", "numpy")


def machine_info() -> dict[str, Any]:
    versions: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": commit,
        "packages": versions,
    }


@dataclass(frozen=True)
class TargetOutcome:
    text: str
    status: str
    """"met", "NOT met" or "n/a"."""
    detail: str

    def line(self) -> str:
        return f"target: {self.text} -> {self.status} ({self.detail})"


def _target_text(t: Target, w: Workload) -> str:
    if t.text:
        return t.text
    label = w.metric(t.metric).label
    if not t.peer:
        return f"{t.netlet} {label} {t.op} {t.factor:g}"
    factor = "" if t.factor == 1 else f"{t.factor:g}x "
    return f"{t.netlet} {label} {t.op} {factor}{t.peer} {label}"


def evaluate(result: WorkloadResult) -> list[TargetOutcome]:
    w = result.workload
    outcomes = []
    for t in w.targets:
        text = _target_text(t, w)
        mine, peer = result.variant(t.netlet), result.variant(t.peer or t.netlet)
        if mine is None or peer is None:
            outcomes.append(TargetOutcome(text, "n/a", "variant not run"))
            continue
        a, b = mine.median(t.metric), peer.median(t.metric)
        if a is None or b is None:
            missing = mine if a is None else peer
            why = f"{missing.name} n/a: {missing.why_missing(t.metric)}"
            outcomes.append(TargetOutcome(text, "n/a", why))
            continue
        m = w.metric(t.metric)
        if not t.peer:  # an absolute bound
            status = "met" if t.check(a, 1.0) else "NOT met"
            outcomes.append(TargetOutcome(text, status, f"{m.format(a)} {m.label}; needs "
                                          f"{t.op} {t.factor:g}"))
            continue
        ratio = a / b if b else float("inf")
        detail = (
            f"{m.format(a)} vs {m.format(b)} {m.label} = {ratio:.2f}x; needs {t.op} {t.factor:.2f}x"
        )
        outcomes.append(TargetOutcome(text, "met" if t.check(a, b) else "NOT met", detail))
    return outcomes


def _ratio(result: WorkloadResult, row: VariantResult, key: str) -> str:
    ref = result.variant(result.reference)
    a = ref.median(key) if ref else None
    b = row.median(key)
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def _caption(result: WorkloadResult) -> str:
    w = result.workload
    parts = []
    for m in w.metrics:
        if m.ratio:
            side = "< 1" if m.better == "lower" else "> 1"
            parts.append(f"{m.label}: {m.better} is better, so {side} means netlet is ahead")
    ref = f'"{result.reference}"'
    if result.reference != w.reference:
        ref += f' (standing in for "{w.reference}", which has no figures)'
    return f"ratio columns: {ref} / the row, medians of {result.repeat} runs; " + "; ".join(parts)


def _cells(result: WorkloadResult, row: VariantResult) -> list[str]:
    cells: list[str] = []
    for m in result.workload.metrics:
        value = row.median(m.key)
        cells.append("n/a" if value is None else m.format(value))
    for m in result.workload.metrics:
        if m.ratio:
            cells.append(_ratio(result, row, m.key))
    return cells


def _note(result: WorkloadResult, row: VariantResult) -> str:
    if row.failure:
        return f"n/a: {row.failure}"
    notes = []
    for m in result.workload.metrics:
        if row.median(m.key) is None:
            notes.append(f"{m.label} n/a: {row.why_missing(m.key)}")
    notes.extend(row.notes)
    return "; ".join(notes)


def _headers(w: Workload) -> list[str]:
    heads = ["variant", "runs", *(m.label for m in w.metrics)]
    heads += [f"netlet/row {m.label}" for m in w.metrics if m.ratio]
    return heads


def _title(result: WorkloadResult) -> str:
    w = result.workload
    return f"{w.id}: {w.title}"


def print_workload(result: WorkloadResult, console: Console) -> None:
    w = result.workload
    table = Table(title=_title(result), caption=_caption(result), caption_justify="left")
    for i, head in enumerate(_headers(w)):
        table.add_column(head, justify="right" if i else "left", no_wrap=True)
    for row in result.variants:
        style = "bold" if row.name == result.reference else None
        table.add_row(row.name, str(len(row.runs)), *_cells(result, row), style=style)
    console.print()
    console.print(f"[dim]{w.summary} {_placement(result)}[/dim]")
    console.print(table)
    for row in result.variants:
        if note := _note(result, row):
            console.print(f"  note: {row.name}: {note}", highlight=False, markup=False)
    for outcome in evaluate(result):
        colour = {"met": "green", "NOT met": "red"}.get(outcome.status, "yellow")
        console.print(f"[{colour}]{outcome.line()}[/{colour}]", highlight=False)


def _placement(result: WorkloadResult) -> str:
    if result.workload.pinned:
        return f"Placement: {PLACEMENT[result.pin]}."
    return "Placement: every process left to the scheduler (--pin applies to bench servers)."


def _markdown(results: list[WorkloadResult], machine: dict[str, Any], argv: list[str]) -> str:
    pk = machine["packages"]
    lines = [
        "# netlet benchmark results",
        "",
        f"- date: {machine['date']}; command: `{' '.join(['python -m bench', *argv])}`",
        f"- cores: {machine['cores']}; python {machine['python']}; {machine['platform']}",
        f"- load average at start: {machine['loadavg_at_start']}; commit {machine['git_commit']}",
        f"- placement (--pin {machine.get('pin')}): {PLACEMENT.get(machine.get('pin', ''), '')}",
        "- " + ", ".join(f"{k} {v}" for k, v in pk.items()),
        "",
    ]
    for result in results:
        w = result.workload
        lines += [
            f"## {_title(result)}",
            "",
            f"{w.summary} {_placement(result)}",
            "",
        ]
        heads = _headers(w)
        lines.append("| " + " | ".join(heads) + " |")
        lines.append("|---|" + "---:|" * (len(heads) - 1))
        for row in result.variants:
            name = f"**{row.name}**" if row.name == result.reference else row.name
            cells = [name, str(len(row.runs)), *_cells(result, row)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", _caption(result) + ".", ""]
        lines += [
            f"- note: {r.name}: {note}" for r in result.variants if (note := _note(result, r))
        ]
        lines += [f"- {o.line()}" for o in evaluate(result)]
        lines += ["", f"({result.seconds:.0f} s for this workload)", ""]
    return "\n".join(lines)


def _json(results: list[WorkloadResult], machine: dict[str, Any], argv: list[str]) -> str:
    doc: dict[str, Any] = {"machine": machine, "argv": argv, "workloads": {}}
    for result in results:
        w = result.workload
        doc["workloads"][w.id] = {
            "title": w.title,
            "params": result.params,
            "repeat": result.repeat,
            "pin": result.pin,
            "seconds": round(result.seconds, 1),
            "reference": result.reference,
            "metrics": [{"key": m.key, "label": m.label, "better": m.better} for m in w.metrics],
            "variants": [
                {
                    **row.to_json(),
                    "median": {m.key: row.median(m.key) for m in w.metrics},
                    "why_missing": {
                        m.key: row.why_missing(m.key)
                        for m in w.metrics
                        if row.median(m.key) is None
                    },
                }
                for row in result.variants
            ],
            "targets": [o.__dict__ for o in evaluate(result)],
        }
    return json.dumps(doc, indent=2)


def write_results(
    results: list[WorkloadResult], machine: dict[str, Any], argv: list[str], out: Path
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("latest.md", _markdown(results, machine, argv)),
        ("latest.json", _json(results, machine, argv)),
    ):
        path = out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(path)
        written.append(path)
    return written
