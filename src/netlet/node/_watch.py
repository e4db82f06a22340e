"""Call deadlines and keepalive: what keeps a waiting caller from waiting for ever.

One task per node wakes every 50 ms of the node's clock: it fails async and
future calls whose deadline passed (blocking calls time out on their own; a
call fails within one sweep after its deadline, never before), and every half
second it pings links we wait on that went quiet and closes those silent for
more than three keepalive intervals, so their waiters fail instead of hanging.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from netlet.clock import Clock
from netlet.errors import CallTimeout, ConnectionLost, NodeClosed
from netlet.node._link import Link
from netlet.node._messages import PING

__all__ = ["Watchdog"]

log = logging.getLogger("netlet.node")

_SWEEP = 0.05
_LIVENESS = 0.5  # seconds between looks at the links' silence


class Watchdog:
    def __init__(self, keepalive: float | None, clock: Clock) -> None:
        self.keepalive = keepalive
        self.clock = clock
        # Deadlines of async and future calls, in buckets of _SWEEP seconds.
        self._deadlines: dict[int, list[tuple[Link, int]]] = {}
        self._lock = threading.Lock()

    def add_deadline(self, timeout: float, link: Link, cid: int) -> None:
        """Fail call ``cid`` on ``link`` if it has no reply ``timeout`` s from now."""
        slot = int((self.clock.monotonic() + timeout) / _SWEEP) + 1
        with self._lock:
            bucket = self._deadlines.get(slot)
            if bucket is None:
                bucket = self._deadlines[slot] = []
            bucket.append((link, cid))

    async def run(self, links: Callable[[], Iterable[Link]]) -> None:
        """Sweep for ever (the node cancels it); ``links()`` gives the node's links now."""
        clock = self.clock
        checked = clock.monotonic()
        while True:
            await clock.sleep(_SWEEP)
            now = clock.monotonic()
            if now - checked >= _LIVENESS:
                checked = now
                self._check_liveness(list(links()), now)
            self._expire(int(now / _SWEEP))

    def _expire(self, now_slot: int) -> None:
        expired: list[tuple[Link, int]] = []
        with self._lock:
            for slot in [s for s in self._deadlines if s <= now_slot]:
                expired.extend(self._deadlines.pop(slot))
        for link, cid in expired:
            waiter = link.pending.get(cid)
            if waiter is not None:
                link.abandon(cid)
                waiter(False, CallTimeout(f"call {cid} to {link.conn.remote} got no reply"))

    def _check_liveness(self, links: list[Link], now: float) -> None:
        interval = self.keepalive
        if interval is None:
            return
        for link in links:
            if link._paused and not link.closed:
                # Busy, not dead: we stopped reading them, so say so before they decide.
                # Their silence means nothing meanwhile: we are not reading what they say.
                _ping(link)
                link.last_heard = now
                continue
            if not link.pending or link.closed:
                continue
            silent = now - link.last_heard
            if silent > 3 * interval:
                log.warning("closing %r: no word from the peer for %.1f s", link, silent)
                link.conn.close(ConnectionLost(
                    f"{link.conn.remote} stopped answering ({silent:.1f} s without a word)"))
            elif silent > interval:
                _ping(link)


def _ping(link: Link) -> None:
    try:
        link.send([PING, 0])
    except (ConnectionLost, NodeClosed):
        pass
