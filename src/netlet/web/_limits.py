"""What a web client can make the dashboard hold: connections, and time to send a request.

uvicorn accepts every connection and waits for its first request for ever, so
idle or trickling connections (slowloris) would pile up until the process ran
out of file descriptors: the head's, since the dashboard usually runs inside
it, and a head that cannot accept cannot let a worker join. Here each
connection has ``header_timeout`` seconds to deliver a complete request, head
and body (again after every response, for the next one; a body still coming
when the answer is sent counts too: uvicorn reads and drops it, each byte
resetting its keep-alive timer), and beyond ``max_connections`` a new
connection is closed at once. Live streams are capped separately
(``_app``): each costs a render per interval.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HEADER_TIMEOUT", "MAX_CONNECTIONS", "MAX_STREAMS", "QuietFlood", "StreamSlots",
           "guarded_protocol", "quiet_floods"]

HEADER_TIMEOUT = 10.0
"""Seconds a connection may take to send a request, head and body (the dashboard takes no
large bodies; as Go's ReadHeaderTimeout, with the body)."""
MAX_CONNECTIONS = 128
"""Open connections at once: tabs, scrapers and scripts; beyond it new ones are closed."""
MAX_STREAMS = 32
"""Live views (event streams) at once; beyond it a stream is answered 503."""

log = logging.getLogger("netlet.web")

_ARRIVING = (h11.IDLE, h11.SEND_BODY)
"""The client's states while a request is still on its way (its head, then its body)."""


def guarded_protocol(header_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline for each request and a connection cap."""

    class GuardedH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refused = True
                log.warning("dashboard: %d connections open (the limit): closing a new one",
                            max_connections)
                transport.close()
                return
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            if self.conn.their_state not in _ARRIVING:  # the whole request has come
                self._disarm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm_header_timer()  # the next request's head has the same time

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(header_timeout, self._header_late)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_late(self) -> None:
            self._header_timer = None
            if self.conn.their_state in _ARRIVING and not self.transport.is_closing():
                self.transport.close()  # nothing (or part of a request) in header_timeout

    return GuardedH11


class StreamSlots:
    """Open live streams, at most ``limit`` (used on the server's loop only: no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def give(self) -> None:
        self.used -= 1


class QuietFlood(logging.Filter):
    """At most ``burst`` warnings of one kind (one format string) per ``interval`` seconds;
    the first after a quiet spell says how many were left out. Records below WARNING pass."""

    def __init__(self, interval: float = 10.0, burst: int = 50) -> None:
        super().__init__()
        self.interval, self.burst = interval, burst
        self._lock = threading.Lock()
        self._kinds: dict[object, list[float]] = {}  # kind -> [start, count, skipped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = time.monotonic()
        with self._lock:
            kind = self._kinds.setdefault(record.msg, [-self.interval, 0, 0])
            if now - kind[0] >= self.interval:
                skipped = int(kind[2])
                self._kinds[record.msg] = kind = [now, 0, 0]
                if skipped:
                    record.msg = f"{record.getMessage()} ({skipped} more like this in the " \
                                 f"last {self.interval:g} s were not logged)"
                    record.args = ()
            if kind[1] >= self.burst:
                kind[2] += 1
                return False
            kind[1] += 1
            return True


_quiet = QuietFlood()


def quiet_floods() -> None:
    """Put the flood filter on the dashboard's loggers and uvicorn's (once; again after
    uvicorn's own logging setup, which each server's config runs)."""
    for name in ("netlet.web", "uvicorn.error"):
        logger = logging.getLogger(name)
        if _quiet not in logger.filters:
            logger.addFilter(_quiet)
