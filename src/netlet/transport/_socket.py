"""Plain TCP and unix-socket connections, driven by the loop's reader/writer hooks.

Any thread may write: a frame goes straight to the kernel with one ``sendmsg``
when nothing is queued ahead of it (no hop to the loop thread on the blocking
call path). Frames sent from the loop thread are batched until the end of the
loop iteration, so pipelined calls share syscalls; so are frames a thread sends
while it said more follow (``more_follows``: an actor with calls waiting), which
the loop writes together at its next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections import deque
from collections.abc import Sequence
from itertools import islice

from netlet.codec import Buffer
from netlet.errors import ConnectionLost, ProtocolError
from netlet.transport._budget import Account
from netlet.transport._framed import FramedConnection
from netlet.transport._framing import frame_parts
from netlet.transport._shm import ShmLink, ShmPeer, ack_frame

__all__ = ["SocketConnection", "more_follows"]

_IOV_MAX = 512
_hint = threading.local()


def more_follows(flag: bool) -> None:
    """Tell the transport whether the calling thread will send again right away.

    While True, its frames are queued and written by the loop at its next turn,
    several per ``sendmsg``, instead of one syscall each; nothing waits on the
    thread itself, so a frame is never held back by what the thread does next.
    """
    _hint.more = flag


class SocketConnection(FramedConnection):
    """One non-blocking stream socket owned by a loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        remote: str,
        max_frame: int,
        max_buffers: int = 0,
        account: Account | None = None,
    ) -> None:
        super().__init__(loop, remote, max_frame, max_buffers, account)
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._fd = sock.fileno()
        self._lock = threading.Lock()
        self._queue: deque[Buffer] = deque()
        self._queued = 0
        self._written = 0  # bytes the kernel took, since the start (see send_progress)
        self._flush_scheduled = False
        self._writer_armed = False
        self._reading = True
        self._drained: asyncio.Future[None] | None = None
        self._shm: ShmLink | None = None
        loop.add_reader(self._fd, self._on_readable)

    def pending_bytes(self) -> int:
        return self._queued

    def send_progress(self) -> tuple[int, int]:
        with self._lock:
            return self._written, self._queued

    # -- reading (loop thread) ------------------------------------------

    def _on_readable(self) -> None:
        reader = self._reader
        try:
            n = self._sock.recv_into(reader.get_buffer())
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close_now(ConnectionLost(f"connection to {self.remote} failed: {e}"))
            return
        if n == 0:
            if reader.has_data():
                self.warn(logging.WARNING, "connection from %s closed mid-frame: a truncated "
                          "frame was dropped", self.remote)
            self._close_now(ConnectionLost(f"{self.remote} closed the connection"))
            return
        try:
            reader.buffer_updated(n)
        except ProtocolError as e:
            self._protocol_error(e)

    def _sync_reading(self) -> None:
        if self._closed:
            return  # _close_now removed the reader; the fd number may be reused already
        want = self._wants_reading()
        if want != self._reading:
            self._reading = want
            if want:
                self.loop.add_reader(self._fd, self._on_readable)
            else:
                self.loop.remove_reader(self._fd)

    # -- writing (any thread) -------------------------------------------

    def raw_socket(self) -> socket.socket | None:
        return None if self._closed else self._sock

    def enable_shm(self, peer: ShmPeer) -> None:
        """The handshake agreed to shared memory: large buffers go as memfds (loop thread)."""
        self._shm = self._reader.shm = ShmLink(peer, self.account)
        self._reader.send_ack = self._send_ack

    def _send_ack(self, fds: list[int]) -> None:
        if fds and not self._closed:
            self._send_parts(ack_frame(fds))

    def send(self, body: Buffer, buffers: Sequence[Buffer] = ()) -> None:
        self._send_parts(frame_parts(body, buffers, self._shm) if buffers
                         else frame_parts(body))

    def _send_parts(self, parts: list[Buffer]) -> None:
        on_loop = self.in_loop_thread()
        with self._lock:
            if self._closed:
                raise ConnectionLost(f"connection to {self.remote} is closed")
            if not self._queue and not on_loop and not getattr(_hint, "more", False):
                try:
                    sent = self._sock.sendmsg(parts)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as e:
                    self.loop.call_soon_threadsafe(self._close_now, ConnectionLost(str(e)))
                    raise ConnectionLost(f"send to {self.remote} failed: {e}") from None
                self._written += sent
                self._enqueue(parts, sent)
                if self._queue and not self._writer_armed:
                    self._writer_armed = True
                    self.loop.call_soon_threadsafe(self._arm_writer)
                return
            self._enqueue(parts, 0)
            if self._flush_scheduled or self._writer_armed:
                return
            self._flush_scheduled = True
        if on_loop:
            self.loop.call_soon(self._flush)
        else:
            self.loop.call_soon_threadsafe(self._flush)

    def _enqueue(self, parts: list[Buffer], skip: int) -> None:
        """Queue what is left of ``parts`` after ``skip`` bytes were sent (lock held).

        Parts are bytes-like with one byte per item (the codec sees to that), so
        ``len`` is their size and nothing is copied or cast unless cut.
        """
        q = self._queue
        added = 0
        for p in parts:
            n = len(p)
            if skip:
                if skip >= n:
                    skip -= n
                    continue
                p, n, skip = memoryview(p)[skip:], n - skip, 0
            q.append(p)
            added += n
        if added:
            self._queued += added
            if self.account is not None:
                self.account.queue(added)

    def _write_some(self) -> None:
        """Write as much of the queue as the kernel takes (lock held)."""
        q = self._queue
        while q:
            iov = list(islice(q, _IOV_MAX))
            try:
                sent = self._sock.sendmsg(iov)
            except (BlockingIOError, InterruptedError):
                return
            self._queued -= sent
            self._written += sent
            if self.account is not None:
                self.account.unqueue(sent)
            while sent:
                head = q[0]
                if sent < len(head):
                    q[0] = memoryview(head)[sent:]
                    return  # the kernel took only part: wait until writable
                sent -= len(head)
                q.popleft()

    def _flush(self) -> None:
        with self._lock:
            self._flush_scheduled = False
            if self._closed:
                return
            try:
                self._write_some()
            except OSError as e:
                err = e
            else:
                if self._queue and not self._writer_armed:
                    self._writer_armed = True
                    self.loop.add_writer(self._fd, self._on_writable)
                return
        self._close_now(ConnectionLost(f"send to {self.remote} failed: {err}"))

    def _arm_writer(self) -> None:
        if not self._closed:
            self.loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        with self._lock:
            try:
                self._write_some()
            except OSError as e:
                err = e
            else:
                if not self._queue:
                    self._writer_armed = False
                    self.loop.remove_writer(self._fd)
                    if self._drained is not None and not self._drained.done():
                        self._drained.set_result(None)
                return
        self._close_now(ConnectionLost(f"send to {self.remote} failed: {err}"))

    def detach(self) -> socket.socket | None:
        """Hand the socket to a thread doing blocking I/O (loop thread; after the handshake).

        Returns None if bytes already arrived beyond the handshake: the caller
        then keeps using this connection on the loop.
        """
        if self._closed or self._reader.has_data():
            return None
        with self._lock:
            try:
                self._write_some()  # the handshake's last frame may still be queued
            except OSError:
                return None
            if self._queue:
                return None
            if self._writer_armed:
                self.loop.remove_writer(self._fd)
        self.loop.remove_reader(self._fd)
        if self._shm is not None:
            self._shm.close()  # (nothing sent yet: the handshake carries no buffers)
        self._closed = True  # this object is done; the socket lives on elsewhere
        self._reader.close()
        self._release_account()
        sock, self._sock = self._sock, socket.socket()
        self._sock.close()
        return sock

    # -- closing ----------------------------------------------------------

    def close(self, reason: BaseException | None = None) -> None:
        if self.in_loop_thread():
            self._close_now(reason)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._close_now, reason)

    async def drain_and_close(self, timeout: float = 1.0) -> None:
        with self._lock:
            if self._queue and not self._closed:
                self._drained = self.loop.create_future()
                if not self._writer_armed:
                    self._writer_armed = True
                    self.loop.add_writer(self._fd, self._on_writable)
        if self._drained is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._drained
        self.close()

    def _close_now(self, reason: BaseException | None) -> None:
        if self._closed:
            return
        with self._lock:
            self._queue.clear()
            self._queued = 0
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)
            self._drained = None
        if self._shm is not None:
            self._shm.close()
        try:
            self.loop.remove_reader(self._fd)
            self.loop.remove_writer(self._fd)
        except (ValueError, RuntimeError):  # loop already closed
            pass
        try:
            self._sock.close()
        finally:
            self._finish(reason)
