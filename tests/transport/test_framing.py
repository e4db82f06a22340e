"""Frames on a byte stream: however the bytes are cut, the same frames come out.

``FrameReader`` (the event-loop parser) and ``BlockingFramer`` (the direct-call
path) read the same wire format; both refuse oversize and over-buffered frames
as soon as the header says so.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlet.codec import Buffer
from netlet.errors import FrameTooLarge, ProtocolError
from netlet.transport import BlockingFramer, FrameReader, frame_parts
from tests.conftest import frame

Frame = tuple[bytes, list[bytes]]
MAX_FRAME = 64 * 1024 * 1024


class Collector:
    """A FrameReader whose frames are copied out as they arrive (the body is only
    valid during the callback)."""

    def __init__(self, max_frame: int = MAX_FRAME, max_buffers: int = 64) -> None:
        self.frames: list[Frame] = []
        self.kinds: list[tuple[type, ...]] = []
        self.reader = FrameReader(self._on_message, max_frame, max_buffers)
        # As a connection does once the handshake raises max_frame: the ring may grow to
        # its full size. (Before it, frames are at most handshake_max, 16 KiB, and the
        # 32 KiB handshake ring grew by a byte per read for larger ones: 45 s a run.)
        self.reader.authenticated()

    def _on_message(self, body: memoryview, buffers: list[Buffer]) -> None:
        self.frames.append((bytes(body), [bytes(b) for b in buffers]))
        self.kinds.append(tuple(type(b) for b in buffers))

    def feed(self, data: bytes, sizes: Iterator[int] | None = None) -> None:
        """Feed ``data`` in chunks of the given sizes (the reader may take less per call)."""
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            want = next(sizes) if sizes is not None else len(data)
            chunk_end = min(len(data), pos + max(1, want))
            while pos < chunk_end:
                buf = self.reader.get_buffer(-1)
                assert len(buf) > 0, "the reader offered an empty buffer"
                n = min(len(buf), chunk_end - pos)
                buf[:n] = view[pos:pos + n]
                pos += n
                self.reader.buffer_updated(n)


def pattern(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def wire(frames: Sequence[Frame]) -> bytes:
    return b"".join(frame(body, *bufs) for body, bufs in frames)


sizes = st.one_of(st.integers(0, 64), st.integers(0, 4096), st.sampled_from([
    0, 1, 8, 131_071, 131_072, 131_073, 262_144, 300_000]))
frames_strategy = st.lists(
    st.tuples(sizes, st.lists(sizes, max_size=3), st.integers(0, 2**32)), min_size=1, max_size=8,
).map(lambda specs: [
    (pattern(b, seed), [pattern(n, seed + i + 1) for i, n in enumerate(bufs)])
    for b, bufs, seed in specs
])


@settings(max_examples=60, deadline=None)
@given(frames_strategy, st.lists(st.integers(1, 400_000), min_size=1), st.randoms())
def test_random_splits_yield_the_same_frames(frames: list[Frame], chunk_sizes: list[int],
                                             rnd: random.Random) -> None:
    data = wire(frames)
    whole = Collector()
    whole.feed(data)
    assert whole.frames == frames

    def cycle() -> Iterator[int]:
        while True:
            yield from chunk_sizes
            yield rnd.randint(1, 70_000)

    split = Collector()
    split.feed(data, cycle())
    assert split.frames == frames


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), st.lists(st.binary(max_size=20), max_size=3)),
                min_size=1, max_size=6))
def test_byte_by_byte_yields_the_same_frames(frames: list[Frame]) -> None:
    data = wire(frames)
    c = Collector()
    c.feed(data, iter(lambda: 1, None))
    assert c.frames == frames
    assert not c.reader.has_data()


def test_frame_parts_match_the_documented_layout() -> None:
    body, bufs = b"hello", [b"a" * 3, memoryview(b"bcd"), bytearray(b"")]
    parts = frame_parts(body, bufs)
    data = b"".join(bytes(p) for p in parts)
    assert data == struct.pack(">II", 5, 3) + struct.pack(">3I", 3, 3, 0) + b"helloaaabcd"
    assert parts[1] is body  # nothing copied
    assert parts[2] is bufs[0]
    assert b"".join(bytes(p) for p in frame_parts(b"x")) == b"\0\0\0\1\0\0\0\0x"


def test_large_frames_with_out_of_band_buffers() -> None:
    big = [pattern(5_000_000, 1), pattern(3_000_000, 2), b"", pattern(200_000, 3)]
    frames = [(b"small", []), (pattern(1000, 4), big), (b"after", [b"x"])]
    c = Collector()
    c.feed(wire(frames), iter(lambda: 1 << 20, None))
    assert c.frames == frames
    # A large frame is received into a buffer of its own and delivered without a copy.
    assert all(k is memoryview for k in c.kinds[1])


def test_many_small_frames_in_one_read() -> None:
    frames = [(f"frame {i}".encode(), [bytes([i % 256])] * (i % 3)) for i in range(5000)]
    c = Collector()
    c.feed(wire(frames))
    assert c.frames == frames


@pytest.mark.parametrize(("body", "bufs", "limit"), [
    (1001, [], 1000),
    (10, [995], 1000),
    (0, [600, 401], 1000),
    (0xFFFFFFFF, [], 1000),
    (0xFFFFFFFF, [], MAX_FRAME),
    (MAX_FRAME, [1], MAX_FRAME),
])
def test_oversize_announced_length_is_refused_from_the_header(body: int, bufs: list[int],
                                                              limit: int) -> None:
    c = Collector(max_frame=limit)
    head = struct.pack(">II", body, len(bufs)) + b"".join(struct.pack(">I", n) for n in bufs)
    with pytest.raises(FrameTooLarge):
        c.feed(head)  # only the header: the reader must not wait for (or allocate) the body
    assert c.frames == []


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    c = Collector(max_frame=1000)
    frames = [(b"b" * 400, [b"x" * 600]), (b"y" * 1000, [])]
    c.feed(wire(frames))
    assert c.frames == frames


@pytest.mark.parametrize("nbufs", [5, 64, 0xFFFFFFFF])
def test_too_many_buffers_is_a_protocol_error(nbufs: int) -> None:
    c = Collector(max_buffers=4)
    with pytest.raises(ProtocolError):
        c.feed(struct.pack(">II", 1, nbufs))
    ok = Collector(max_buffers=4)
    ok.feed(frame(b"b", b"1", b"2", b"3", b"4"))
    assert len(ok.frames[0][1]) == 4


def test_no_buffers_allowed_before_the_handshake() -> None:
    c = Collector(max_frame=16 * 1024, max_buffers=0)
    with pytest.raises(ProtocolError):
        c.feed(frame(b"hello", b"x"))


# -- the blocking framer on a real socket pair --------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _write_in_pieces(sock: socket.socket, data: bytes, seed: int) -> threading.Thread:
    rnd = random.Random(seed)

    def run() -> None:
        pos = 0
        while pos < len(data):
            n = rnd.randint(1, 200_000)
            sock.sendall(data[pos:pos + n])
            pos += n

    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_blocking_framer_reads_what_frame_reader_reads(
        pair: tuple[socket.socket, socket.socket], seed: int) -> None:
    rnd = random.Random(seed)
    frames = [(pattern(rnd.choice([0, 10, 70_000, 1_000_000]), seed + i),
               [pattern(rnd.choice([0, 5, 300_000]), seed * 100 + j)
                for j in range(rnd.randint(0, 3))]) for i in range(12)]
    a, b = pair
    writer = _write_in_pieces(a, wire(frames), seed)
    framer = BlockingFramer(b, MAX_FRAME, 64)
    got = []
    for _ in frames:
        body, bufs = framer.recv(timeout=10)
        got.append((bytes(body), [bytes(x) for x in bufs]))
    writer.join()
    assert got == frames


def test_blocking_framer_writes_what_frame_reader_reads(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    frames = [(b"small", []), (pattern(100_000, 1), [pattern(500_000, 2), b"z"]), (b"", [])]
    sender = BlockingFramer(a, MAX_FRAME, 64)
    received = bytearray()
    expected = len(wire(frames))

    def send_all() -> None:
        for body, bufs in frames:
            sender.send(body, bufs)

    t = threading.Thread(target=send_all)
    t.start()
    b.settimeout(10)
    while len(received) < expected:
        received += b.recv(1 << 20)
    t.join()
    assert bytes(received) == wire(frames)
    c = Collector()
    c.feed(bytes(received), iter(lambda: 4096, None))
    assert c.frames == frames


def test_blocking_framer_refuses_oversize_and_over_buffered_frames(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    framer = BlockingFramer(b, 1000, 2)
    a.sendall(struct.pack(">II", 0xFFFFFFFF, 0))
    with pytest.raises(FrameTooLarge):
        framer.recv(timeout=5)
    framer2 = BlockingFramer(a, 1000, 2)
    b.sendall(struct.pack(">II", 1, 3))
    with pytest.raises(ProtocolError):
        framer2.recv(timeout=5)


def test_blocking_framer_times_out_without_a_frame(
        pair: tuple[socket.socket, socket.socket]) -> None:
    _, b = pair
    framer = BlockingFramer(b, 1000, 2)
    with pytest.raises(TimeoutError):
        framer.recv(timeout=0.05)


@pytest.mark.timeout(60)
@settings(max_examples=60, deadline=None)
@given(bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=20),
       cuts=st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_blocking_framer_small_frames_in_any_pieces(bodies: list[bytes], cuts: list[int]) -> None:
    # Small bodies without buffers take the reader's quick path: several in one read,
    # one split across reads, one ending exactly where the read did.
    data = wire([(body, []) for body in bodies])
    a, b = socket.socketpair()
    with a, b:
        pos, i = 0, 0
        while pos < len(data):
            n = cuts[i % len(cuts)]
            a.sendall(data[pos:pos + n])
            pos, i = pos + n, i + 1
        framer = BlockingFramer(b, MAX_FRAME, 64)
        got = []
        for _ in bodies:
            body, bufs = framer.recv(timeout=10)
            got.append(bytes(body))
            assert not bufs
        assert got == bodies
