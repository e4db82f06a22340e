"""``netlet primes``: count (and list) the primes in a range on a cluster, with a live view.

Without ``--head`` it starts an embedded cluster (a head in this process and
``--workers`` local worker processes); with ``--head`` it uses a running
cluster, whose workers may join and leave while it runs. The live view (on
stderr, when it is a terminal) shows the bar, primes found, numbers checked
per second and each node's share; the summary goes to stdout, as a table or,
with ``--json``, as one JSON object.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
from click.core import ParameterSource

from netlet.apps.primes._coordinator import (
    PrimeSearch,
    Progress,
    SearchConfig,
    Summary,
    check_state,
)
from netlet.apps.primes._methods import METHODS
from netlet.cli._dashboard import check_dashboard_options, dashboard_options, start_dashboard
from netlet.cluster import Cluster, Executor, usable_cpus
from netlet.errors import ConfigError, NetletError
from netlet.transport import find_user_key, load_key

if TYPE_CHECKING:
    from rich import progress as rp
    from rich.console import Console, Group
    from rich.table import Table

__all__ = ["primes"]

_NUMBER = re.compile(
    r"^(?:(\d+(?:_\d+)*)\s*\*(?!\*)\s*)?(\d+(?:_\d+)*(?:\.\d+)?)\s*"
    r"(?:(?:\*\*|\^)\s*(\d+)|[eE](\d+))?$")


class _Number(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A whole number: ``1000000``, ``1_000_000``, ``10**9``, ``10^9``, ``1e9``,
    ``1.5e6``, ``5*10**7``; a form whose value is not whole (``1.5``) is refused."""

    name = "N"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value)
        sign = -1 if text.strip().startswith("-") else 1
        m = _NUMBER.match(text.strip().lstrip("-").strip())
        if m is None:
            self.fail(f"{text!r} is not a whole number (write 1000000, 1_000_000, 10**6, "
                      "1e6, 1.5e6 or 5*10**6)", param, ctx)
        factor, base, power, exponent = m.groups()
        raised = power or exponent
        too_long = raised is not None and len(raised) > 3
        if too_long or _digits(factor, base, power, exponent) > _MOST_DIGITS:
            self.fail(f"{text!r} is far too large", param, ctx)
        number = Fraction(base.replace("_", ""))
        if power is not None:
            number = number ** int(power)
        elif exponent is not None:
            number = number * 10 ** int(exponent)
        number *= int(factor or 1)
        if number.denominator != 1:
            self.fail(f"{text!r} is not a whole number", param, ctx)
        return sign * int(number)


_MOST_DIGITS = 100
"""Numbers written with more digits, or whose value would have more, are refused before
they are computed (the largest range end is 10**18)."""


def _digits(factor: str | None, base: str, power: str | None, exponent: str | None) -> int:
    """An upper bound on the digits of the value, found without computing it."""
    written = (base + (factor or "")).replace("_", "")
    whole = base.replace("_", "").partition(".")[0].lstrip("0")
    digits = len(whole) * int(power) if power is not None else len(whole)
    digits += int(exponent or 0) + len((factor or "").replace("_", "").lstrip("0"))
    return max(digits, len(written))  # (every digit written is read, zeros too)


NUMBER = _Number()


@click.command()
@click.option("--start", type=NUMBER, default=0, show_default=True,
              help="First number of the range [start, end).")
@click.option("--end", type=NUMBER, required=True,
              help="End of the range (not included): --end 10**9 counts pi(10^9).")
@click.option("--method", type=click.Choice(sorted(METHODS)), default="sieve",
              show_default=True,
              help="sieve: segmented sieve of Eratosthenes (numpy); naive: trial division.")
@click.option("--workers", "-w", type=click.IntRange(1, 1024), default=None,
              help="Local worker processes of the embedded cluster [default: the CPUs this "
                   "process may use]. Not with --head.")
