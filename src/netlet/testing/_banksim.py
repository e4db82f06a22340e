"""``simulate_bank(seed)``: the bank and its ATMs in one process, on virtual time, under
faults the seed chooses; the same seed gives the same run, event for event.

The bank is the real one: its ``BankService`` and SQLite ``Ledger`` (made to
run on the loop: ``_bankparts``), served on a node at a ``mem://`` address.
ATMs are simulated processes, each with a real ``BankClient`` on its node:
they sign customers in and make deposits, withdrawals and transfers under keys
drawn from the seed, recording each request before it is sent.

A run has the three acts of the cluster's (``_sim``). *Chaos*: while the ATMs
work, the network delays, reorders, duplicates and resets frames, processes
are partitioned and healed, ATMs are killed mid-request (their request stays
unknown) and new ones start, the bank is killed (``kill -9``: it sends nothing
more) and restarted from its SQLite file, at a random moment or right after
its next commit (before that request's answer leaves), and the clock jumps or
its wall time steps. *Calm*: the faults stop, the bank is up, the ATMs take no new customer.
*Settle* (at most ``settle`` virtual seconds): every request in flight must end.
Then a fresh operator client asks the bank the outcome of every key (which
settles a key it never saw as not applied) and checks the books against what
the ATMs saw (``_bankcheck``).
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass

from netlet.apps.bank import (
    SERVICE_NAME,
    BankClient,
    BankService,
    Deposit,
    OpenAccount,
    hash_pin,
)
from netlet.apps.bank._messages import (
    AccountInfo,
    AuditReport,
    RequestOutcome,
    expect,
    expect_list,
)
from netlet.errors import NetletError
from netlet.testing._bankcheck import check_books
from netlet.testing._bankparts import AtmPlan, BankFace, Op, SimAtm, SimLedger
from netlet.testing._loop import SimLoop
from netlet.testing._process import Process
from netlet.testing._world import NET_FAULTS, Report, World, replay_command, run_world

__all__ = ["BankReport", "BankSimConfig", "simulate_bank"]

_PIN_COST = 16  # synthetic accounts: a cheap PIN hash, as the swarm's
_BATCH = 100
"""Keys per ``outcomes`` call: its answer stays under 64 KiB, which a node decodes on a
thread of its own (``node._link``), out of the virtual clock's order."""


@dataclass(frozen=True, slots=True)
class BankSimConfig:
    """The shape of a simulated bank run; the seed chooses everything inside it."""

    atms: int = 3
    accounts: int = 5
    chaos: float = 20.0
    """Virtual seconds of faults, while the ATMs work."""
    settle: float = 60.0
    """Virtual seconds after the calm within which every request in flight must end."""
    faults: bool = True
    """False: the same run with no fault at all (a baseline)."""
    bank_crashes: bool = True
    timeout: float = 2.0
    """Seconds one attempt of a request waits (the client's ``timeout``)."""
    retry_for: float = 8.0
    """Seconds an ATM keeps sending one request again before it calls it unknown."""
    initial: int = 10_000
    """Cents each account starts with (a deposit, checked like the ATMs' requests)."""
    max_amount: int = 5_000


@dataclass(slots=True)
class BankReport(Report[BankSimConfig]):
    """What a bank run did and found (see ``Report``)."""

    ops: int = 0
    acknowledged: int = 0
    refused: int = 0
    unsent: int = 0
    unknown_applied: int = 0
    unknown_not_applied: int = 0
    bank_starts: int = 0

    @property
    def replay(self) -> str:
        """The one-line command that runs this seed again, printing its trace."""
        return replay_command(self.seed, self.config,
                              ("atms", "accounts", "chaos", "settle", "retry_for"),
                              {"faults": "--no-faults", "bank_crashes": "--no-bank-crashes"},
                              " --bank")

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"{len(self.violations)} VIOLATION(S)"
        return (f"bank seed {self.seed}: {verdict}; {self.ops} requests, {self.acknowledged} "
                f"acknowledged, {self.refused} refused, {self.unsent} unsent, unknown "
                f"settled {self.unknown_applied} applied / {self.unknown_not_applied} not; "
                f"bank started {self.bank_starts}x; {self.virtual_seconds:.1f} s simulated "
                f"in {self.real_seconds:.2f} s; trace {self.digest}")


