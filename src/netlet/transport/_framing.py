"""Frames on a byte stream: an 8-byte header, the body, then out-of-band buffers.

    header  := body_len:u32be  nbufs:u32be  buf_len:u32be * nbufs
    frame   := header body buf_0 ... buf_{nbufs-1}

With same-host shared memory agreed (``_shm``, PROTOCOL.md 9.1), a buffer length
with its top bit set names a memfd of that size whose 4-byte descriptor number is
all the stream carries, and a frame of ``nbufs = 0xFFFFFFFF`` acks memfds opened.

``FrameReader`` follows asyncio's BufferedProtocol call order (``get_buffer`` then
``buffer_updated``), so sockets read straight into it; large frames get a buffer
of their own, so their payload is received once and never copied again.

Memory follows the bytes that came, never what a header announces: the ring is
allocated on the first byte, starts at 4 KiB and doubles only when full (up to
256 KiB once the handshake is done, 32 KiB before); a large frame's buffer is
filled page by page (``GrowingBuffer``), or reuses a buffer an earlier frame
left to the budget's cache. All of it is charged to the connection's
``Account`` and given back on ``close``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from netlet.codec import Buffer
from netlet.errors import FrameTooLarge, ProtocolError
from netlet.transport._budget import Account, GrowingBuffer
from netlet.transport._shm import ACK, DESCRIPTOR, MAX_SIZE, SHM_FLAG, ShmLink

__all__ = ["FrameReader", "MessageHandler", "frame_parts", "frame_size", "split_lens",
           "stream_lens"]

_HEAD = struct.Struct(">II")
_RING_MIN = 4 * 1024
_RING_HANDSHAKE = 32 * 1024
_RING = 256 * 1024
_BIG = _RING // 2

_NO_BYTES = bytearray()  # shared by every reader that has no ring yet (never written)
_NO_VIEW = memoryview(_NO_BYTES)

MessageHandler = Callable[[memoryview, list[Buffer]], None]
"""Called with (body, buffers) for each frame; the body is valid only during the call."""


def frame_parts(body: Buffer, buffers: Sequence[Buffer] = (),
                shm: ShmLink | None = None) -> list[Buffer]:
    """The pieces to write for one frame, without copying body or buffers; with
    ``shm``, large buffers go as sealed memfds (copied once into them)."""
    if not buffers:
        return [_HEAD.pack(len(body), 0), body]
    lens = [len(b) for b in buffers]  # one byte per item: the codec casts memoryviews
    if shm is not None:
        buffers = list(buffers)
        for i, n in enumerate(lens):
            if shm.wants(n):
                try:
                    size, buffers[i] = shm.export(buffers[i])
                except OSError:
                    continue  # no memory or descriptors for it: the bytes go inline
                lens[i] = SHM_FLAG | size
    head = _HEAD.pack(len(body), len(lens)) + struct.pack(f">{len(lens)}I", *lens)
    return [head, body, *buffers]


def stream_lens(lens: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """The bytes each buffer takes in the stream (a memfd's: its 4-byte descriptor),
    and the frame's buffers' total size in memory."""
    return (tuple(DESCRIPTOR.size if n & SHM_FLAG else n for n in lens),
            sum(n & MAX_SIZE if n & SHM_FLAG else n for n in lens))


def split_lens(lens: tuple[int, ...], body_len: int, agreed: bool,
               max_frame: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A frame head's buffer lengths as (what the stream carries, the raw lengths if any
    buffer is a memfd, else ``()``); refused on a connection that did not agree, or
    when the values the frame stands for pass ``max_frame``."""
    if not any(n & SHM_FLAG for n in lens):
        return lens, ()
    if not agreed:
        raise ProtocolError("a shared-memory buffer on a connection that did not agree to "
                            "shared memory")
    stream, size = stream_lens(lens)
    if body_len + size > max_frame:
        raise FrameTooLarge(f"frame of {body_len + size} bytes (limit {max_frame})")
    return stream, lens


def frame_size(parts: Sequence[Buffer]) -> int:
    return sum(memoryview(p).nbytes for p in parts)


class FrameReader:
    """Incremental frame parser with a reusable ring buffer."""

    def __init__(self, on_message: MessageHandler, max_frame: int, max_buffers: int,
                 account: Account | None = None) -> None:
        self.on_message = on_message
        self.max_frame = max_frame
        self.max_buffers = max_buffers
        self.account = account
        self._ring_max = _RING_HANDSHAKE
        self._buf = _NO_BYTES  # allocated when the first byte comes
        self._view = _NO_VIEW
        self._start = 0
        self._end = 0
        self.paused = False
        """Set by the owner to stop delivery after the current frame (backpressure)."""
        self.admit: Callable[[int], bool] | None = None
        """Set by the connection to admit large frames into the budget (``Budget.admit``):
        returns False when the frame must wait; the connection then stops reading and
        calls ``admitted`` once the bytes are set aside."""
        self._stalled = False
        self._admitted = 0
        # A large frame in progress: its own buffer and how much is filled.
        self._big: GrowingBuffer | None = None
        self._big_lens: tuple[int, ...] = ()
        self._big_pos = 0
        self._big_shm: tuple[int, ...] = ()  # the large frame's lengths, if it has memfds
        self.shm: ShmLink | None = None
        """Set once the handshake agreed to shared memory (``_shm``)."""
        self.send_ack: Callable[[list[int]], None] = _no_ack
        """Sends an ack frame naming the peer's memfds we opened."""

    def authenticated(self) -> None:
        """The handshake is done: let the ring grow to its full size when busy."""
        self._ring_max = _RING

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        big = self._big
        if big is not None:
            return big.window(self._big_pos)
        if self._end == len(self._buf):
            if self._start:
                self._compact()
            else:
                self._grow(len(self._buf) + 1)
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """Account for ``nbytes`` received; deliver every complete frame."""
        big = self._big
        if big is not None:
            self._big_pos += nbytes
            if self._big_pos == big.size:
                lens = self._big_lens
                self._big = None
                big.give_back(keep=True)
                self._deliver_big(memoryview(big.map), lens)
            return
        self._end += nbytes
        self._parse()

    def has_data(self) -> bool:
        return self._big is not None or self._end > self._start

    def memory(self) -> int:
        """Bytes this reader holds right now (ring and any large frame so far)."""
        return len(self._buf) + (self._big.ready if self._big is not None else 0)

    def _grow(self, need: int) -> None:
        """A larger ring (doubling), keeping the unread bytes at its start."""
        size = max(len(self._buf), _RING_MIN // 2)
        while size < need:
            size *= 2
        size = min(size, max(self._ring_max, need))
        old, n = self._view, self._end - self._start
        buf = bytearray(size)
        buf[:n] = old[self._start : self._end]
        if self.account is not None:
            self.account.charge(size - len(self._buf))
        self._buf, self._view = buf, memoryview(buf)
        self._start, self._end = 0, n

    def _compact(self) -> None:
        n = self._end - self._start
        if self._start:
            self._buf[:n] = self._buf[self._start : self._end]
        self._start, self._end = 0, n

    def resume(self) -> None:
        """Deliver the frames that waited while paused."""
        self.paused = False
        self._parse()

    def admitted(self, n: int) -> None:
        """The large frame that waited has ``n`` bytes set aside: go on with it."""
        self._stalled = False
        self._admitted = n
        self._parse()

    def close(self) -> None:
        """Drop every buffer and give the memory back; nothing is delivered after this."""
        if self._big is not None:
            self._big.give_back()
            self._big = None
        if self.account is not None:
            self.account.release(len(self._buf))
            self.account.budget.withdraw(self._admitted)
            self.account = None
        self._admitted = 0
        self._buf, self._view = _NO_BYTES, _NO_VIEW
        self._start = self._end = 0
        self.paused = True
        self.on_message = _dropped  # no reference back to the connection: no cycle
        self.admit = None

    def _parse(self) -> None:
        buf, view = self._buf, self._view
        while not self.paused and not self._stalled:
            start = self._start
            avail = self._end - start
            if avail < 8:
                break
            body_len, nbufs = _HEAD.unpack_from(buf, start)
            if nbufs > self.max_buffers:
                if nbufs == ACK and self.shm is not None:
                    if not self._ack(buf, view, start, avail, body_len):
                        break
                    continue
                raise ProtocolError(f"frame announces {nbufs} buffers (limit {self.max_buffers})")
            head = 8 + 4 * nbufs
            if avail < head:
                if start + head > len(buf):
                    self._compact()
                    if head > len(self._buf):
                        self._grow(head)
                break
            lens: tuple[int, ...] = (
                struct.unpack_from(f">{nbufs}I", buf, start + 8) if nbufs else ()
            )
            shm_lens: tuple[int, ...] = ()
            if nbufs:  # most frames carry no buffer: no call for them
                lens, shm_lens = split_lens(lens, body_len, self.shm is not None,
                                            self.max_frame)
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
                    self._deliver_small(view, b0, body_len, lens, shm_lens)
                continue
            if payload > _BIG:
                acct = self.account
                big = None
                if acct is not None and not self._admitted:
                    big = GrowingBuffer.take(payload, acct)  # counted already: no admission
                if big is None:
                    aside = 0
                    if self.admit is not None:
                        if self._admitted:
                            aside, self._admitted = self._admitted, 0
                        elif self.admit(payload):
                            aside = payload
                        else:
                            self._stalled = True  # the connection reads on once admitted
                            break
                    big = GrowingBuffer(payload, acct, aside)
                # Move what we have into a buffer of its own and read the rest into it.
                have = avail - head
                big.window(0)[:have] = view[start + head : self._end]
                self._big, self._big_lens, self._big_pos = big, (body_len, *lens), have
                self._big_shm = shm_lens
                self._start = self._end = 0
                return
            if start + total > len(buf):
                self._compact()  # the ring grows (in get_buffer) only once this is full
            break
        if self._start == self._end:
            self._start = self._end = 0

    def _deliver_small(
        self, view: memoryview, b0: int, body_len: int, lens: tuple[int, ...],
        shm_lens: tuple[int, ...] = (),
    ) -> None:
        # Buffers in the ring are copied: the ring is reused once we return.
        pos = b0 + body_len
        bufs: list[Buffer] = []
        for n in lens:
            bufs.append(bytes(view[pos : pos + n]))
            pos += n
        if shm_lens:
            self._open_shm(bufs, shm_lens)
        self.on_message(view[b0 : b0 + body_len], bufs)

    def _deliver_big(self, big: Buffer, lens: tuple[int, ...]) -> None:
        view = memoryview(big)
        body_len, *buf_lens = lens
        pos = body_len
        bufs: list[Buffer] = []
        for n in buf_lens:
            bufs.append(view[pos : pos + n])
            pos += n
        if self._big_shm:
            shm_lens, self._big_shm = self._big_shm, ()
            self._open_shm(bufs, shm_lens)
        self.on_message(view[:body_len], bufs)

    def _open_shm(self, bufs: list[Buffer], shm_lens: tuple[int, ...]) -> None:
        """Map the frame's memfds in place of their descriptors, and ack them."""
        assert self.shm is not None
        self.send_ack(self.shm.open_all(bufs, shm_lens))

    def _ack(self, buf: bytearray, view: memoryview, start: int, avail: int,
             body_len: int) -> bool:
        """An ack frame at ``start``: close what it names; False if it is not whole yet."""
        assert self.shm is not None
        if body_len > 4 * max(self.max_buffers, 1):
            raise ProtocolError(f"shared-memory ack of {body_len} bytes")
        total = 8 + body_len
        if avail < total:
            if start + total > len(buf):
                self._compact()
            return False
        self._start = start + total
        self.shm.acked(view[start + 8 : start + total])
        return True


def _no_ack(fds: list[int]) -> None:
    """The ack sender of a reader with no shared memory."""


def _dropped(body: memoryview, buffers: list[Buffer]) -> None:
    """The handler of a closed reader (holds no reference to its old owner)."""
