"""``netlet demo``: the tour of the whole system that ``make run`` shows, on embedded defaults.

Four parts, each under a heading: calls to an object in another process; an
embedded cluster (a head here, local worker processes); the prime search on
it with its live view, checked against pi(N); the bank with an ATM swarm and
the audit of its ledger. Then a summary of what this run measured and the
commands that run each part on several machines.

Everything runs on loopback and unix sockets with fresh keys, in a private
temp directory that is removed at the end; every child process is stopped.
Each part has a time limit; the exit status is 1 if any part failed or
overran it, 130 after Ctrl-C.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from netlet.apps.tour._bank import bank as bank_part
from netlet.apps.tour._core import Part, PartResult, Tour, run_part
from netlet.apps.tour._parts import calls, cluster, primes
from netlet.cli._types import Seconds

__all__ = ["PARTS", "demo"]

PARTS = (
    Part("calls", "calls to an object in another process, in every style", calls),
    Part("cluster", "a cluster: an embedded head and local worker processes", cluster),
    Part("primes", "the distributed prime search, checked against pi(N)", primes),
    Part("bank", "a bank, a swarm of ATMs, the audit of its ledger", bank_part),
)

DEFAULT_TIME_LIMIT = 120.0

_ELSEWHERE = {
    "calls": [
        ("A", "netlet keygen cluster.key     # copy it to B, privately"),
        ("A", 'node = netlet.Node(listen="tcp://0.0.0.0:7000", key_file="cluster.key")'),
        ("A", 'node.serve(Account(), "account"); node.wait()'),
        ("B", 'acct = netlet.Node(key_file="cluster.key").proxy("tcp://A:7000", "account")'),
    ],
    "cluster": [
        ("A", "netlet keygen cluster.key     # copy it to every machine, privately"),
        ("A", "netlet head --listen tcp://0.0.0.0:7340 --key-file cluster.key"),
        ("B,C", "netlet worker --join tcp://A:7340 --key-file cluster.key"),
        ("any", 'netlet.Executor("tcp://A:7340", key_file="cluster.key")'),
    ],
    "primes": [
        ("any", "netlet primes --head tcp://A:7340 --key-file cluster.key --end 10**10"),
    ],
    "bank": [
        ("A", "netlet keygen bank.key"),
        ("A", "netlet bank serve --listen tcp://0.0.0.0:7350 --db bank.db --key-file bank.key"),
        ("B", "netlet atm --bank tcp://A:7350 --key-file bank.key     # at the terminal"),
        ("C", "netlet atm --bank tcp://A:7350 --key-file bank.key swarm --atms 64 --seconds 30"),
        ("A", "netlet bank audit --db bank.db"),
    ],
}
"""Per part: (machine, command) to run it on several machines."""


@click.command()
@click.option("--quick", is_flag=True,
              help="A much shorter tour (smaller searches, a two-second swarm): a smoke test.")
@click.option("--part", "only", multiple=True, type=click.Choice([p.name for p in PARTS]),
              help="Run only this part (repeat for several).")
@click.option("--time-limit", type=Seconds(min=0, max=86400, min_open=True),
              default=DEFAULT_TIME_LIMIT, show_default=True,
              help="Seconds each part may take; a part that overruns is stopped and fails.")
@click.option("--dashboard", "dashboard_addr", metavar="HOST:PORT", default=None,
              help="Instead of the tour: keep a cluster, a bank and a slow prime search "
                   "running with the web dashboard here (e.g. 127.0.0.1:8340) until Ctrl-C. "
                   "Needs netlet[web].")
def demo(quick: bool, only: tuple[str, ...], time_limit: float,
         dashboard_addr: str | None) -> None:
    """A tour of netlet on this machine, in under a minute: calls, a cluster, primes, a bank.

    \b
    1. calls: an object served by another process, called in every style
    2. cluster: an embedded head with local worker processes
    3. primes: the distributed prime search with its live view
    4. bank: a bank, a swarm of ATMs for a few seconds, the audit

    Then a summary of what this run measured, and how to run each part on
    several machines. Everything is on loopback with fresh keys in a temp
    directory, removed at the end. Exits 1 if any part fails or overruns
    --time-limit.
    """
    console = Console(width=None if sys.stdout.isatty() else 120)
    _sigterm_as_ctrl_c()
    if dashboard_addr:
        from netlet.apps.tour._watch import watch

        watch(dashboard_addr)
        return
    parts = [p for p in PARTS if not only or p.name in only]
    tmp = Path(tempfile.mkdtemp(prefix="netlet-tour-"))
    tour = Tour(console, tmp, quick=quick)
    results: list[PartResult] = []
    t0 = time.monotonic()
    try:
        for i, part in enumerate(parts, 1):
            console.print()
            console.rule(f"[bold]netlet tour {i}/{len(parts)}: {part.title}")
            result = run_part(tour, part, time_limit)
            results.append(result)
            if not result.ok:
                console.print(f"[bold red]part {part.name} FAILED:[/] {result.error}",
                              soft_wrap=True)
    except KeyboardInterrupt:
        console.print("\n[bold]interrupted[/]: the part is stopped, its processes and files "
                      "removed")
        raise SystemExit(130) from None
    finally:
        tour.close()
        shutil.rmtree(tmp, ignore_errors=True)
    _summary(console, results, time.monotonic() - t0)
    if not all(r.ok for r in results):
        raise SystemExit(1)


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM stops the tour as Ctrl-C does: parts aborted, children stopped, temp removed."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _summary(console: Console, results: list[PartResult], seconds: float) -> None:
    console.print()
    console.rule("[bold]netlet tour: summary")
    table = Table(title="what this run measured", title_justify="left")
    table.add_column("part", style="bold")
    table.add_column("figures")
    table.add_column("time", justify="right")
    table.add_column("result")
    for r in results:
        outcome = "[green]ok[/]" if r.ok else f"[bold red]FAILED[/]: {r.error}"
        table.add_row(r.part.name, "\n".join(r.figures) or "-", f"{r.seconds:.1f} s", outcome)
    table.add_row("total", "", f"{seconds:.1f} s", "", style="dim")
    console.print(table)
    # Plain lines, never wrapped by rich, so that each command can be copied whole.
    console.print("[bold]the same on several machines[/] (A, B, C are hosts; copy each key "
                  "to them privately):", soft_wrap=True)
    for r in results:
        console.print(f"  [bold]{r.part.name}[/]")
        for host, command in _ELSEWHERE[r.part.name]:
            prompt = "$" if command.startswith("netlet ") else ">>>"
            console.print(f"    [dim]{host:>4} {prompt}[/] {command}", soft_wrap=True,
                          highlight=False)
    if shutil.which("netlet") is None:  # make run: the command is in .venv/bin only
        here = Path(sys.executable).parent
        console.print(f"  (netlet is not on your PATH: run `source {here}/activate` first, "
                      "or `pip install .`)", soft_wrap=True, highlight=False)
    console.print("More: README.md, docs/cluster.md, docs/tutorial.md, docs/primes.md, "
                  "docs/bank.md.")
    failed = [r.part.name for r in results if not r.ok]
    if failed:
        console.print(f"[bold red]{len(failed)} of {len(results)} part(s) FAILED:[/] "
                      f"{', '.join(failed)}")
    else:
        console.print(f"[bold green]all {len(results)} part(s) passed[/] in {seconds:.0f} s")
