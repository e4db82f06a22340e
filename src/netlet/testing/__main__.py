"""``python -m netlet.testing``: run simulation seeds, or replay one with its trace.

    python -m netlet.testing --seeds 0-999          # a thousand seeds, one line each
    python -m netlet.testing --seed 42 --trace      # replay one, printing every event
    python -m netlet.testing --seeds 0-9999 --jobs 4   # the soak (make soak)
    python -m netlet.testing --bank --seeds 0-999   # the bank and its ATMs instead

Exits 1 if any seed found a violation, after printing, for each, the one-line
command that replays it.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import click

from netlet.testing._banksim import BankReport, BankSimConfig, simulate_bank
from netlet.testing._sim import SimConfig, SimReport, simulate

_D = SimConfig()
_B = BankSimConfig()


def _seeds(spec: str) -> list[int]:
    """``"7"``, ``"0-99"`` or ``"1,5,9-12"``."""
    out: list[int] = []
    for part in spec.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first = int(lo)
            last = int(hi) if dash else first
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a seed or a range like 0-99") from None
        if last < first:
            raise click.BadParameter(f"{part!r}: the range ends before it starts")
        out.extend(range(first, last + 1))
    return out


def _run(args: tuple[int, SimConfig | BankSimConfig]) -> SimReport | BankReport:
    seed, config = args
    if isinstance(config, BankSimConfig):
        return simulate_bank(seed, config)
    return simulate(seed, config)


def _reports(seeds: Iterable[int], config: SimConfig | BankSimConfig,
             jobs: int) -> Iterator[SimReport | BankReport]:
    work = [(seed, config) for seed in seeds]
    if jobs <= 1:
        yield from map(_run, work)
        return
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(_run, work, chunksize=8)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seed", type=int, help="One seed (replay it).")
@click.option("--seeds", "seed_spec", default="0-99", show_default=True,
              help="Seeds to run: 0-999, or 1,5,9-12.")
@click.option("--workers", type=click.IntRange(1, 64), default=_D.workers,
              show_default=True)
@click.option("--clients", type=click.IntRange(1, 16), default=_D.clients,
              show_default=True)
@click.option("--tasks", type=click.IntRange(1, 100_000), default=_D.tasks,
              show_default=True, help="Tasks per client.")
@click.option("--chaos", type=click.FloatRange(0.0, 3600.0),
              help=f"Virtual seconds of faults.  [default: {_D.chaos}]")
@click.option("--settle", type=click.FloatRange(0.0, 36000.0),
              help="Virtual seconds every task (with --bank: request) has to end after the "
                   f"calm.  [default: {_D.settle}; with --bank: {_B.settle}]")
@click.option("--retries", type=click.IntRange(0, 100), default=_D.retries,
              show_default=True)
@click.option("--primes", type=click.FloatRange(0.0, 1.0), default=_D.primes,
              show_default=True,
              help="Share of seeds that also run a prime search (checked against pi).")
@click.option("--no-faults", is_flag=True, help="The same runs with no fault (a baseline).")
@click.option("--no-head-crashes", is_flag=True, help="Never kill the head.")
@click.option("--bank", is_flag=True,
              help="Simulate the bank and its ATMs (simulate_bank) instead of a cluster.")
@click.option("--atms", type=click.IntRange(1, 64), default=_B.atms, show_default=True,
              help="With --bank: ATMs at work.")
@click.option("--accounts", type=click.IntRange(2, 1000), default=_B.accounts,
              show_default=True, help="With --bank: customer accounts.")
@click.option("--retry-for", type=click.FloatRange(0.1, 3600.0), default=_B.retry_for,
              show_default=True,
              help="With --bank: seconds an ATM sends one request again before it calls "
                   "its outcome unknown.")
@click.option("--no-bank-crashes", is_flag=True, help="With --bank: never kill the bank.")
@click.option("--trace", is_flag=True, help="Print each run's events.")
@click.option("--jobs", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Processes running seeds side by side.")
def main(seed: int | None, seed_spec: str, workers: int, clients: int, tasks: int,
         chaos: float | None, settle: float | None, retries: int, primes: float,
         no_faults: bool, no_head_crashes: bool, bank: bool, atms: int, accounts: int,
         retry_for: float, no_bank_crashes: bool, trace: bool, jobs: int) -> None:
    """Run seeded simulations of a whole netlet cluster (or, with --bank, of the bank and
    its ATMs) and check their promises."""
    seeds = [seed] if seed is not None else _seeds(seed_spec)
    config: SimConfig | BankSimConfig
    timing: dict[str, Any] = {name: value for name, value in
                              (("chaos", chaos), ("settle", settle)) if value is not None}
    if bank:
        config = BankSimConfig(atms=atms, accounts=accounts, retry_for=retry_for,
                               faults=not no_faults, bank_crashes=not no_bank_crashes,
                               **timing)
    else:
        config = SimConfig(workers=workers, clients=clients, tasks=tasks, retries=retries,
                           primes=primes, faults=not no_faults,
                           head_crashes=not no_head_crashes, **timing)
    failed: list[SimReport | BankReport] = []
    total = 0.0
    for report in _reports(seeds, config, jobs):
        total += report.real_seconds
        if trace:
            click.echo("\n".join(report.trace))
        click.echo(report.summary())
        for v in report.violations:
            click.echo(f"    {v}")
        if not report.ok:
            failed.append(report)
    click.echo(f"{len(seeds)} seed(s), {len(failed)} with violations, "
               f"{total:.1f} s of simulation (pid {os.getpid()})")
    for report in failed:
        click.echo(f"replay: {report.replay}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
