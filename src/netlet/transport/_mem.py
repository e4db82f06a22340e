"""``mem://name``: connections between nodes inside one process.

Frames are still encoded and copied, so a program behaves the same when its
nodes later move to other processes; only the sockets are left out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from netlet.codec import Buffer
from netlet.errors import ConnectionLost, PeerUnreachable
from netlet.transport._base import Connection

__all__ = ["MemConnection", "mem_connect", "mem_listen", "mem_unlisten"]

Acceptor = Callable[["MemConnection"], Coroutine[Any, Any, None]]

_lock = threading.Lock()
_listeners: dict[str, tuple[asyncio.AbstractEventLoop, Acceptor]] = {}


class MemConnection(Connection):
    """One end of an in-process pair."""

    peer: MemConnection

    def pending_bytes(self) -> int:
        return 0

    def send(self, body: Buffer, buffers: Sequence[Buffer] = ()) -> None:
        if self._closed:
            raise ConnectionLost(f"connection to {self.remote} is closed")
        peer: MemConnection = self.peer
        frame = (memoryview(bytes(body)), [bytearray(b) for b in buffers])
        try:
            peer.loop.call_soon_threadsafe(peer._receive, frame)
        except RuntimeError:  # the peer's loop is closed
            raise ConnectionLost(f"{self.remote} is gone") from None

    def _receive(self, frame: tuple[memoryview, list[bytearray]]) -> None:
        if not self._closed:
            self._deliver(frame[0], list(frame[1]))

    def close(self, reason: BaseException | None = None) -> None:
        self._end(reason)
        peer: MemConnection = self.peer
        peer._end(ConnectionLost(f"{self.remote} closed"))

    def _end(self, why: BaseException | None) -> None:
        """Finish this end on its own loop (at once, if that loop is gone)."""
        if not self._closed:
            try:
                self.loop.call_soon_threadsafe(self._finish, why)
            except RuntimeError:
                self._closed = True


def mem_listen(name: str, loop: asyncio.AbstractEventLoop, accept: Acceptor) -> None:
    with _lock:
        if name in _listeners:
            raise OSError(f"mem://{name} is already in use")
        _listeners[name] = (loop, accept)


def mem_unlisten(name: str) -> None:
    with _lock:
        _listeners.pop(name, None)


async def mem_connect(name: str) -> MemConnection:
    with _lock:
        entry = _listeners.get(name)
    if entry is None:
        raise PeerUnreachable(f"nothing listens on mem://{name}")
    server_loop, accept = entry
    client = MemConnection(asyncio.get_running_loop(), f"mem://{name}")
    server = MemConnection(server_loop, "mem-client")
    client.peer, server.peer = server, client
    asyncio.run_coroutine_threadsafe(accept(server), server_loop)
    return client