@click.option("--head", "head_addr", default=None, envvar="NETLET_HEAD", show_envvar=True,
              help="Use the running cluster at this address (see `netlet head`).")
@click.option("--key-file", type=click.Path(dir_okay=False), default=None,
              envvar="NETLET_KEY_FILE", show_envvar=True,
              help="The cluster key, for a head beyond loopback (with --head).")
@click.option("--chunk", type=NUMBER, default=None,
              help="Numbers per chunk of work [default: by method and worker count].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the primes to this file, ascending, one per line.")
@click.option("--resume", is_flag=True,
              help="Continue the unfinished run of this same search (after a crash or Ctrl-C).")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The state file [default: .netlet-primes-<hash>.db here].")
@click.option("--keep-state", is_flag=True, help="Keep the state file after a successful run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@dashboard_options
def primes(start: int, end: int, method: str, workers: int | None, head_addr: str | None,
           key_file: str | None, chunk: int | None, out: Path | None, resume: bool,
           state: Path | None, keep_state: bool, as_json: bool, dashboard_addr: str | None,
           dashboard_token: str | None, dashboard_control: bool) -> None:
    """Count the primes in [start, end) on a cluster, and optionally list them.

    Without --head it runs an embedded cluster of --workers local processes.
    With --head it uses a running cluster: `netlet worker --join ADDR` on any
    machine, even while this runs, adds workers that take a share. A worker that
    dies loses nothing: its chunks go to another. Finished chunks are recorded
    in a state file, so after a crash the same command with --resume goes on
    where it stopped. The answer is checked against known values of pi(N).

    Examples: `netlet primes --end 10**9`, `netlet primes --method naive --end
    300000 --workers 2`, `netlet primes --head tcp://10.0.0.5:7340 --end 10**10`.
    """
    check_dashboard_options(dashboard_addr, dashboard_control)
    source = click.get_current_context().get_parameter_source
    if workers is not None and source("head_addr") == ParameterSource.ENVIRONMENT:
        head_addr = None  # --workers asks for local workers: $NETLET_HEAD steps aside
    if head_addr is None and source("key_file") == ParameterSource.ENVIRONMENT:
        key_file = None
    if head_addr is not None and workers is not None:
        raise click.UsageError("--workers starts local workers; with --head the cluster's "
                               "own workers do the work")
    if key_file is not None and head_addr is None:
        raise click.UsageError("--key-file is for a running cluster: give --head too")
    if out is not None and state is not None and os.path.realpath(out) == os.path.realpath(state):
        raise click.UsageError("--state and --out name the same file: the primes would be "
                               "written into the state, and the state is removed at the end")
    config = SearchConfig(start, end, method, chunk, out=out, state=state, resume=resume,
                          keep_state=keep_state)
    if method == "sieve" and head_addr is None and not _have_numpy():
        raise ConfigError("the sieve method needs numpy: pip install 'netlet[numpy]' "
                          "(or use --method naive)")
    check_state(config)
    afresh = resume and not config.state_path().exists()
    executor: Executor | None = None
    cluster: Cluster | None = None
    board: Any = None
    interrupted = False
    # Local workers start with one BLAS thread each, also those started to replace one.
    with _one_blas_thread() if head_addr is None else contextlib.nullcontext():
        try:
            t0 = time.monotonic()
            executor, cluster = _connect(head_addr, key_file, workers)
            err = _stderr()  # imports rich (~15 ms) while the workers start
            if afresh:
                err.print(f"nothing to resume ({config.state_path()} does not exist): "
                          "starting from the beginning", soft_wrap=True)
            search = PrimeSearch(cluster, config,
                                 workers=None if head_addr else _local_workers(workers),
                                 clock=cluster.node.config.clock)
            if executor is not None:
                # Embedded workers load the method (numpy for the sieve) before the search
                # instead of in their first chunk: the first to join while the others still
                # start, then any the first round missed, once all have joined.
                search.warm_up(rounds=1)
                _wait_for_workers(cluster, _local_workers(workers))
                search.warm_up()
            startup = time.monotonic() - t0
            if dashboard_addr:
                board = _dashboard(dashboard_addr, search, executor, head_addr, key_file,
                                   dashboard_token, dashboard_control)
            summary = _run(search, err)
        except KeyboardInterrupt:
            interrupted = True
            _stderr().print(f"interrupted: {_kept(config.state_path())}", soft_wrap=True)
            raise SystemExit(130) from None
        except (ConfigError, click.ClickException):
            raise
        except Exception as e:
            where = "; ".join(getattr(e, "__notes__", ()))
            raise click.ClickException(
                f"the search stopped: {type(e).__name__}: {e}" + (f" ({where})" if where else "")
                + f". Fix the cause; {_kept(config.state_path())}") from e
        finally:
            if board is not None:
                board.stop()
            if executor is not None and interrupted:
                executor.terminate_workers()  # now: a running chunk may take minutes
            elif executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
            elif cluster is not None:
                cluster.close()
    if as_json:
        print(json.dumps({**summary.as_dict(), "head": head_addr,
                          "startup_seconds": round(startup, 6)}))
    else:
        _print_summary(summary, startup)
    if summary.matches_known is False:
        raise click.ClickException(f"{summary.count} primes differ from the known "
                                   f"pi({summary.end}) = {summary.known_pi}")


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True)


