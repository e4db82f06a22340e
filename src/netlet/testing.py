"""Tools for testing code built on netlet: a clock a test moves by hand.

``VirtualClock`` replaces the real clock of a node (``NodeConfig(clock=...)``)
and so of everything built on it: keepalives, call deadlines, heartbeats, leases,
session TTLs and retries then wait for ``clock.advance(seconds)``, not for time
to pass. See docs/testing.md.
"""

from __future__ import annotations

from netlet.clock import VirtualClock

__all__ = ["VirtualClock"]
