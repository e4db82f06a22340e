"""Where netlet reads the time and arms its timers: one injectable object.

Every timer in netlet (keepalives, heartbeats, call deadlines, retries and their
backoff, leases, session TTLs, group-commit waits) asks a :class:`Clock`, given
through the node's config (``NodeConfig(clock=...)``). The default,
:data:`REAL_CLOCK`, is the system's clocks and asyncio's timers, unwrapped, so it
costs nothing. ``netlet.testing.VirtualClock`` is one a test moves by hand.
"""

from __future__ import annotations

from netlet.clock._backoff import Backoff
from netlet.clock._clock import (
    REAL_CLOCK,
    Clock,
    RealClock,
    Timer,
    queue_get,
    sleep_blocking,
    wait_future,
)
from netlet.clock._virtual import VirtualClock
from netlet.clock._waiter import Waiter, settle_future, wake_all

__all__ = ["REAL_CLOCK", "Backoff", "Clock", "RealClock", "Timer", "VirtualClock", "Waiter",
           "queue_get", "settle_future", "sleep_blocking", "wait_future", "wake_all"]
