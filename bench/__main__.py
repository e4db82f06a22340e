"""``python -m bench``: run the workloads, print a table each, write bench/results/latest.*.

Workloads are found, not listed: every module of this package whose name does not
start with an underscore and that defines ``WORKLOAD`` is one. Adding a workload is
adding its module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from rich.console import Console

import bench
from bench._harness import ROOT, Workload, WorkloadResult, run_workload
from bench._report import machine_info, print_workload, write_results

__all__ = ["discover", "main"]

_ORDER = "WCBP"


def discover() -> list[Workload]:
    found = []
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name.startswith("_") or info.name == "servers":
            continue
        workload = getattr(importlib.import_module(f"bench.{info.name}"), "WORKLOAD", None)
        if isinstance(workload, Workload):
            found.append(workload)

    def key(w: Workload) -> tuple[int, int, str]:
        kind = _ORDER.find(w.id[:1])
        digits = "".join(c for c in w.id if c.isdigit())
        return (kind if kind >= 0 else len(_ORDER), int(digits or 0), w.id)

    return sorted(found, key=key)


def _parser(ids: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="netlet beside its peers; one table per workload (see BENCHMARKS.md).",
    )
    p.add_argument("--quick", action="store_true", help="a tenth of each size (smoke check)")
    p.add_argument("--only", help=f"comma-separated workload ids, from {','.join(ids)}")
    p.add_argument("--repeat", type=int, help="runs per variant (default 5, quick 3)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results directory")
    p.add_argument("--match", help="only variants whose name contains this (case-insensitive)")
    p.add_argument("--timeout", type=float, help="seconds per variant run (default: per workload)")
    p.add_argument(
        "--pin",
        choices=("split", "same", "none"),
        default="split",
        help="CPUs of client and bench server: one each (default), one for both, or free",
    )
    p.add_argument("--list", action="store_true", help="list workloads and variants, then exit")
    return p


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _compile_netlet() -> None:
    """Bytecode for netlet, as an installed wheel has: cold starts must not time compiling."""
    import compileall

    import netlet

    compileall.compile_dir(Path(netlet.__file__).parent, quiet=2)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    workloads = discover()
    ids = [w.id for w in workloads]
    args = _parser(ids).parse_args(argv)
    if args.only:
        wanted = [s.strip().upper() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {i.upper() for i in ids})
        if unknown:
            _parser(ids).error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(ids)}")
        workloads = [w for w in workloads if w.id.upper() in wanted]
    if args.list:
        for w in workloads:
            print(f"{w.id}: {w.title}")
            for v in w.variants:
                print(f"    {v.name}")
        return 0
    repeat = args.repeat or (3 if args.quick else 5)
    console = Console()
    if not console.is_terminal:  # make, CI, a pipe: wide enough for every column
        console = Console(width=max(console.width, 150))
    signal.signal(signal.SIGTERM, _sigterm)
    _compile_netlet()
    machine = {**machine_info(), "pin": args.pin}
    console.print(
        f"netlet bench: {machine['cores']} cores, python {machine['python']}, "
        f"{'quick, ' if args.quick else ''}{repeat} runs per variant, --pin {args.pin}, "
        f"load {machine['loadavg_at_start']}",
        highlight=False,
    )
    results: list[WorkloadResult] = []
    started = time.monotonic()
    try:
        for w in workloads:
            console.print(f"[bold]{w.id}[/bold] {w.title}", highlight=False)
            result = run_workload(
                w,
                quick=args.quick,
                repeat=repeat,
                timeout=args.timeout,
                match=args.match,
                pin=args.pin,
                progress=lambda line: console.print(line, highlight=False, markup=False),
            )
            results.append(result)
            print_workload(result, console)
            write_results(results, machine, argv, args.out)
    except KeyboardInterrupt:
        console.print("[red]interrupted; the variant running was stopped[/red]")
        if results:
            write_results(results, machine, argv, args.out)
        return 130
    paths = write_results(results, machine, argv, args.out) if results else []
    console.print(
        f"\n{time.monotonic() - started:.0f} s; wrote {', '.join(str(p) for p in paths)}",
        highlight=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
