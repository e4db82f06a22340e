"""The ATM swarm: many simulated ATMs doing random operations, then a check against the bank.

Each simulated ATM signs a random customer in (one slow PIN check per visit),
does a few random deposits, withdrawals and transfers, signs out, and repeats
until the time is up. Every request is recorded *before* it is sent, so the
swarm always knows which keys it used: when the run ends each one was
acknowledged, refused, or is still unknown (the bank never answered, for
instance because it was killed). The check then settles the unknown keys by
asking the bank (``outcomes``), and verifies that the bank's books match what
the ATMs saw: every acknowledged request applied exactly once (its key
journaled with the same command, and each account's balance equal to the sum
of the requests applied to it), no refused request applied, money neither
made nor destroyed, and the bank's own audit clean.

The swarm's accounts are its own (``swarm-<run>-<n>``), opened through the
operator interface with a deliberately cheap PIN hash: they are synthetic, and
a realistic PIN cost would make sign-ins, not the ledger, the bottleneck.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netlet.apps.bank._atm import BankClient, BankUnavailable, CardSession
from netlet.apps.bank._commands import BankError
from netlet.apps.bank._messages import AuditReport, BankInfo, RequestOutcome
from netlet.apps.bank._pins import hash_pin
from netlet.apps.bank._service import MAX_OUTCOME_BATCH, ServiceError
from netlet.apps.bank._tally import tally
from netlet.errors import ConfigError, NetletError
from netlet.node import Node
from netlet.transport import TLSConfig, find_user_key

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["Swarm", "SwarmConfig", "SwarmOp", "SwarmProgress", "SwarmReport", "run_with_display"]

_SWARM_PIN_COST = 16  # synthetic accounts: see the module docstring
_SETTLE_PATIENCE = 30.0  # seconds the check waits for a bank that is away


@dataclass(frozen=True, slots=True)
class SwarmConfig:
    """How many ATMs, for how long, over how many accounts; amounts in cents."""

    atms: int = 64
    seconds: float = 30.0
    accounts: int = 1000
    grace: float = 20.0
    """After the run, how long a request without an answer keeps being retried."""
    timeout: float = 5.0
    """Seconds one attempt waits for the bank's answer."""
    max_amount: int = 20_000
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.atms <= 4096 or not 2 <= self.accounts <= 1_000_000:
            raise ConfigError("atms must be 1..4096 and accounts 2..1000000")
        if self.seconds <= 0 or self.grace < 0 or self.timeout <= 0 or self.max_amount < 1:
            raise ConfigError("seconds, timeout and max_amount must be positive, grace >= 0")


@dataclass(slots=True)
class SwarmOp:
    """One mutating request and what the ATM saw of it.

    ``status``: ``pending`` while in flight, then ``ok``, ``refused`` or
    ``unknown``; after the check, unknown ones become ``applied`` or ``not-applied``.
    """

    key: str
    kind: str
    account: str
    dst: str
    amount: int
    status: str = "pending"
    latency: float = 0.0
    error: str = ""


@dataclass(frozen=True, slots=True)
class SwarmProgress:
    """A snapshot while the swarm runs; latencies over the most recent answers."""

    elapsed: float
    seconds: float
    answered: int
    refused: int
    unknown: int
    retrying: int
    rate: float
    p50_ms: float
    p99_ms: float
    last_problem: str


