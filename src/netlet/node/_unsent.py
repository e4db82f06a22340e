"""A call's deadline while its request is still going out: a slow link is not a dead peer.

A call's timeout bounds the wait for its reply once the request is out, and
any stretch in which the peer takes none of the request. So a 64 MiB request
over a 1 MB/s link gets its reply with the default 30 s timeout, while a frozen
peer, whose buffers filled, fails the call about ``timeout`` after it stopped
reading. Only a request left queued in bulk behind the socket is tracked; any
other call's deadline is its start plus its timeout, as before.

Pure bookkeeping (no I/O, no clock reads): the link gives the time and the
connection's ``send_progress()`` counts.
"""

from __future__ import annotations

__all__ = ["LOOK", "TRACK_MIN", "Unsent"]

TRACK_MIN = 256 * 1024
"""Bytes queued behind the socket after a request from which its sending is tracked."""

LOOK = 0.25
"""Seconds between looks at a tracked request (how late its deadline may fall)."""


class Unsent:
    """A request that was still queued in bulk right after it was sent."""

    __slots__ = ("end", "out", "seen", "since")

    def __init__(self, end: int, written: int, now: float) -> None:
        self.end = end  # it is out once the connection has written this many bytes
        self.seen = written  # the written count at the last look that saw it move
        self.since = now  # when that look was
        self.out = False

    def next_due(self, written: int, timeout: float, now: float) -> float | None:
        """When to look again (or, once out, when the call's deadline falls); None: the
        peer took none of it for ``timeout`` s, so the call fails now."""
        if written >= self.end:
            self.out = True  # it went out since the last look, at most LOOK s ago
            return now + timeout
        if written > self.seen:
            self.seen, self.since = written, now
        elif now - self.since >= timeout:
            return None
        return min(self.since + timeout, now + min(LOOK, timeout))
