"""Call deadlines and keepalive: what keeps a waiting caller from waiting for ever.

One task per node wakes every 50 ms of the node's clock: it fails async and
future calls whose deadline passed (blocking calls time out on their own; a
call fails at the first sweep at or after its deadline, never before). A call
whose request is still going out in bulk is looked at every quarter second
instead, and its deadline waits while the peer takes the request (``_unsent``). Every
half second, and at the first sweep after a link's next keepalive step is due,
it pings links we wait on that said nothing for a keepalive interval, and
closes those silent for more than three intervals whose ping went unanswered
for more than one (a link that was idle, with nobody pinging it, gets that
chance before it is judged), so their waiters fail instead of hanging.
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
        self._deadlines: dict[int, list[tuple[float, Link, int, float]]] = {}
        self._lock = threading.Lock()
        self._pinged: dict[Link, float] = {}  # links pinged with no word since: when
        self._due = float("inf")  # when the next keepalive step (ping or close) falls

    def add_deadline(self, since: float, timeout: float, link: Link, cid: int) -> None:
        """Fail call ``cid`` on ``link`` if it has no reply ``timeout`` s after ``since``
        (or, while its request is still going out, as ``Link.due_again`` says).

        ``since`` is the clock read before the request went out: the peer may answer,
        or time may move, before this runs."""
        self._add(since + link.first_look(cid, timeout), link, cid, timeout)

    def _add(self, due: float, link: Link, cid: int, timeout: float) -> None:
        slot = int(due / _SWEEP)
        with self._lock:
            bucket = self._deadlines.get(slot)
            if bucket is None:
                bucket = self._deadlines[slot] = []
            bucket.append((due, link, cid, timeout))

    async def run(self, links: Callable[[], Iterable[Link]]) -> None:
        """Sweep for ever (the node cancels it); ``links()`` gives the node's links now."""
        clock = self.clock
        checked = clock.monotonic()
        while True:
            await clock.sleep(_SWEEP)
            now = clock.monotonic()
            if now - checked >= _LIVENESS or now > self._due:
                checked = now
                self._check_liveness(list(links()), now)
            self._expire(now)

    def _expire(self, now: float) -> None:
        """Fail every call whose deadline is ``now`` or earlier."""
        now_slot = int(now / _SWEEP)
        expired: list[tuple[float, Link, int, float]] = []
        with self._lock:
            for slot in [s for s in self._deadlines if s <= now_slot]:
                bucket = self._deadlines.pop(slot)
                if slot == now_slot:  # the current slot: not all due yet
                    later = [e for e in bucket if e[0] > now]
                    if later:
                        self._deadlines[slot] = later
                        bucket = [e for e in bucket if e[0] <= now]
                expired.extend(bucket)
        for _, link, cid, timeout in expired:
            waiter = link.pending.get(cid)
            if waiter is None:
                link.unsent.pop(cid, None)
                continue
            why = "got no reply"
            if link.unsent and cid in link.unsent:
                due = link.due_again(cid, timeout)
                if due is not None:
                    self._add(due, link, cid, timeout)
                    continue
                why = f"could not send its request: the peer took none of it for {timeout} s"
            link.abandon(cid)
            waiter(False, CallTimeout(f"call {cid} to {link.conn.remote} {why}"))

    def _check_liveness(self, links: list[Link], now: float) -> None:
        interval = self.keepalive
        if interval is None:
            return
        pinged, self._pinged = self._pinged, {}
        due = float("inf")
        for link in links:
            if link.reading_paused and not link.closed:
                # Busy, not dead: we stopped reading them, so say so before they decide.
                # Their silence means nothing meanwhile: we are not reading what they say.
                _ping(link)
                link.last_heard = now
                continue
            if not link.pending or link.closed:
                continue
            silent = now - link.last_heard
            since = pinged.get(link)
            if since is not None and link.last_heard >= since:
                since = None  # it answered
            if since is not None and silent > 3 * interval and now - since > interval:
                log.warning("closing %r: no word from the peer for %.1f s", link, silent)
                link.conn.close(ConnectionLost(
                    f"{link.conn.remote} stopped answering ({silent:.1f} s without a word)"))
            elif silent > interval:
                _ping(link)
                since = now if since is None else since
                self._pinged[link] = since
                due = min(due, max(link.last_heard + 3 * interval, since + interval))
            else:
                due = min(due, link.last_heard + interval)
        self._due = due


def _ping(link: Link) -> None:
    try:
        link.send([PING, 0])
    except (ConnectionLost, NodeClosed):
        pass