def simulate_bank(seed: int, config: BankSimConfig | None = None) -> BankReport:
    """Run one bank seed (see the module docstring); never raises for what it finds."""
    config = config or BankSimConfig()
    report = BankReport(seed, config)

    def make(loop: SimLoop, tmp: str) -> World:
        return _BankWorld(seed, config, loop, report, os.path.join(tmp, "bank.db"))

    return run_world(report, make)


class _BankWorld(World):
    """One bank run: the bank, its ATMs, and the director of the seed's schedule."""

    report: BankReport

    def __init__(self, seed: int, config: BankSimConfig, loop: SimLoop, report: BankReport,
                 path: str) -> None:
        super().__init__(seed, loop, report)
        self.cfg, self.path = config, path
        self.address = f"mem://bank-{seed}-{id(self):x}"
        rng = self.rng
        self.plan = AtmPlan(self.address, [f"acct-{i}" for i in range(config.accounts)],
                            f"{rng.randrange(10**6):06d}", config.timeout, config.retry_for,
                            config.max_amount)
        self.session_ttl = rng.choice((5.0, 30.0, 300.0))
        self.ops: list[Op] = []
        self.atms: list[SimAtm] = []
        self.bank: Process | None = None
        self.ledger: SimLedger | None = None
        self.others: list[Process] = []
        self._lifecycle = asyncio.Lock()  # one kill-and-restart of the bank at a time
        self._pending: set[asyncio.Task[None]] = set()

    # -- processes ----------------------------------------------------------------

    async def start_bank(self) -> None:
        """Start the bank on its file: created and its accounts opened the first time."""
        self.report.bank_starts += 1
        first = self.report.bank_starts == 1
        ledger = SimLedger(self.path, create=first, clock=self.clock, lock_seconds=30.0)
        if first:
            pin_hash = hash_pin(self.plan.pin, n=_PIN_COST)
            for account in self.plan.accounts:
                ledger.execute(OpenAccount(account, f"customer {account}", pin_hash),
                               f"open-{account}")
                op = Op(f"init-{account}", "Deposit", account, "", self.cfg.initial)
                self.ops.append(op)
                ledger.execute(Deposit(account, op.amount), op.key)
                op.status = "ok"
        service = BankService(ledger, operator=True, session_ttl=self.session_ttl,
                              clock=self.clock)
        proc = Process("bank", self.net, self.clock, self)
        node = await proc.start_node(self.address)
        node.serve(BankFace(service), SERVICE_NAME)
        self.bank, self.ledger = proc, ledger
        self.note(f"bank up ({self.report.bank_starts})")

    async def crash_bank(self) -> None:
        """``kill -9``: what the ledger committed stays in its file, nothing else survives."""
        proc, ledger = self.bank, self.ledger
        if proc is None or ledger is None:
            return
        self.note("bank killed")
        await proc.crash()
        ledger.close()  # nothing is queued in it (see _bankparts); the file lock goes
        self.bank = self.ledger = None

    async def restart_bank(self) -> None:
        """Kill the bank (if it is up), and start it again 0-5 s later."""
        async with self._lifecycle:
            await self.crash_bank()
            await self.clock.sleep(self.rng.uniform(0.0, 5.0))
            await self.start_bank()

    def _die_after_commit(self) -> None:
        """The armed ``on_commit`` hook: the bank dies before the answer leaves."""
        if self.ledger is not None:
            self.ledger.on_commit = None
        self.note("bank killed right after a commit")
        self.net.crash("bank")  # at once: not one more frame leaves it
        self.net.partition("bank")  # nor reaches it, on a new connection, until it is gone
        task = asyncio.get_running_loop().create_task(self.restart_bank())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def start_atm(self) -> None:
        atm = SimAtm(f"atm{len(self.atms) + 1}", self.plan,
                     random.Random(self.rng.getrandbits(64)), self.ops,
                     net=self.net, clock=self.clock, rec=self)
        self.atms.append(atm)
        await atm.start()
        self.note(f"{atm.name} started")

    # -- the run --------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.cfg
        await self.start_bank()
        for _ in range(cfg.atms):
            await self.start_atm()
        t0 = self.loop.time()
        for at, kind in self._plan():
            await self.sleep_until(t0 + at)
            await self._act(kind)
        await self.sleep_until(t0 + cfg.chaos)
        for atm in self.atms:
            atm.stopping = True
        self.calm_network()
        async with self._lifecycle:
            if self.ledger is not None:
                self.ledger.on_commit = None
            if self.bank is None:
                await self.start_bank()
        deadline = self.loop.time() + cfg.settle
        while any(a.alive and a.busy for a in self.atms) and self.loop.time() < deadline:
            await self.clock.sleep(0.25)
        for atm in self.atms:
            if atm.alive and atm.busy:
                self.violation(f"{atm.name}: a request was still in flight {cfg.settle:.0f} s "
                               "after the calm")
        await self._check()

    def _plan(self) -> list[tuple[float, str]]:
        cfg, rng = self.cfg, self.rng
        plan: list[tuple[float, str]] = []
        if cfg.faults:
            kinds = ["partition", "reset", "kill-atm", "jump", "wall", "frames"]
            if cfg.bank_crashes:
                kinds += ["kill-bank", "kill-bank-after-commit"]
            for _ in range(rng.randint(2, 10)):
                kind = rng.choice(kinds)
                plan.append((rng.uniform(0, cfg.chaos), kind))
        plan.sort(key=lambda p: p[0])
        return plan

    async def _act(self, kind: str) -> None:
        rng = self.rng
        if kind == "kill-atm":
            alive = [a for a in self.atms if a.alive]
            if alive:
                atm = rng.choice(alive)
                self.note(f"{atm.name} killed")
                await atm.crash()
            if rng.random() < 0.8 or not any(a.alive for a in self.atms):
                await self.start_atm()
        elif kind == "kill-bank":
            await self.restart_bank()
        elif kind == "kill-bank-after-commit":
            if self.ledger is not None and self.ledger.on_commit is None:
                self.note("the bank will die right after its next commit")
                self.ledger.on_commit = self._die_after_commit
        elif kind in NET_FAULTS:
            victims = ["bank"] + [a.name for a in self.atms if a.alive]
            self.fault(kind, victims)

    # -- the check ------------------------------------------------------------------

    async def _check(self) -> None:
        """Settle every key with the bank, then check its books (``_bankcheck``)."""
        auditor = Process("auditor", self.net, self.clock, self)
        self.others.append(auditor)
        node = await auditor.start_node()
        client = BankClient(self.address, node=node, timeout=5.0, retry_for=self.cfg.settle)
        ops = list(self.ops)
        keys = [op.key for op in ops]
        try:
            outcomes: dict[str, RequestOutcome | None] = {}
            for start in range(0, len(keys), _BATCH):
                batch = keys[start:start + _BATCH]
                answers = await client.call_aio(
                    "outcomes", batch, what="outcomes",
                    check=lambda a: expect_list(a, (RequestOutcome, type(None)), "outcomes"))
                outcomes.update(zip(batch, answers, strict=True))
            listed = await client.call_aio(
                "accounts", "", what="accounts",
                check=lambda a: expect_list(a, AccountInfo, "accounts"))
            audit = await client.call_aio("audit", what="audit",
                                          check=lambda a: expect(a, AuditReport, "audit"))
        except NetletError as exc:
            self.violation(f"the bank did not answer the check after the calm: {exc!r}")
            return
        balances = {a.account: a.balance for a in listed}
        problems, books = check_books(ops, outcomes, balances, audit,
                                      other_commands=len(self.plan.accounts))
        for problem in problems:
            self.violation(problem)
        r = self.report
        r.ops = len(ops)
        r.acknowledged = sum(op.status == "ok" for op in ops)
        r.refused = sum(op.status == "refused" for op in ops)
        r.unsent = sum(op.status == "unsent" for op in ops)
        r.unknown_applied, r.unknown_not_applied = books.unknown_applied, books.unknown_not_applied
        self.note(f"end: {r.ops} requests, {books.applied} applied; balances {balances}")

    async def close(self) -> None:
        for proc in [*self.atms, *self.others, self.bank]:
            if proc is not None:
                await proc.close()
        if self.ledger is not None:
            self.ledger.close()