_BLAS_THREADS: Final = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Local workers get one BLAS thread each (unless the user chose otherwise).

    The sieve uses no BLAS, but numpy's OpenBLAS starts a thread per core at
    import, and they spin ~50 ms of CPU each: on the cores the workers are
    about to compute on, during their first chunks. Workers inherit this
    process's environment when they start; it is restored on leaving.
    """
    saved = {name: os.environ.get(name) for name in _BLAS_THREADS}
    for name in _BLAS_THREADS:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _have_numpy() -> bool:
    """Whether the local workers can import numpy; found, not imported (that costs ~40 ms)."""
    try:
        return importlib.util.find_spec("numpy") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["numpy"] is None
        return False


def _dashboard(addr: str, search: PrimeSearch, executor: Executor | None,
               head_addr: str | None, key_file: str | None, token: str | None,
               control: bool) -> Any:
    """The search's dashboard: its page, and the cluster's (embedded or remote)."""
    from netlet.apps.primes._dashboard import PrimesProvider
    from netlet.web import LocalHead, RemoteHead

    key = load_key(key_file) if key_file is not None else None
    head: Any = None
    if executor is not None and executor.head is not None:
        head = LocalHead(executor.head)
    elif head_addr is not None:
        head = RemoteHead(head_addr, key=key or find_user_key(head_addr))
    return start_dashboard(addr, head=head, providers=[PrimesProvider(search)], token=token,
                           key=key, control=control, title="netlet primes")


def _local_workers(workers: int | None) -> int:
    return workers or usable_cpus()


def _connect(head_addr: str | None, key_file: str | None,
             workers: int | None) -> tuple[Executor | None, Cluster]:
    if head_addr is None:
        executor = Executor(max_workers=_local_workers(workers))
        return executor, executor.cluster
    # The key is read here and passed as bytes: Cluster(key_file=...) drops it (see
    # netlet.node._node._make_config, which lets the key=None it is also given win).
    key = load_key(key_file) if key_file is not None else None
    try:
        return None, Cluster(head_addr, key=key)
    except ConfigError as e:
        raise click.ClickException(f"cannot use the head at {head_addr}: {e}") from None
    except (NetletError, OSError) as e:
        raise click.ClickException(f"cannot reach the head at {head_addr}: {e}") from None


def _wait_for_workers(cluster: Cluster, n: int, timeout: float = 15.0) -> None:
    """Let the embedded workers join before the clock starts (the search works without)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = cluster.status()["nodes"]
        if sum(1 for node in nodes if node["role"] == "worker" and node["alive"]) >= n:
            return
        time.sleep(0.02)


