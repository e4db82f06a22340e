"""What every simulated world shares: its report, its recorder, the faults the seed picks
from, and the run of one seed on a fresh loop (``run_world``).

A world (the cluster of ``_sim``, the bank of ``_banksim``) is a director over
simulated processes: ``World.run`` starts them and applies the seed's schedule,
``World.close`` ends them. The faults of the network and the clock are the same
in every world and are applied here (``World.fault``); what kills and restarts
which process is the world's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from netlet.testing._loop import SimClock, SimLoop, Stalled
from netlet.testing._net import SimNet
from netlet.transport import Faults

__all__ = ["NET_FAULTS", "Report", "World", "frame_faults", "replay_command", "run_world"]

C = TypeVar("C")
R = TypeVar("R", bound="Report[Any]")

NET_FAULTS = ("partition", "reset", "jump", "wall", "frames")
"""The faults ``World.fault`` applies: the network's and the clock's."""

_START = 1000.0  # a SimLoop's time when it starts


@dataclass(slots=True)
class Report(Generic[C]):
    """What a run did and found. ``ok`` is no violation; ``digest`` names the run's
    whole trace, so two runs of one seed can be compared in one line."""

    seed: int
    config: C
    violations: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    virtual_seconds: float = 0.0
    real_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()[:16]


def replay_command(seed: int, config: Any, names: tuple[str, ...],
                   flags: dict[str, str], prefix: str = "") -> str:
    """The one-line command that runs ``seed`` of ``config`` again, printing its trace:
    each of ``names`` that differs from the default config, then each boolean field of
    ``flags`` that is off, as its ``--no-...`` flag."""
    base = type(config)()
    opts = "".join(f" --{name.replace('_', '-')} {getattr(config, name)}"
                   for name in names if getattr(config, name) != getattr(base, name))
    opts += "".join(f" {flag}" for name, flag in flags.items() if not getattr(config, name))
    return f"python -m netlet.testing{prefix} --seed {seed}{opts} --trace"


class World:
    """A run's director: the seed's random generator, the clock, the network, the recorder.

    The order of the draws here is part of every seed's meaning: change it and
    every seed names another run.
    """

    report: Report[Any]

    def __init__(self, seed: int, loop: SimLoop, report: Report[Any]) -> None:
        self.seed, self.loop, self.report = seed, loop, report
        self.rng = random.Random(seed)
        self.clock = SimClock(loop)
        self.net = SimNet(random.Random(self.rng.getrandbits(64)), self.clock)
        self.latency = Faults(delay=self.rng.choice((0.0, 0.0001, 0.001, 0.005)))
        """Every frame's one-way delay when nothing goes wrong (order kept)."""
        self.net.set_faults(self.latency, Faults())

    # -- the recorder -------------------------------------------------------------

    def note(self, what: str) -> None:
        self.report.trace.append(f"{self.loop.time() - _START:10.4f} {what}")

    def violation(self, what: str) -> None:
        self.note(f"VIOLATION {what}")
        self.report.violations.append(what)

    # -- what a world does ------------------------------------------------------------

    async def run(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def sleep_until(self, at: float) -> None:
        """Sleep until ``at`` on the loop's clock (at once if it is past)."""
        await self.clock.sleep(max(0.0, at - self.loop.time()))

    # -- the network's and the clock's faults ---------------------------------------

    def fault(self, kind: str, victims: list[str]) -> None:
        """Apply one of NET_FAULTS; ``victims`` are the processes a partition or a reset
        may hit."""
        rng = self.rng
        if kind == "partition":
            name, length = rng.choice(victims), rng.uniform(0.5, 8.0)
            self.note(f"partition {name} for {length:.2f} s")
            self.net.partition(name)
            self.loop.call_later(length, self.heal, name)
        elif kind == "reset":
            name = rng.choice(victims)
            self.note(f"reset {name}")
            self.net.reset(name)
        elif kind == "jump":
            seconds = rng.uniform(0.5, 10.0)
            self.note(f"clock jumps {seconds:.2f} s")
            self.loop.jump(seconds)
        elif kind == "wall":
            seconds = rng.uniform(-3600, 3600)
            self.note(f"wall clock steps {seconds:.0f} s")
            self.clock.step_wall(seconds)
        elif kind == "frames":
            out = frame_faults(rng, self.latency.delay)
            self.note(f"frames now: {out}")
            self.net.set_faults(out, Faults())
        else:
            raise ValueError(f"no such fault: {kind!r}")

    def heal(self, name: str) -> None:
        if self.net.silent(name):
            self.note(f"heal {name}")
            self.net.heal(name)

    def calm_network(self) -> None:
        """The faults stop and every partition heals."""
        self.note("calm")
        self.net.set_faults(self.latency, Faults())
        self.net.heal()


def frame_faults(rng: random.Random, latency: float) -> Faults:
    """Per-frame faults for the rest of the chaos: mild to harsh, as the seed says."""
    return Faults(reset=rng.choice((0.0, 0.0, 0.002, 0.01)),
                  duplicate=rng.choice((0.0, 0.01, 0.05)),
                  reorder=rng.choice((0.0, 0.01, 0.05)),
                  delay=latency + rng.choice((0.0, 0.001, 0.02)),
                  jitter=rng.choice((0.0, 0.005, 0.05)))


def run_world(report: R, make: Callable[[SimLoop, str], World]) -> R:
    """Run the world ``make(loop, tmpdir)`` builds on a fresh loop, in a temporary
    directory that ends with it; never raises for what the run finds."""
    loop = SimLoop(_START)
    started = time.perf_counter()
    unhandled: list[str] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(str(context.get("message"))))
    with tempfile.TemporaryDirectory(prefix="netlet-sim-", dir=_memory_dir()) as tmp, _quiet():
        world = make(loop, tmp)
        try:
            loop.run_until_complete(world.run())
        except Stalled as e:
            world.violation(f"the world stalled: {e}")
        finally:
            if unhandled:  # an error nobody looked at: netlet lost track of something
                world.violation(f"{len(unhandled)} error(s) reached asyncio's handler "
                                f"unhandled: {sorted(set(unhandled))[:3]}")
            if loop.foreign_wakeups:
                world.violation(f"{len(loop.foreign_wakeups)} callback(s) came from a thread "
                                "the virtual clock cannot order, so this run may not replay: "
                                f"{sorted(set(loop.foreign_wakeups))[:3]}")
            try:
                loop.run_until_complete(world.close())
            except Exception as e:
                report.violations.append(f"closing the simulated processes failed: {e!r}")
            with contextlib.suppress(Stalled):
                _cancel_all(loop)
            loop.close()
    report.virtual_seconds = loop.time() - _START
    report.real_seconds = time.perf_counter() - started
    return report


def _memory_dir() -> str | None:
    """Where a run keeps its files: in memory if this machine has a tmpfs for it.

    A simulated crash kills a process, not the machine: what it wrote stays with the
    operating system, so an fsync (SQLite's ``synchronous=FULL``) guards against
    nothing here, and on a disk it costs most of a bank run's time.
    """
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def _cancel_all(loop: SimLoop) -> None:
    """As ``asyncio.run`` does: nothing outlives the loop half-done (a killed process's
    calls that were still waiting)."""
    for _ in range(10):  # cancelling may start a few more (a close's handlers)
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        if not tasks:
            break
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The faults make netlet log warnings by design; a run reports through its checks."""
    logger = logging.getLogger("netlet")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
