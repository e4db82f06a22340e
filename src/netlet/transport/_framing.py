"""Frames on a byte stream: an 8-byte header, the body, then out-of-band buffers.

    header  := body_len:u32be  nbufs:u32be  buf_len:u32be * nbufs
    frame   := header body buf_0 ... buf_{nbufs-1}

``FrameReader`` follows asyncio's BufferedProtocol call order (``get_buffer`` then
``buffer_updated``), so sockets read straight into it; large frames get a buffer
of their own, so their payload is received once and never copied again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from netlet.codec import Buffer
from netlet.errors import FrameTooLarge, ProtocolError

__all__ = ["FrameReader", "MessageHandler", "frame_parts", "frame_size"]

_HEAD = struct.Struct(">II")
_RING = 256 * 1024
_BIG = _RING // 2

MessageHandler = Callable[[memoryview, list[Buffer]], None]
"""Called with (body, buffers) for each frame; the body is valid only during the call."""


def frame_parts(body: Buffer, buffers: Sequence[Buffer] = ()) -> list[Buffer]:
    """The pieces to write for one frame, without copying body or buffers."""
    if not buffers:
        return [_HEAD.pack(len(body), 0), body]
    lens = [len(b) for b in buffers]  # one byte per item: the codec casts memoryviews
    head = _HEAD.pack(len(body), len(lens)) + struct.pack(f">{len(lens)}I", *lens)
    return [head, body, *buffers]


def frame_size(parts: Sequence[Buffer]) -> int:
    return sum(memoryview(p).nbytes for p in parts)


class FrameReader:
    """Incremental frame parser with a reusable ring buffer."""

    def __init__(self, on_message: MessageHandler, max_frame: int, max_buffers: int) -> None:
        self.on_message = on_message
        self.max_frame = max_frame
        self.max_buffers = max_buffers
        self._buf = bytearray(_RING)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self.paused = False
        """Set by the owner to stop delivery after the current frame (backpressure)."""
        # A large frame in progress: its own buffer and how much is filled.
        self._big: bytearray | None = None
        self._big_lens: tuple[int, ...] = ()
        self._big_pos = 0

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        if self._big is not None:
            return memoryview(self._big)[self._big_pos :]
        if self._end == len(self._buf):
            self._compact()
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """Account for ``nbytes`` received; deliver every complete frame."""
        if self._big is not None:
            self._big_pos += nbytes
            if self._big_pos == len(self._big):
                big, lens = self._big, self._big_lens
                self._big = None
                self._deliver_big(big, lens)
            return
        self._end += nbytes
        self._parse()

    def has_data(self) -> bool:
        return self._big is not None or self._end > self._start

    def _compact(self) -> None:
        n = self._end - self._start
        if self._start:
            self._buf[:n] = self._buf[self._start : self._end]
        self._start, self._end = 0, n

    def resume(self) -> None:
        """Deliver the frames that waited while paused."""
        self.paused = False
        self._parse()

    def _parse(self) -> None:
        buf, view = self._buf, self._view
        while not self.paused:
            start = self._start
            avail = self._end - start
            if avail < 8:
                break
            body_len, nbufs = _HEAD.unpack_from(buf, start)
            if nbufs > self.max_buffers:
                raise ProtocolError(f"frame announces {nbufs} buffers (limit {self.max_buffers})")
            head = 8 + 4 * nbufs
            if avail < head:
                break
            lens: tuple[int, ...] = (
                struct.unpack_from(f">{nbufs}I", buf, start + 8) if nbufs else ()
            )
            payload = body_len + sum(lens)
            if payload > self.max_frame:
                raise FrameTooLarge(f"frame of {payload} bytes (limit {self.max_frame})")
            total = head + payload
            if avail >= total:
                self._start = start + total
                b0 = start + head
                if not nbufs:
                    self.on_message(view[b0 : b0 + body_len], [])
                else:
                    self._deliver_small(view, b0, body_len, lens)
                continue
            if payload > _BIG:
                # Move what we have into a frame-sized buffer and read the rest into it.
                big = bytearray(payload)
                have = avail - head
                big[:have] = view[start + head : self._end]
                self._big, self._big_lens, self._big_pos = big, (body_len, *lens), have
                self._start = self._end = 0
                return
            if start + total > len(buf):
                self._compact()
            break
        if self._start == self._end:
            self._start = self._end = 0

    def _deliver_small(
        self, view: memoryview, b0: int, body_len: int, lens: tuple[int, ...]
    ) -> None:
        # Buffers in the ring are copied: the ring is reused once we return.
        pos = b0 + body_len
        bufs: list[Buffer] = []
        for n in lens:
            bufs.append(bytes(view[pos : pos + n]))
            pos += n
        self.on_message(view[b0 : b0 + body_len], bufs)

    def _deliver_big(self, big: bytearray, lens: tuple[int, ...]) -> None:
        view = memoryview(big)
        body_len, *buf_lens = lens
        pos = body_len
        bufs: list[Buffer] = []
        for n in buf_lens:
            bufs.append(view[pos : pos + n])
            pos += n
        self.on_message(view[:body_len], bufs)