def _kept(state: Path) -> str:
    """Where the finished chunks are, or that none were recorded (then no file exists)."""
    if state.exists():
        return (f"the finished chunks are kept in {state}: run the same command with "
                "--resume to go on")
    return ("no finished chunk was recorded, so there is nothing to resume: run the same "
            "command again")


# --- the live view and the summary ------------------------------------------------------


def _run(search: PrimeSearch, err: Console) -> Summary:
    if not err.is_terminal:
        return search.run()
    from rich.live import Live  # only for the live view: ~20 ms of imports otherwise spared

    view = _LiveView(search, err)
    with Live(view.render(), console=err, refresh_per_second=8, transient=True) as live:
        def show(p: Progress) -> None:
            view.update(p)
            live.update(view.render())

        return search.run(show)


class _LiveView:
    """The bar, primes found, the rate and each node's share, redrawn as chunks finish."""

    def __init__(self, search: PrimeSearch, console: Console) -> None:
        from rich import progress as rp

        cfg = search.config
        self.bar: rp.Progress = rp.Progress(
            rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), rp.TaskProgressColumn(),
            rp.TextColumn("[green]{task.fields[primes]}[/] primes"),
            rp.TextColumn("[cyan]{task.fields[rate]}[/]"),
            rp.TimeElapsedColumn(), rp.TextColumn("eta"), rp.TimeRemainingColumn(),
            console=console)
        self.task = self.bar.add_task(f"{cfg.method} [{cfg.start:,}, {cfg.end:,})",
                                      total=max(1, cfg.end - cfg.start), primes="0", rate="")
        self.latest: Progress | None = None

    def update(self, p: Progress) -> None:
        self.latest = p
        self.bar.update(self.task, completed=p.numbers_done, primes=f"{p.primes:,}",
                        rate=f"{_si(p.rate)} numbers/s")

    def render(self) -> Group:
        from rich.console import Group

        p = self.latest
        if p is None:
            return Group(self.bar, "waiting for workers...")
        return Group(self.bar, f"chunks {p.chunks_done:,}/{p.chunks_total:,} of {p.chunk:,} "
                               f"numbers, {p.workers} worker(s)", _nodes_table(p))


def _nodes_table(p: Progress) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("node", "chunks", "numbers", "primes", "busy", "share"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for n in p.nodes:
        table.add_row(n.node, f"{n.chunks:,}", f"{n.numbers:,}", f"{n.primes:,}",
                      f"{n.seconds:.2f} s", f"{n.share:6.1%}")
    return table


def _si(x: float) -> str:
    for factor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= factor:
            return f"{x / factor:.2f} {unit}"
    return f"{x:.0f}"


def _print_summary(s: Summary, startup: float) -> None:
    from rich.console import Console

    console = Console()
    check = ""
    if s.matches_known is not None:
        check = (" [green]= the known pi(N)[/]" if s.matches_known
                 else f" [bold red]!= the known pi(N) = {s.known_pi:,}[/]")
    console.print(f"[bold]{s.count:,}[/] primes in [{s.start:,}, {s.end:,}) "
                  f"by {s.method}{check}", soft_wrap=True)
    resumed = f", {s.chunks_resumed:,} resumed from the state file" if s.chunks_resumed else ""
    console.print(f"{s.elapsed:.3f} s (+{startup:.2f} s starting the cluster), "
                  f"{_si(s.rate)} numbers/s, {_si(s.primes_rate)} primes/s; "
                  f"{s.chunks_total:,} chunks of {s.chunk:,}{resumed}; {s.workers} worker(s)",
                  soft_wrap=True)
    if s.out is not None:
        console.print(f"primes written to {s.out}")
    if s.state is not None:
        console.print(f"state kept in {s.state}")
    console.print(_nodes_table(s))
