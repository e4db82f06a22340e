"""``simulate(seed)``: a whole cluster in one process, on virtual time, under faults the
seed chooses; the same seed gives the same run, event for event.

A run has three acts. *Chaos* (``chaos`` virtual seconds): clients submit tasks
at random moments while the network delays, reorders, duplicates and resets
frames, processes are partitioned and healed, workers are killed and new ones
start, the head is killed and restarted from its SQLite store, and the clock
jumps (every process paused at once, as a suspended VM) or its wall time steps.
*Calm*: faults stop, partitions heal, the head and enough workers are up. *Settle*
(at most ``settle`` virtual seconds): every task must end.

The checks (``SimReport.violations``), the promises of docs/cluster.md and
PROTOCOL.md 16 under attack:

* every task of every client ends exactly once, with its right value, or with
  ``WorkerLost`` once its retries are spent (a declared error);
* no task is lost: all end within ``settle`` of the calm;
* a result is accepted only from the task's latest lease (one from a lease the
  head replaced, because its worker was presumed dead, is refused);
* nothing in the simulated processes fails with an unexpected exception, and the
  world never stalls.

The models are TigerBeetle's VOPR and FoundationDB's simulation: real code on a
simulated clock and network, every choice from one seed, a failing seed replayed
with one command (``SimReport.replay``).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

from netlet.apps.primes._chunks import split_range
from netlet.apps.primes._methods import KNOWN_PI
from netlet.cluster import Head, HeadConfig, HeadStore
from netlet.testing._loop import SimLoop
from netlet.testing._peers import Ledger, SimClient, SimWorker
from netlet.testing._process import Process
from netlet.testing._world import NET_FAULTS, Report, World, replay_command, run_world

__all__ = ["SimConfig", "SimReport", "simulate"]

PRIME_END = 300_000


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The shape of a simulated run; the seed chooses everything inside it."""

    workers: int = 4
    clients: int = 2
    tasks: int = 40
    """Tasks per client, submitted in a few batches during the chaos."""
    chaos: float = 20.0
    """Virtual seconds of faults."""
    settle: float = 120.0
    """Virtual seconds after the calm within which every task must end."""
    faults: bool = True
    """False: the same run with no fault at all (a baseline)."""
    head_crashes: bool = True
    retries: int = 3
    primes: float = 0.1
    """The share of seeds in which a client also searches [0, 300,000) for primes, in
    10 chunks (about 0.16 s of real CPU), checked against pi(300,000) = 25,997."""


@dataclass(slots=True)
class SimReport(Report[SimConfig]):
    """What a cluster run did and found (see ``Report``)."""

    tasks: int = 0
    ended_ok: int = 0
    worker_lost: int = 0
    raised: int = 0
    """Tasks that raised their own error (every multiple of 13), as they must."""
    cancelled: int = 0
    duplicates: int = 0
    refused_results: int = 0

    @property
    def replay(self) -> str:
        """The one-line command that runs this seed again, printing its trace."""
        return replay_command(self.seed, self.config,
                              ("workers", "clients", "tasks", "chaos", "settle", "retries",
                               "primes"),
                              {"faults": "--no-faults", "head_crashes": "--no-head-crashes"})

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"{len(self.violations)} VIOLATION(S)"
        return (f"seed {self.seed}: {verdict}; {self.tasks} tasks, {self.ended_ok} ok, "
                f"{self.raised} raised, {self.cancelled} cancelled, "
                f"{self.worker_lost} WorkerLost, {self.duplicates} duplicate deliveries, "
                f"{self.refused_results} results refused; {self.virtual_seconds:.1f} s "
                f"simulated in {self.real_seconds:.2f} s; trace {self.digest}")


def simulate(seed: int, config: SimConfig | None = None) -> SimReport:
    """Run one seed (see the module docstring); never raises for what it finds."""
    config = config or SimConfig()
    report = SimReport(seed, config)

    def make(loop: SimLoop, tmp: str) -> World:
        return _World(seed, config, loop, report, os.path.join(tmp, "head.db"))

    return run_world(report, make)


