"""Tools for testing code built on netlet: a clock a test moves by hand, and a seeded
simulation of a whole cluster.

``VirtualClock`` replaces the real clock of a node (``NodeConfig(clock=...)``)
and so of everything built on it: keepalives, call deadlines, heartbeats, leases,
session TTLs and retries then wait for ``clock.advance(seconds)``, not for time
to pass. See docs/testing.md.

``simulate(seed)`` runs a head, workers and clients in one process, on virtual
time, under faults the seed chooses, and checks the cluster's promises; the same
seed gives the same run. ``python -m netlet.testing --help`` runs seeds from the
command line. ``simulate_bank(seed)`` does the same for the bank: its real service
and ledger, ATMs, and the bank's promises (money conserved, each key applied
once, with the command its ATM sent). See docs/testing.md.
"""

from __future__ import annotations

from netlet.clock import VirtualClock
from netlet.testing._banksim import BankReport, BankSimConfig, simulate_bank
from netlet.testing._sim import SimConfig, SimReport, simulate

__all__ = ["BankReport", "BankSimConfig", "SimConfig", "SimReport", "VirtualClock", "simulate",
           "simulate_bank"]
