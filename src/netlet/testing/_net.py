"""The simulated network: every connection of every simulated process, and its faults.

Each process of a simulation (``"head"``, ``"w3"``, ``"c1"``) makes its node with
``SimNet.node_options(name)``: its connections, made or accepted, pass through the
fault transport (``FaultyConnection``), seeded from the simulation's one random
generator, so the run replays from its seed. The network can then, per process,
go silent both ways (a partition, until healed), reset every connection at once,
or crash: a crashed process's connections go silent first (nothing it had not yet
sent leaves, not even a goodbye) and then close, as a killed process's do.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from netlet.errors import ConnectionLost
from netlet.testing._loop import SimClock
from netlet.transport import Connection, Faults, FaultyConnection

__all__ = ["KEY", "SimNet"]

KEY = bytes(range(32))
"""The simulated cluster's key: netlet never runs code without one, even here."""


class SimNet:
    """Connections by process name, the fault profile new frames get, and partitions."""

    def __init__(self, rng: random.Random, clock: SimClock) -> None:
        self._rng = rng
        self._clock = clock
        self._conns: dict[str, list[FaultyConnection]] = {}
        self._silent: set[str] = set()
        self.out = Faults()
        self.into = Faults()

    def node_options(self, name: str, **extra: Any) -> dict[str, Any]:
        """The keywords of ``Node(...)`` for process ``name`` in this network."""
        return {"key": KEY, "clock": self._clock, "direct_calls": False,
                "wrap_connection": self._wrapper(name), **extra}

    def _wrapper(self, name: str) -> Callable[[Connection], Connection]:
        def wrap(conn: Connection) -> Connection:
            faulty = FaultyConnection(conn, self.out, self.into,
                                      seed=self._rng.getrandbits(64), clock=self._clock)
            if name in self._silent:
                faulty.partition(hold=True)
            self._conns.setdefault(name, []).append(faulty)
            return faulty
        return wrap

    def _live(self, name: str) -> list[FaultyConnection]:
        live = [c for c in self._conns.get(name, []) if not c.closed]
        self._conns[name] = live
        return live

    def set_faults(self, out: Faults, into: Faults) -> None:
        """Frames from now on, on every connection (old and new), get these faults."""
        self.out, self.into = out, into
        for name in list(self._conns):
            for conn in self._live(name):
                conn.set_faults(out, into)

    def partition(self, name: str) -> None:
        """``name`` hears nothing and is heard by no one until ``heal``: frames wait (TCP
        retransmits), and a link stays open until its keepalives give up on it."""
        self._silent.add(name)
        for conn in self._live(name):
            conn.partition(hold=True)

    def heal(self, name: str | None = None) -> None:
        """End the partition of ``name`` (``None``: of everyone)."""
        names = list(self._silent) if name is None else [name]
        for n in names:
            self._silent.discard(n)
            for conn in self._live(n):
                conn.heal()

    def reset(self, name: str) -> None:
        """Every connection of ``name`` breaks now (frames on their way are lost)."""
        for conn in self._live(name):
            conn.partition()
            conn.close(ConnectionLost("simulated: connection reset"))

    def crash(self, name: str) -> None:
        """``name`` dies: its connections break, it never sends another frame, and it
        does not hear of the break (a dead process runs no handler)."""
        for conn in self._live(name):
            conn.sever()
        self._silent.discard(name)
        self._conns.pop(name, None)

    def silent(self, name: str) -> bool:
        return name in self._silent