@dataclass(frozen=True, slots=True)
class SwarmReport:
    """The outcome of a run and of the check; ``ok`` when no problem was found."""

    seconds: float
    answered: int
    applied: int
    refused: int
    resolved_applied: int
    resolved_not_applied: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    problems: tuple[str, ...]
    bank: BankInfo | None = None
    """What the bank said of itself after the run (``info``)."""
    audit: AuditReport | None = None
    """The bank's audit after the run."""

    @property
    def ok(self) -> bool:
        return not self.problems


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Swarm:
    """``prepare()`` opens the accounts, ``run()`` drives the ATMs, ``verify()`` checks."""

    def __init__(self, address: str, config: SwarmConfig, *, key: bytes | None = None,
                 tls: TLSConfig | None = None) -> None:
        self.config = config
        self.address = address
        fronts = [a.strip() for a in address.split(",") if a.strip()]  # ATM i uses i % n
        if not fronts:
            raise ConfigError("the swarm needs the bank's address")
        self.run_id = secrets.token_hex(3)
        self.prefix = f"swarm-{self.run_id}-"
        self._pin = f"{secrets.randbelow(10**6):06d}"
        if key is None:  # local banks of ours: one node speaks to all with one key
            keys = {find_user_key(front) for front in fronts}
            if len(keys) > 1:
                raise ConfigError("these front-ends have per-user keys of their own; give "
                                  "them and the swarm one --key-file")
            key = keys.pop()
        self._node = Node(key=key, tls=tls, call_timeout=config.timeout)
        self._clients = [BankClient(fronts[i % len(fronts)], node=self._node,
                                    timeout=config.timeout, retry_for=config.grace)
                         for i in range(config.atms)]
        self.ops: list[SwarmOp] = []
        self._recent: collections.deque[float] = collections.deque(maxlen=4000)
        self._latencies: list[list[float]] = [[] for _ in range(config.atms)]
        self._retrying = [False] * config.atms
        self._counts = collections.Counter[str]()
        self._lock = threading.Lock()
        self._started = self._ends = 0.0
        self._stop_new = threading.Event()
        self._running: concurrent.futures.Future[None] | None = None
        self.last_problem = ""

    def account(self, n: int) -> str:
        return f"{self.prefix}{n:06d}"

    # -- preparing --------------------------------------------------------------

    def prepare(self) -> None:
        """Open the swarm's accounts (operator calls, many at once so they commit in groups)."""
        client = self._clients[0]
        pin_hash = hash_pin(self._pin, n=_SWARM_PIN_COST)

        def open_one(n: int) -> None:
            name = self.account(n)
            client.call("open_account", name, f"swarm customer {n}", pin_hash,
                        f"open-{name}", what=f"opening {name}")

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(open_one, range(self.config.accounts)))

    # -- running ------------------------------------------------------------------

    def run(self, on_progress: Callable[[SwarmProgress], None] | None = None,
            interval: float = 0.25) -> None:
        """Run the ATMs for ``seconds``, then let unanswered requests retry for ``grace``."""
        self._started = time.monotonic()
        self._ends = self._started + self.config.seconds
        self._running = asyncio.run_coroutine_threadsafe(self._run_atms(),
                                                         self._node.get_loop())
        while not self._stop_new.wait(max(0.0, min(interval, self._ends - time.monotonic()))):
            if time.monotonic() >= self._ends:
                self._stop_new.set()
            elif on_progress is not None:
                on_progress(self.progress())
        self.join(on_progress, interval)

    def join(self, on_progress: Callable[[SwarmProgress], None] | None = None,
             interval: float = 0.25) -> None:
        """Wait for every ATM to finish its last request (answered, or given up)."""
        running = self._running
        while running is not None:
            try:
                running.result(interval)
                break
            except concurrent.futures.TimeoutError:
                if on_progress is not None:
                    on_progress(self.progress())
        if on_progress is not None:
            on_progress(self.progress())

    def stop(self) -> None:
        """End the run early (Ctrl-C): no new requests; those in flight finish or give up."""
        self._stop_new.set()
        for client in self._clients:
            client.stop.set()

    async def _run_atms(self) -> None:
        await asyncio.gather(*(self._atm(i) for i in range(self.config.atms)))

    async def _atm(self, i: int) -> None:
        rng = random.Random(None if self.config.seed is None else self.config.seed * 7919 + i)
        client = self._clients[i]

        def notice(_: object) -> None:
            self._retrying[i] = True

        client.on_retry = notice
        while not self._stop_new.is_set():
            card = client.card(self.account(rng.randrange(self.config.accounts)), self._pin)
            try:
                await card.sign_in_aio(deadline=self._ends)
            except (BankError, NetletError) as exc:
                self._problem(f"sign-in: {exc}", quiet=isinstance(exc, BankUnavailable))
                continue
            finally:
                self._retrying[i] = False
            for _ in range(rng.randint(1, 8)):
                if self._stop_new.is_set():
                    break
                await self._one(i, card, rng)
            card.sign_out()

    async def _one(self, i: int, card: CardSession, rng: random.Random) -> None:
        top, x = self.config.max_amount, rng.random()
        if x < 0.4:
            op = SwarmOp("", "Deposit", card.account, "", rng.randint(1, top))
        elif x < 0.7:
            op = SwarmOp("", "Withdraw", card.account, "", rng.randint(1, top // 2 or 1))
        else:
            dst = card.account
            while dst == card.account:
                dst = self.account(rng.randrange(self.config.accounts))
            op = SwarmOp("", "Transfer", card.account, dst, rng.randint(1, top // 2 or 1))
        op.key = f"{self.prefix}{i}-{secrets.token_hex(8)}"
        with self._lock:
            self.ops.append(op)  # known before it is sent, whatever happens next
        deadline = self._ends + self.config.grace
        args = (op.dst, op.amount) if op.kind == "Transfer" else (op.amount,)
        t0 = time.perf_counter()
        try:
            await card.mutate_aio(op.kind.lower(), *args, key=op.key, deadline=deadline)
            op.status = "ok"
        except (BankUnavailable, ServiceError) as exc:  # no answer, or none we expect
            op.status, op.error = "unknown", type(exc).__name__
        except BankError as exc:  # a refusal the bank journaled, e.g. InsufficientFunds
            op.status, op.error = "refused", type(exc).__name__
        except Exception as exc:  # unexpected: the check settles it like an unknown one
            op.status, op.error = "unknown", f"{type(exc).__name__}: {exc}"
            self._problem(op.error)
        finally:
            self._retrying[i] = False
        if op.status != "unknown":
            op.latency = time.perf_counter() - t0
            self._latencies[i].append(op.latency)
            self._recent.append(op.latency)
        with self._lock:
            self._counts[op.status] += 1

    def _problem(self, text: str, quiet: bool = False) -> None:
        self.last_problem = text
        if not quiet:
            with self._lock:
                self._counts["problems"] += 1

    def progress(self) -> SwarmProgress:
        """A snapshot for the live display."""
        now = time.monotonic()
        with self._lock:
            counts = dict(self._counts)
        answered = counts.get("ok", 0) + counts.get("refused", 0)
        elapsed = min(now, self._ends) - self._started if self._started else 0.0
        recent = sorted(self._recent)
        return SwarmProgress(
            elapsed=max(0.0, now - self._started if self._started else 0.0),
            seconds=self.config.seconds, answered=answered, refused=counts.get("refused", 0),
            unknown=counts.get("unknown", 0), retrying=sum(self._retrying),
            rate=answered / elapsed if elapsed > 0 else 0.0,
            p50_ms=_percentile(recent, 0.5) * 1e3, p99_ms=_percentile(recent, 0.99) * 1e3,
            last_problem=self.last_problem)

    # -- checking -------------------------------------------------------------------

    def verify(self) -> SwarmReport:
        """Settle unknown keys with the bank and check its books against what the ATMs saw."""
        client = self._clients[0]
        client.stop.clear()
        client.retry_for = max(self.config.grace, _SETTLE_PATIENCE)
        ops = list(self.ops)
        outcomes: dict[str, RequestOutcome | None] = {}
        for start in range(0, len(ops), MAX_OUTCOME_BATCH):
            batch = [op.key for op in ops[start:start + MAX_OUTCOME_BATCH]]
            outcomes.update(zip(batch, client.outcomes(batch), strict=True))
        t = tally(ops, outcomes)
        for op in ops:  # settled now: each unknown one was applied, or for good was not
            if op.status in ("unknown", "pending") and op.key in t.done:
                op.status = "applied" if t.done[op.key] else "not-applied"
        t.balances({a.account: a.balance for a in client.accounts(self.prefix)},
                   (self.account(n) for n in range(self.config.accounts)))
        audit = client.audit()
        if not audit.ok:
            t.problems.extend(f"audit: {v}" for v in audit.violations)
        return self._report(t.problems, t.applied, t.unknown_applied, t.unknown_not_applied,
                            client.info(), audit)

    def _report(self, problems: list[str], applied: int, resolved_yes: int, resolved_no: int,
                bank: BankInfo, audit: AuditReport) -> SwarmReport:
        latencies = sorted(x for per_atm in self._latencies for x in per_atm)
        refused = sum(1 for op in self.ops if op.status == "refused")
        return SwarmReport(
            seconds=self.config.seconds, answered=len(latencies), applied=applied,
            refused=refused, resolved_applied=resolved_yes, resolved_not_applied=resolved_no,
            ops_per_s=len(latencies) / self.config.seconds,
            p50_ms=_percentile(latencies, 0.5) * 1e3, p99_ms=_percentile(latencies, 0.99) * 1e3,
            max_ms=(latencies[-1] * 1e3 if latencies else 0.0), problems=tuple(problems),
            bank=bank, audit=audit)

    def summary(self, r: SwarmReport) -> list[str]:
        """The report as lines: six that always appear, then one per problem."""
        info = r.bank
        batch = (f"bank: {info.commands} commands in {info.commits} commits (mean batch "
                 f"{info.mean_batch_size:.1f}) since it started" if info is not None else
                 "bank: no commit statistics")
        verdict = ("check OK: every acknowledged request applied exactly once, no refused one "
                   "applied, money adds up, audit clean" if r.ok else
                   f"check FAILED: {len(r.problems)} problem(s)")
        return [
            f"swarm {self.run_id}: {self.config.atms} ATMs, {r.seconds:g} s, "
            f"{self.config.accounts} accounts, bank {self.address}",
            f"answered: {r.answered} ({r.applied} applied, {r.refused} refused), "
            f"{r.ops_per_s:.0f} ops/s",
            f"latency: p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, max {r.max_ms:.1f} ms",
            f"unknown at the end, settled with the bank: {r.resolved_applied} applied, "
            f"{r.resolved_not_applied} not applied",
            batch, verdict, *(f"  {problem}" for problem in r.problems[:50])]

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._node.close()


# -- the display ----------------------------------------------------------------------


def run_with_display(sw: Swarm, console: Console, *, plain: bool) -> None:
    """Run ``sw`` with live progress (a rich table, or a line a second); Ctrl-C stops it."""
    from rich.live import Live  # the display only: importing the package stays light

    last = [0.0]

    def line(p: SwarmProgress) -> None:
        if p.elapsed - last[0] >= 1.0:
            last[0] = p.elapsed
            console.print(f"progress t={p.elapsed:.1f}s answered={p.answered} "
                          f"refused={p.refused} unknown={p.unknown} retrying={p.retrying} "
                          f"rate={p.rate:.0f}/s p50={p.p50_ms:.1f}ms p99={p.p99_ms:.1f}ms",
                          highlight=False, soft_wrap=True)

    try:
        if plain:
            sw.run(line)
            return
        with Live(_progress_table(sw.progress()), console=console, refresh_per_second=4) as live:
            sw.run(lambda p: live.update(_progress_table(p)))
    except KeyboardInterrupt:
        console.print("stopping: no new requests; those in flight finish or give up")
        sw.stop()
        sw.join()


def _progress_table(p: SwarmProgress) -> Table:
    from rich.table import Table

    table = Table(title=f"ATM swarm: {min(p.elapsed, p.seconds):.1f} / {p.seconds:.0f} s",
                  show_header=False)
    table.add_column(justify="right", style="bold")
    table.add_column()
    done = min(1.0, p.elapsed / p.seconds) if p.seconds else 1.0
    bar = int(40 * done)
    table.add_row("progress", f"[green]{'#' * bar}[/]{'.' * (40 - bar)}")
    table.add_row("answered", f"{p.answered:,} ({p.refused:,} refused)")
    table.add_row("throughput", f"{p.rate:,.0f} ops/s")
    table.add_row("latency", f"p50 {p.p50_ms:.1f} ms, p99 {p.p99_ms:.1f} ms (recent)")
    state = "[red]bank not answering[/]" if p.retrying else "[green]bank answering[/]"
    table.add_row("ATMs retrying", f"{p.retrying} {state}")
    table.add_row("outcome unknown", str(p.unknown))
    if p.last_problem:
        table.add_row("last problem", p.last_problem[:80])
    return table