class _World(World):
    """One run: the processes, the network, the director that applies the seed's schedule."""

    report: SimReport

    def __init__(self, seed: int, config: SimConfig, loop: SimLoop, report: SimReport,
                 store_path: str) -> None:
        super().__init__(seed, loop, report)
        self.cfg = config
        self.ledger = Ledger()
        self.ledger.head_epoch = self._head_epoch
        self.store_path = store_path
        self.address = f"mem://sim-{seed}-{id(self):x}"
        self.head_proc: Process | None = None
        self.head: Head | None = None
        self.store: HeadStore | None = None
        self.workers: list[SimWorker] = []
        self.clients: list[SimClient] = []
        self.dead: list[object] = []
        self.searched: list[tuple[int, int]] = []
        self._names = 0

    # -- processes ----------------------------------------------------------------

    async def start_head(self) -> None:
        self.ledger.incarnation += 1
        proc = Process("head", self.net, self.clock, self)
        node = await proc.start_node(self.address)
        self.store = HeadStore(self.store_path)
        self.head = Head(node, HeadConfig(heartbeat=0.5, dead_after=3.0, pull_wait=1.0,
                                          client_grace=60.0), self.store)
        node.serve(self.head, "netlet.head")
        self.head.start()
        self.head_proc = proc
        self.note(f"head {self.ledger.incarnation} up")

    async def crash_head(self) -> None:
        proc, head, store = self.head_proc, self.head, self.store
        if proc is None or head is None or store is None or not proc.alive:
            return
        self.report.refused_results += head.refused_results
        self.note("head killed")
        await proc.crash(head.halt)
        store.close()
        self.dead.append(head)  # what it left waiting is cancelled at the end, not collected
        self.head_proc = self.head = self.store = None

    async def start_worker(self) -> None:
        self._names += 1
        w = SimWorker(f"w{self._names}", self.address, self.ledger,
                      random.Random(self.rng.getrandbits(64)),
                      credit=self.rng.choice((0, 1, 4, "auto")),
                      announce=self.rng.random() < 0.5, task_time=self.rng.choice((0.05, 0.001)),
                      net=self.net, clock=self.clock, rec=self)
        self.workers.append(w)
        await w.start()
        self.note(f"{w.name} started (credit {w.credit}, announces starts: {w.announce}, "
                  f"tasks of {w.task_time * 1000:g} ms)")

    async def start_client(self) -> None:
        c = SimClient(f"c{len(self.clients) + 1}", self.address, self.ledger,
                      net=self.net, clock=self.clock, rec=self)
        self.clients.append(c)
        await c.start()

    # -- the run --------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.cfg
        await self.start_head()
        for _ in range(cfg.workers):
            await self.start_worker()
        for _ in range(cfg.clients):
            await self.start_client()
        t0 = self.loop.time()
        plan = self._plan()
        for at, action in plan:
            await self.clock.sleep(max(0.0, t0 + at - self.loop.time()))
            await self._act(action)
        await self.clock.sleep(max(0.0, t0 + cfg.chaos - self.loop.time()))
        await self._calm()
        deadline = self.loop.time() + cfg.settle
        while any(c.pending for c in self.clients) and self.loop.time() < deadline:
            await self.clock.sleep(0.25)
        self._check()

    def _plan(self) -> list[tuple[float, tuple[str, ...]]]:
        """The seed's schedule: when each client submits, and (with faults) what breaks."""
        cfg, rng = self.cfg, self.rng
        plan: list[tuple[float, tuple[str, ...]]] = []
        for c in self.clients:
            left = cfg.tasks
            while left > 0:
                n = min(left, rng.randint(1, max(1, cfg.tasks // 2)))
                plan.append((rng.uniform(0, cfg.chaos * 0.8), ("submit", c.name, str(n))))
                left -= n
        for _ in range(rng.randint(0, 3)):
            c = rng.choice(self.clients)
            plan.append((rng.uniform(0, cfg.chaos), ("cancel", c.name, str(rng.randint(1, 5)))))
        if self.clients and rng.random() < cfg.primes:
            plan.append((rng.uniform(0, cfg.chaos * 0.8), ("primes", self.clients[0].name)))
        if cfg.faults:
            kinds = ["partition", "reset", "kill-worker", "jump", "wall", "frames"]
            if cfg.head_crashes:
                kinds.append("kill-head")
            for _ in range(rng.randint(2, 10)):
                kind = rng.choice(kinds)
                plan.append((rng.uniform(0, cfg.chaos), (kind,)))
        plan.sort(key=lambda p: p[0])
        return plan

    def _victims(self) -> list[str]:
        return ["head"] + [w.name for w in self.workers if w.alive] + \
               [c.name for c in self.clients]

    async def _act(self, action: tuple[str, ...]) -> None:
        kind, rng = action[0], self.rng
        if kind == "submit":
            client = next(c for c in self.clients if c.name == action[1])
            client.spawn(client.submit(int(action[2]), self.cfg.retries))
            return
        if kind == "cancel":
            client = next(c for c in self.clients if c.name == action[1])
            client.spawn(client.cancel_some(int(action[2])))
            return
        if kind == "primes":
            client = next(c for c in self.clients if c.name == action[1])
            client.retries = self.cfg.retries
            self.searched = split_range(0, PRIME_END, PRIME_END // 10)
            client.spawn(client.search_primes(self.searched))
            return
        if kind == "kill-worker":
            alive = [w for w in self.workers if w.alive]
            if alive:
                w = rng.choice(alive)
                self.note(f"{w.name} killed")
                await w.crash()
            if rng.random() < 0.8 or not any(w.alive for w in self.workers):
                await self.start_worker()
        elif kind == "kill-head":
            await self.crash_head()
            await self.clock.sleep(rng.uniform(0.0, 5.0))
            await self.start_head()
        elif kind in NET_FAULTS:
            self.fault(kind, self._victims())

    async def _calm(self) -> None:
        self.calm_network()
        if self.head_proc is None:
            await self.start_head()
        if sum(w.alive for w in self.workers) < 2:
            await self.start_worker()

    # -- the checks -----------------------------------------------------------------

    def _head_epoch(self, node: str) -> int | None:
        """The epoch the running head counts ``node`` alive under, if any."""
        return None if self.head is None else self.head.scheduler.epoch(node)

    def _check(self) -> None:
        report = self.report
        for c in self.clients:
            # PROTOCOL.md 16.4: a cancelled task never starts again on a worker the head
            # counts as alive (one it presumed dead may run it, even before it learns
            # so; its result is refused, which the outcome checks cover).
            again = sorted(t for t, at in c.cancelled.items()
                           if any(start > at and counted
                                  for start, _, counted in self.ledger.ran.get(t, [])))
            if again:
                self.violation(f"{c.name}: {again} started after the head said it cancelled "
                               "them")
            report.tasks += len(c.specs)
            report.duplicates += c.duplicates
            for kind, _ in c.outcome.values():
                if kind == "ok":
                    report.ended_ok += 1
                elif kind == "WorkerLost":
                    report.worker_lost += 1
                elif kind == "cancelled":
                    report.cancelled += 1
                else:
                    report.raised += 1
            lost = c.pending
            for tid in lost[:3]:
                info = self.head.task_info(tid) if self.head is not None else None
                self.note(f"lost {tid}: head says {info}; leases received "
                          f"{self.ledger.received.get(tid)}; held by "
                          f"{[w.name for w in self.workers if tid in w.held]}")
            if lost:
                self.violation(f"{c.name}: {len(lost)} task(s) never ended within "
                               f"{self.cfg.settle:.0f} s of the calm, e.g. {lost[:3]}")
        if self.searched:
            counts = self.clients[0].prime_counts
            if sorted(counts) != sorted(self.searched):
                missing = sorted(set(self.searched) - set(counts))
                self.violation(f"the prime search never counted {missing}")
            elif sum(counts.values()) != KNOWN_PI[PRIME_END]:
                self.violation(f"the prime search counted {sum(counts.values())} primes "
                               f"below {PRIME_END:,}, not {KNOWN_PI[PRIME_END]:,}")
            else:
                self.note(f"primes below {PRIME_END:,}: {sum(counts.values()):,}, exact")
        if self.head is not None:
            report.refused_results += self.head.refused_results
        self.note(f"end: {report.tasks} tasks, {report.ended_ok} ok, "
                  f"{report.worker_lost} WorkerLost")

    async def close(self) -> None:
        if self.head is not None:
            self.head.halt()
        for proc in [*self.clients, *self.workers, self.head_proc]:
            if proc is not None:
                await proc.close()
        if self.store is not None:
            self.store.close()

