"""Blocking frame I/O on a socket owned by one thread at a time (the direct call path).

Same wire format as ``_framing``; used when a thread sends a request and reads
its own reply, which saves two thread hops per call compared with going
through the event loop.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from netlet.codec import Buffer
from netlet.errors import ConnectionLost, FrameTooLarge, ProtocolError
from netlet.transport._framing import frame_parts

__all__ = ["BlockingFramer"]

_HEAD = struct.Struct(">II")


class BlockingFramer:
    """Send and receive whole frames on a blocking socket."""

    def __init__(self, sock: socket.socket, max_frame: int, max_buffers: int) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.max_frame = max_frame
        self.max_buffers = max_buffers
        # Small frames are read whole, usually with a single recv, into a reused buffer.
        self._buf = bytearray(64 * 1024)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._timeout: float | None = None

    def send(self, body: Buffer, buffers: Sequence[Buffer] = ()) -> None:
        if not buffers and len(body) < 16384:
            try:
                self.sock.sendall(_HEAD.pack(len(body), 0) + body)
            except OSError as e:
                raise ConnectionLost(f"send failed: {e}") from None
            return
        parts = [memoryview(p).cast("B") for p in frame_parts(body, buffers)]
        try:
            while parts:
                sent = self.sock.sendmsg(parts)
                while sent:
                    if sent >= parts[0].nbytes:
                        sent -= parts[0].nbytes
                        parts.pop(0)
                    else:
                        parts[0] = parts[0][sent:]
                        sent = 0
        except OSError as e:
            raise ConnectionLost(f"send failed: {e}") from None

    def _fill(self, need: int) -> None:
        """Make at least ``need`` bytes available from ``_start`` in the buffer."""
        if self._start + need > len(self._buf):
            n = self._end - self._start
            self._buf[:n] = self._buf[self._start : self._end]
            self._start, self._end = 0, n
        while self._end - self._start < need:
            got = self.sock.recv_into(self._view[self._end :])
            if got == 0:
                raise ConnectionLost("the peer closed the connection")
            self._end += got

    def _read_exact(self, view: memoryview) -> None:
        sock = self.sock
        while view.nbytes:
            n = sock.recv_into(view)
            if n == 0:
                raise ConnectionLost("the peer closed the connection")
            view = view[n:]

    def has_partial(self) -> bool:
        """Bytes of an unfinished frame are buffered (the peer stopped mid-frame)."""
        return self._end > self._start

    def _set_timeout(self, timeout: float | None) -> None:
        # The kernel's receive timeout: a socket timeout in Python would add a poll()
        # before every recv.
        if timeout != self._timeout:
            t = 0.0 if timeout is None else max(timeout, 1e-3)
            sec = int(t)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 struct.pack("ll", sec, int((t - sec) * 1e6)))
            self._timeout = timeout

    def recv(self, timeout: float | None = None) -> tuple[memoryview, list[Buffer]]:
        """One frame; the body is valid until the next ``recv``. Raises TimeoutError."""
        try:
            if self._end - self._start < 8:
                self._set_timeout(timeout)
                self._fill(8)
            body_len, nbufs = _HEAD.unpack_from(self._buf, self._start)
            if nbufs > self.max_buffers:
                raise ProtocolError(f"frame announces {nbufs} buffers")
            head = 8 + 4 * nbufs
            self._fill(head)
            lens: tuple[int, ...] = (
                struct.unpack_from(f">{nbufs}I", self._buf, self._start + 8) if nbufs else ())
            payload = body_len + sum(lens)
            if payload > self.max_frame:
                raise FrameTooLarge(f"frame of {payload} bytes (limit {self.max_frame})")
            if head + payload <= len(self._buf):
                self._fill(head + payload)
                p0 = self._start + head
                self._start += head + payload
                if self._start == self._end:
                    self._start = self._end = 0
                view = self._view[p0 : p0 + payload]
                bufs = _split(view, body_len, lens, copy=True)
                return view[:body_len], bufs
            # A large frame: give it a buffer of its own, and receive straight into it.
            big = bytearray(payload)
            have = min(self._end - self._start - head, payload)
            big[:have] = self._view[self._start + head : self._start + head + have]
            self._start = self._end = 0
            self._read_exact(memoryview(big)[have:])
            view = memoryview(big)
            return view[:body_len], _split(view, body_len, lens, copy=False)
        except (TimeoutError, BlockingIOError):  # SO_RCVTIMEO expired, maybe mid-frame
            raise TimeoutError("no complete frame within the timeout") from None
        except OSError as e:
            raise ConnectionLost(f"receive failed: {e}") from None

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _split(view: memoryview, body_len: int, lens: tuple[int, ...], copy: bool) -> list[Buffer]:
    bufs: list[Buffer] = []
    pos = body_len
    for n in lens:
        bufs.append(bytes(view[pos : pos + n]) if copy else view[pos : pos + n])
        pos += n
    return bufs
