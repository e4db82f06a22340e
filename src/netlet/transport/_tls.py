"""TLS connections on asyncio's SSL transport (the ``ssl`` module does the crypto).

Writes from other threads hop to the loop: the SSL transport is not thread-safe.
A large frame waits for admission into the node's memory total as on plain TCP
(``_socket.py``): the transport stops reading until the budget lets it in.
The bytes on their way count as queued (``pending_bytes`` and the account) until
the loop hands them to the transport: under load the loop can lag far behind
the threads that write.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Sequence

from netlet.codec import Buffer
from netlet.errors import ConnectionLost, ProtocolError
from netlet.transport._budget import Account
from netlet.transport._framed import FramedConnection
from netlet.transport._framing import frame_parts

__all__ = ["StreamConnection", "cut_unfinished_closes"]

# Connections closed politely whose peer has not yet answered the close_notify:
# their sockets stay open until it does, so a loop about to stop cuts them off.
_UNFINISHED: weakref.WeakSet[StreamConnection] = weakref.WeakSet()


def cut_unfinished_closes(loop: asyncio.AbstractEventLoop) -> None:
    """Abort the TLS connections on ``loop`` still waiting for their peer's close_notify
    (on the loop's thread, before it stops: nothing would close their sockets)."""
    for conn in list(_UNFINISHED):
        if conn.loop is loop:
            conn.cut()


class StreamConnection(FramedConnection, asyncio.BufferedProtocol):
    """A connection over any asyncio transport (used for TLS)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, remote: str, max_frame: int, max_buffers: int = 0,
        account: Account | None = None,
    ) -> None:
        FramedConnection.__init__(self, loop, remote, max_frame, max_buffers, account)
        self._transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = loop.create_future()
        self._transport_reading = True
        self._hopping = 0  # bytes sent from other threads, not yet handed to the transport
        self._given = 0  # bytes of every frame sent, since the start (see send_progress)
        self._hop_lock = threading.Lock()
        self._aborting = False  # closed with a reason from another thread: write no more
        # Set once the transport let go of its socket. Closing TLS politely sends a
        # close_notify and waits for the peer's: until then the socket stays open.
        self._gone: asyncio.Future[None] = loop.create_future()

    def pending_bytes(self) -> int:
        t = self._transport
        return (t.get_write_buffer_size() if t is not None else 0) + self._hopping

    def send_progress(self) -> tuple[int, int]:
        pending = self.pending_bytes()
        return max(self._given - pending, 0), pending

    # -- asyncio.BufferedProtocol ----------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self.connected.done():
            self.connected.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self._reader.buffer_updated(nbytes)
        except ProtocolError as e:
            self._protocol_error(e)

    def _sync_reading(self) -> None:
        t = self._transport
        if t is None or self._closed:
            return
        want = self._wants_reading()
        if want != self._transport_reading:
            self._transport_reading = want
            t.resume_reading() if want else t.pause_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        _UNFINISHED.discard(self)
        if not self._gone.done():
            self._gone.set_result(None)
        self._finish(ConnectionLost(f"{self.remote} closed the connection: {exc or 'EOF'}"))

    # -- Connection -----------------------------------------------------

    def send(self, body: Buffer, buffers: Sequence[Buffer] = ()) -> None:
        if self._closed or self._transport is None:
            raise ConnectionLost(f"connection to {self.remote} is closed")
        parts = frame_parts(body, buffers)
        if self.in_loop_thread():
            self._transport.writelines(parts)
            self._given += sum(map(len, parts))  # after: the queue grows first
            return
        data = [bytes(p) for p in parts]
        n = sum(map(len, data))
        with self._hop_lock:
            self._hopping += n
            self._given += n
        if self.account is not None:
            self.account.queue(n)
        self.loop.call_soon_threadsafe(self._write, data, n)

    def _write(self, parts: list[bytes], n: int) -> None:
        with self._hop_lock:
            self._hopping -= n
        if self.account is not None:
            self.account.unqueue(n)
        if not self._closed and not self._aborting and self._transport is not None:
            self._transport.writelines(parts)

    def close(self, reason: BaseException | None = None) -> None:
        if self.in_loop_thread():
            self._close_now(reason)
        elif not self.loop.is_closed():
            if reason is not None:
                self._aborting = True  # what is still on its way to the loop is dropped
            self.loop.call_soon_threadsafe(self._close_now, reason)

    async def drain_and_close(self, timeout: float = 1.0) -> None:
        """Close politely and wait (up to ``timeout`` s) until the socket is closed.

        An asyncio transport's close() flushes what is buffered, then TLS waits for
        the peer's close_notify; a peer that does not send it within ``timeout``
        is cut off (abort), so no socket outlives a closing node's loop.
        """
        transport = self._transport
        if transport is None:
            return
        if not self._closed:
            self._close_now(None)
        if self._gone.done():
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._gone)
        except TimeoutError:
            self.cut()

    def cut(self) -> None:
        """Close the socket now, without waiting for the peer's close_notify (loop thread)."""
        if self._transport is not None:
            self._transport.abort()
        self._finish(ConnectionLost(f"connection to {self.remote} cut off"))

    def _close_now(self, reason: BaseException | None) -> None:
        if self._closed:
            return
        if self._transport is not None:
            if reason is not None:
                self._transport.abort()
            else:
                self._transport.close()
                if not self._gone.done():
                    _UNFINISHED.add(self)
        self._finish(reason)
