"""A connection wrapper that misbehaves on purpose, per direction, for tests.

Wrap any transport's connection: drop, delay, duplicate or reorder frames, cap
bandwidth, cut the connection after N frames, reset it, or partition it (drop or hold
everything both ways) until healed. Randomness comes from a seeded generator so
a failing test can be replayed.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netlet.clock import REAL_CLOCK, Clock
from netlet.codec import Buffer
from netlet.errors import ConfigError, ConnectionLost
from netlet.transport._base import CloseHandler, Connection
from netlet.transport._framing import MessageHandler

__all__ = ["Faults", "FaultyConnection"]


@dataclass(frozen=True, slots=True)
class Faults:
    """What to do to frames going one way. Probabilities are per frame."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    """Hold a frame back and let the next one overtake it."""
    delay: float = 0.0
    """Seconds added to every frame (order kept)."""
    jitter: float = 0.0
    """Extra random delay in [0, jitter) seconds; frames may then overtake each other."""
    bandwidth: float | None = None
    """Bytes per second at most."""
    cut_after: int | None = None
    """Close the connection when this many frames have gone this way."""
    reset: float = 0.0
    """Close the connection at a frame, which is lost (what TCP does once it gives up
    on a segment: a stream loses data only by breaking)."""

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "reset"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"Faults.{name} is a probability in [0, 1]")
        bad_bw = self.bandwidth is not None and self.bandwidth <= 0
        if self.delay < 0 or self.jitter < 0 or bad_bw:
            raise ConfigError("Faults delays and bandwidth must be positive")


_Frame = tuple[bytes, list[bytes]]


class _Direction:
    """Applies one ``Faults`` to a stream of frames, then emits them."""

    def __init__(self, conn: FaultyConnection, faults: Faults,
                 emit: Callable[[_Frame], None]) -> None:
        self.conn = conn
        self.faults = faults
        self.emit = emit  # Callable[[_Frame], None], run on the loop
        self.count = 0
        self.held: _Frame | None = None
        self.stalled: list[_Frame] = []
        """Frames a holding partition keeps until it heals."""
        self.next_free = 0.0
        self.last_due = 0.0

    def push(self, frame: _Frame) -> None:
        """Loop thread: decide the fate of one frame."""
        f, conn = self.faults, self.conn
        if conn.partitioned:
            if conn.holding:
                self.stalled.append(frame)
            return
        self.count += 1
        if f.cut_after is not None and self.count > f.cut_after:
            conn.close(ConnectionLost("fault injection: connection cut"))
            return
        rng = conn.rng
        if f.reset and rng.random() < f.reset:
            conn.partition()  # nothing more leaves or arrives, then the close is seen
            conn.close(ConnectionLost("fault injection: connection reset"))
            return
        if f.drop and rng.random() < f.drop:
            return
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        if f.reorder and self.held is None and rng.random() < f.reorder:
            self.held = frame
            conn.clock.call_later(conn.loop, 0.05, self._release_held, frame)  # never strand it
            return
        for _ in range(copies):
            self._schedule(frame)
        if self.held is not None:
            held, self.held = self.held, None
            self._schedule(held)

    def _release_held(self, frame: _Frame) -> None:
        if self.held is frame:
            self.held = None
            self._schedule(frame)

    def _schedule(self, frame: _Frame) -> None:
        f, clock = self.faults, self.conn.clock
        now = clock.monotonic()
        due = now + f.delay + (self.conn.rng.random() * f.jitter if f.jitter else 0.0)
        if f.bandwidth is not None:
            size = len(frame[0]) + sum(len(b) for b in frame[1])
            start = max(now, self.next_free)
            self.next_free = start + size / f.bandwidth
            due = max(due, self.next_free)
        if not f.jitter:
            due = max(due, self.last_due)  # a plain delay keeps order
        self.last_due = due
        if due <= now:
            self.emit(frame)
        else:
            clock.call_later(self.conn.loop, due - now, self.emit, frame)


class FaultyConnection(Connection):
    """Wraps ``inner``; ``out`` applies to frames we send, ``into`` to frames we receive."""

    def __init__(
        self,
        inner: Connection,
        out: Faults | None = None,
        into: Faults | None = None,
        *,
        seed: int | None = None,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        super().__init__(inner.loop, inner.remote)
        self.inner = inner
        self.clock = clock  # delays, bandwidth and reorder holds wait on it
        self.rng = random.Random(seed)
        self.partitioned = False
        self.holding = False
        self._lock = threading.Lock()
        self._out = _Direction(self, out or Faults(), self._emit_out)
        self._in = _Direction(self, into or Faults(), self._emit_in)

    def in_loop_thread(self) -> bool:
        return self.inner.in_loop_thread()

    # Partition and heal are the knobs tests turn while traffic flows.
    def partition(self, hold: bool = False) -> None:
        """Nothing gets through either way until ``heal``. Frames are lost, or with
        ``hold`` they wait and go on at the heal, in order, as TCP's retransmissions
        deliver them (a stream loses data only by breaking)."""
        self.partitioned = True
        self.holding = hold

    def heal(self) -> None:
        self.partitioned = False
        self.holding = False
        for direction in (self._out, self._in):
            stalled, direction.stalled = direction.stalled, []
            for frame in stalled:
                direction.push(frame)

    def sever(self) -> None:
        """The process owning this end died: it hears nothing more, not even the close
        (its handlers never run again), sends nothing more, and the other end sees
        the connection close, as after ``kill -9``."""
        self.partitioned = True
        self.inner.set_handlers(_ignore_message, _ignore_close)
        self.inner.close(ConnectionLost("fault injection: the peer process died"))

    def set_faults(self, out: Faults | None = None, into: Faults | None = None) -> None:
        """From now on apply ``out`` and ``into`` (``None``: no faults) to new frames."""
        self._out.faults = out or Faults()
        self._in.faults = into or Faults()

    def set_handlers(self, on_message: MessageHandler, on_close: CloseHandler) -> None:
        self._on_message, self._on_close = on_message, on_close
        self.inner.set_handlers(self._incoming, self._finish)

    def _incoming(self, body: memoryview, buffers: list[Buffer]) -> None:
        self._in.push((bytes(body), [bytes(b) for b in buffers]))

    def _emit_in(self, frame: _Frame) -> None:
        if not self._closed and self._on_message is not None:
            self._on_message(memoryview(frame[0]), list(frame[1]))

    def send(self, body: Buffer, buffers: Sequence[Buffer] = ()) -> None:
        if self._closed or self.inner.closed:
            raise ConnectionLost(f"connection to {self.remote} is closed")
        frame = (bytes(body), [bytes(b) for b in buffers])
        if self.in_loop_thread():
            self._out.push(frame)
        else:
            self.loop.call_soon_threadsafe(self._out.push, frame)

    def _emit_out(self, frame: _Frame) -> None:
        if not self._closed and not self.inner.closed:
            try:
                self.inner.send(frame[0], frame[1])
            except ConnectionLost:
                pass

    def pending_bytes(self) -> int:
        return self.inner.pending_bytes()

    def send_progress(self) -> tuple[int, int]:
        return self.inner.send_progress()

    def pause_reading(self) -> None:
        self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()

    def set_max_frame(self, max_frame: int, max_buffers: int) -> None:
        self.inner.set_max_frame(max_frame, max_buffers)

    def close(self, reason: BaseException | None = None) -> None:
        self.inner.close(reason)


def _ignore_message(body: memoryview, buffers: list[Buffer]) -> None:
    """What a dead process does with a frame."""


def _ignore_close(reason: BaseException | None) -> None:
    """What a dead process does when its connection closes."""
