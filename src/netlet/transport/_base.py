"""The one seam every transport plugs into: a framed, bidirectional connection.

Call order:

1. The transport creates the connection with its loop and starts reading.
2. The owner calls ``set_handlers(on_message, on_close)``; frames that arrived
   before are held until then. Both handlers run on the connection's loop.
3. ``send`` may be called from any thread, any number of times; it never blocks
   (bytes the kernel will not take yet are queued and written when it will).
4. ``close`` may be called from any thread, any number of times; ``on_close``
   runs exactly once, with the reason (``None`` for a clean close).

On close a connection gives back everything it charged to its ``Account`` and
drops its handlers, so no reference cycle keeps its buffers (or its owner)
alive until the cyclic garbage collector happens to run.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netlet.codec import Buffer
from netlet.transport._budget import Account
from netlet.transport._framing import MessageHandler
from netlet.transport._shm import ShmPeer

__all__ = ["CloseHandler", "Connection", "PeerInfo", "log"]

log = logging.getLogger("netlet.transport")


class RateLimitedLog:
    """At most ``burst`` lines per ``interval`` seconds; the first line after a quiet
    spell says how many were left out, so a flood of bad peers cannot flood the log."""

    def __init__(self, interval: float = 10.0, burst: int = 1) -> None:
        self.interval = interval
        self.burst = burst
        self._start = -interval
        self._count = 0
        self._skipped = 0

    def __call__(self, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start >= self.interval:
            if self._skipped:
                msg += f" ({self._skipped} more like this were not logged)"
            self._start, self._count, self._skipped = now, 0, 0
        if self._count >= self.burst:
            self._skipped += 1
            return
        self._count += 1
        log.log(level, msg, *args)


peer_warning = RateLimitedLog(burst=50)
"""Warnings a peer's bytes cause (bad or truncated frames) on connections we dialed: at
most 50 per 10 s. Each listener has its own such limiter for the connections it accepts
(SECURITY.md: a peer without the key cannot make the node log without limit)."""

CloseHandler = Callable[[BaseException | None], None]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the handshake established about the other end."""

    node: str
    address: str
    """The address the peer listens on ("" if none) as it announced it."""
    authenticated: bool
    pickle: bool
    """Both ends authenticated and agreed to accept pickled values."""
    role: str = "link"
    """"link" for a node's main connection, "direct" for a blocking-call side channel."""
    token: bytes = b""
    """SHA-256 over the digests of both hellos: known only to the two ends of this connection."""
    link_token: bytes = b""
    """A direct connection's claim: the ``token`` of the main link it belongs to."""
    shm: ShmPeer | None = None
    """Shared memory for large buffers, if both ends agreed (``_shm``)."""


class Connection(ABC):
    """A framed connection; see the module docstring for the call order."""

    loop: asyncio.AbstractEventLoop
    remote: str
    """A printable name for the other end (for logs and errors)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, remote: str,
                 account: Account | None = None) -> None:
        self.loop = loop
        self.remote = remote
        self.account = account
        """Where the memory this connection holds is counted (None: not counted)."""
        self.slot: Callable[[], None] | None = None
        self.warn: Callable[..., None] = peer_warning
        """Logs what this peer's bytes did wrong; a listener gives its connections its own
        limiter, so a flood of bad connections cannot flood the log."""
        """Called once when the connection (or, after ``detach``, its socket) is gone:
        frees its place under the listener's connection cap."""
        self._on_message: MessageHandler | None = None
        self._on_close: CloseHandler | None = None
        self._held: list[tuple[memoryview | bytes, list[Buffer]]] = []
        self._close_reason: BaseException | None = None
        self._closed = False
        self._hold_delivery = False  # paused (backpressure): held frames wait too
        self._loop_thread = threading.get_ident()

    @property
    def closed(self) -> bool:
        return self._closed

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def set_handlers(self, on_message: MessageHandler, on_close: CloseHandler) -> None:
        """Install the handlers; must run on the loop thread."""
        self._on_message, self._on_close = on_message, on_close
        self._replay_held()
        if self._closed and not self._held:
            self._on_message = self._on_close = None
            on_close(self._close_reason)

    def _replay_held(self) -> None:
        """Deliver frames that arrived before there was an owner, stopping if paused."""
        while self._held and self._on_message is not None and not self._hold_delivery:
            body, bufs = self._held.pop(0)
            self._on_message(memoryview(body), bufs)

    def hold(self, frames: list[tuple[bytes, list[Buffer]]]) -> None:
        """Keep ``frames`` and any later ones until the next ``set_handlers`` (loop thread)."""
        self._on_message = None
        self._on_close = None
        self._held = list(frames) + self._held

    def _deliver(self, body: memoryview, buffers: list[Buffer]) -> None:
        if self._on_message is None:
            self._held.append((bytes(body), [bytes(b) for b in buffers]))
        else:
            self._on_message(body, buffers)

    def _finish(self, reason: BaseException | None) -> None:
        """Record the close and tell the owner, exactly once (loop thread)."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._drop_buffers()
        self._release_account()
        self.release_slot()
        if self._on_close is not None:  # with no owner yet, set_handlers reports it
            handler, self._on_close = self._on_close, None
            self._on_message = None  # break the cycle owner -> connection -> owner
            handler(reason)
        else:
            self._on_message = None

    def _drop_buffers(self) -> None:  # noqa: B027
        """Free the receive buffers (closing; loop thread)."""

    def _release_account(self) -> None:
        if self.account is not None:
            self.account.close()

    def release_slot(self) -> None:
        """Free this connection's place under the connection cap (once; any thread)."""
        slot, self.slot = self.slot, None
        if slot is not None:
            slot()

    @abstractmethod
    def send(self, body: Buffer, buffers: Sequence[Buffer] = ()) -> None:
        """Queue one frame; thread-safe; raises ``ConnectionLost`` once closed."""

    @abstractmethod
    def close(self, reason: BaseException | None = None) -> None:
        """Close at once, dropping unsent frames; thread-safe."""

    async def drain_and_close(self, timeout: float = 1.0) -> None:
        """Close after queued frames are written (or ``timeout`` passes)."""
        self.close()

    @abstractmethod
    def pending_bytes(self) -> int:
        """Bytes queued but not yet taken by the kernel (for backpressure)."""

    def send_progress(self) -> tuple[int, int]:
        """(bytes the kernel took since the start, bytes still queued): a request is
        out once the first reaches where the sum stood right after it was sent. A
        call's deadline waits for that, as long as the count keeps moving (a slow
        link is not a dead peer). Transports that never queue say (0, 0)."""
        return 0, 0

    def pause_reading(self) -> None:
        """Stop delivering frames until ``resume_reading`` (loop thread)."""
        self._hold_delivery = True

    def resume_reading(self) -> None:
        """Deliver frames again (loop thread)."""
        self._hold_delivery = False
        self._replay_held()

    def set_max_frame(self, max_frame: int, max_buffers: int) -> None:  # noqa: B027
        """Raise the frame limits once the handshake is done (no-op if not framed)."""

    def raw_socket(self) -> socket.socket | None:
        """The plain stream socket underneath, if any (for ``SO_PEERCRED``)."""
        return None

    def enable_shm(self, peer: ShmPeer) -> None:  # noqa: B027
        """Send large buffers through shared memory (only plain sockets ever agree)."""
