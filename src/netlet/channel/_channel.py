"""Channels with Stackless semantics, usable from threads and asyncio alike.

``send`` blocks until a receiver takes the value (rendezvous) unless the
channel has buffer room; ``receive`` blocks until a value comes; ``balance``
says who waits (positive: senders, negative: receivers); ``close`` wakes every
waiter with ``ChannelClosed`` after the buffer drains. A thread and a
coroutine may meet on the same channel.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

from netlet.channel._waiter import Waiter
from netlet.errors import ChannelClosed, ChannelTimeout, ConfigError, WouldBlock

__all__ = [
    "Case",
    "Channel",
    "ChannelStatistics",
    "Raise",
    "channel",
    "current_waiter_hook",
]

_ids = itertools.count(1)


class Raise:
    """A queued exception: the receiver raises it instead of returning it."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A snapshot of one channel, for dashboards and tests."""

    name: str
    capacity: int
    buffered: int
    balance: int
    sent: int
    received: int
    closed: bool
    senders_waiting: int = 0
    """Sends parked for want of a receiver or buffer room (each holds its value)."""
    receivers_waiting: int = 0
    """Receives parked for want of a value."""


@dataclass(frozen=True, slots=True)
class Case:
    """One operation offered to ``select``: a receive, or a send of ``value``."""

    channel: Any
    send: bool
    value: Any = None


class _ThreadHook(threading.local):
    """Lets a tasklet running on this thread be woken from a blocked wait (cancel)."""

    on_block: Any = None


current_waiter_hook = _ThreadHook()


def _unwrap(value: Any) -> Any:
    if type(value) is Raise:
        raise value.exc
    return value


class _SendOp:
    __slots__ = ("_ch",)

    def __init__(self, ch: Channel) -> None:
        self._ch = ch

    def __call__(self, value: Any, timeout: float | None = None) -> None:
        """Send ``value``; blocks until taken (or buffered). Thread code."""
        self._ch._send_blocking(value, timeout)

    def aio(self, value: Any, timeout: float | None = None) -> Awaitable[None]:
        """Send from async code."""
        return self._ch._send_async(value, timeout)

    def nowait(self, value: Any) -> None:
        """Send only if a receiver waits or the buffer has room, else ``WouldBlock``."""
        self._ch._send_now(value)


class _ReceiveOp:
    __slots__ = ("_ch",)

    def __init__(self, ch: Channel) -> None:
        self._ch = ch

    def __call__(self, timeout: float | None = None) -> Any:
        """Receive one value; blocks until one comes. Thread code."""
        return self._ch._receive_blocking(timeout)

    def aio(self, timeout: float | None = None) -> Awaitable[Any]:
        """Receive from async code."""
        return self._ch._receive_async(timeout)

    def nowait(self) -> Any:
        """Receive only if a value is ready, else ``WouldBlock``."""
        return self._ch._receive_now()


class Channel:
    """A channel owned by this process; send it in any message to use it elsewhere."""

    def __init__(self, buffer: int = 0, *, name: str | None = None) -> None:
        if not isinstance(buffer, int) or buffer < 0:
            raise ConfigError("buffer must be a non-negative int")
        self.capacity = buffer
        self.name = name or f"chan-{next(_ids)}"
        self._lock = threading.Lock()
        self._buffer: deque[Any] = deque()
        self._senders: deque[tuple[Waiter, int, Any]] = deque()
        self._receivers: deque[tuple[Waiter, int]] = deque()
        self._closed = False
        self._reserved = 0  # buffer slots promised to remote senders (see _remote)
        self._sent = 0
        self._received = 0
        self.send = _SendOp(self)
        self.receive = _ReceiveOp(self)
        self.exported_as: str | None = None  # set when served to other nodes

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"balance {self.balance}"
        return f"<netlet.Channel {self.name!r} buffer {self.capacity}, {state}>"

    # -- state ---------------------------------------------------------------

    @property
    def balance(self) -> int:
        """Senders waiting (positive) or receivers waiting (negative)."""
        with self._lock:
            s = sum(1 for w, _, _ in self._senders if not w.claimed)
            r = sum(1 for w, _ in self._receivers if not w.claimed)
        return s - r

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> ChannelStatistics:
        """A snapshot: O(parked waiters), as ``balance``."""
        with self._lock:
            buffered = len(self._buffer)
            senders = sum(1 for w, _, _ in self._senders if not w.claimed)
            receivers = sum(1 for w, _ in self._receivers if not w.claimed)
        return ChannelStatistics(self.name, self.capacity, buffered, senders - receivers,
                                 self._sent, self._received, self._closed, senders, receivers)

    def close(self) -> None:
        """No more sends; waiting senders fail now, receivers once the buffer is empty."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            senders, self._senders = self._senders, deque()
            drained = not self._buffer and not self._reserved
            receivers = self._receivers if drained else deque()
            if drained:
                self._receivers = deque()
        for w, idx, _ in senders:
            if w.claim():
                w.complete(idx, error=ChannelClosed(f"{self.name} was closed"))
        for w, idx in receivers:
            if w.claim():
                w.complete(idx, error=ChannelClosed(f"{self.name} was closed"))

    def sending(self, value: Any) -> Case:
        """A send of ``value``, for ``netlet.select``."""
        return Case(self, True, value)

    def receiving(self) -> Case:
        """A receive, for ``netlet.select``."""
        return Case(self, False)

    def send_exception(self, exc: BaseException | type[BaseException], *args: Any,
                       timeout: float | None = None) -> None:
        """Send an exception: the receiver raises it (Stackless' send_exception)."""
        error = exc(*args) if isinstance(exc, type) else exc
        self._send_blocking(Raise(error), timeout)

    # -- the rules, under the lock (shared by plain, async and select paths) ----

    def _try_send(self, waiter: Waiter | None, index: int, value: Any) -> bool:
        """Hand ``value`` to a receiver or the buffer now; lock held.

        With ``waiter`` (select), claims it before taking anyone's value.
        """
        if self._closed:
            raise ChannelClosed(f"{self.name} is closed")
        while self._receivers:
            rw, ridx = self._receivers[0]
            if rw.claimed:
                self._receivers.popleft()  # won elsewhere (select) or timed out
                continue
            if waiter is not None and not waiter.claim():
                return True  # our own select already completed through another case
            if not rw.claim():
                self._receivers.popleft()
                if waiter is not None:
                    raise AssertionError("waiter claimed twice")  # pragma: no cover
                continue
            self._receivers.popleft()
            self._sent += 1
            self._received += 1
            rw.complete(ridx, value)
            if waiter is not None:
                waiter.complete(index)
            return True
        if len(self._buffer) + self._reserved < self.capacity:
            if waiter is not None and not waiter.claim():
                return True
            self._buffer.append(value)
            self._sent += 1
            if waiter is not None:
                waiter.complete(index)
            return True
        return False

    def _try_receive(self, waiter: Waiter | None, index: int) -> tuple[bool, Any]:
        """Take a value now if there is one; lock held."""
        if self._buffer:
            if waiter is not None and not waiter.claim():
                return True, None
            value = self._buffer.popleft()
            self._received += 1
            self._refill()
            self._wake_if_drained()
            if waiter is not None:
                waiter.complete(index, value)
            return True, value
        while self._senders:
            sw, sidx, value = self._senders[0]
            if sw.claimed:
                self._senders.popleft()
                continue
            if waiter is not None and not waiter.claim():
                return True, None
            self._senders.popleft()
            if not sw.claim():  # pragma: no cover - checked above under the same lock
                continue
            self._sent += 1
            self._received += 1
            sw.complete(sidx)
            if waiter is not None:
                waiter.complete(index, value)
            return True, value
        if self._closed and not self._reserved:  # reserved slots: values still on the way
            raise ChannelClosed(f"{self.name} is closed and empty")
        return False, None

    def _refill(self) -> None:
        """Buffer room freed up: move the first waiting sender's value in."""
        while self._senders and len(self._buffer) + self._reserved < self.capacity:
            sw, sidx, value = self._senders.popleft()
            if not sw.claim():
                continue
            self._buffer.append(value)
            self._sent += 1
            sw.complete(sidx)
            return

    # -- reservations: how remote senders pipeline (see _remote) -------------------

    def reserve_now(self, want: int) -> int:
        """Promise up to ``want`` free buffer slots now; lock held. Raises if closed."""
        if self._closed:
            raise ChannelClosed(f"{self.name} is closed")
        k = max(0, min(want, self.capacity - len(self._buffer) - self._reserved))
        self._reserved += k
        return k

    def put_reserved(self, values: list[Any]) -> None:
        """Fill promised slots in order (also after close: they were taken before it)."""
        with self._lock:
            for value in values:
                self._reserved -= 1
                self._sent += 1
                handed = False
                while self._receivers:
                    rw, ridx = self._receivers.popleft()
                    if rw.claim():
                        self._received += 1
                        rw.complete(ridx, value)
                        handed = True
                        break
                if not handed:
                    self._buffer.append(value)
            self._refill()  # slots handed straight to receivers leave room for others
            self._wake_if_drained()

    def release(self, n: int) -> None:
        """Give back promised slots that will not be used."""
        with self._lock:
            self._reserved = max(0, self._reserved - n)
            self._refill()
            self._wake_if_drained()

    def _wake_if_drained(self) -> None:
        """Closed, empty and nothing on the way: waiting receivers learn it now (lock held)."""
        if self._closed and not self._buffer and not self._reserved and self._receivers:
            receivers, self._receivers = self._receivers, deque()
            for rw, ridx in receivers:
                if rw.claim():
                    rw.complete(ridx, error=ChannelClosed(f"{self.name} was closed"))

    def _park_sender(self, waiter: Waiter, index: int, value: Any) -> None:
        if len(self._senders) > 64 and len(self._senders) % 64 == 0:
            self._senders = deque(e for e in self._senders if not e[0].claimed)
        self._senders.append((waiter, index, value))

    def _park_receiver(self, waiter: Waiter, index: int) -> None:
        if len(self._receivers) > 64 and len(self._receivers) % 64 == 0:
            self._receivers = deque(e for e in self._receivers if not e[0].claimed)
        self._receivers.append((waiter, index))

    def _forget(self, waiter: Waiter) -> None:
        """Drop a withdrawn waiter (timed out or cancelled) from the queues; lock held."""
        self._senders = deque(e for e in self._senders if e[0] is not waiter)
        self._receivers = deque(e for e in self._receivers if e[0] is not waiter)

    def requeue_front(self, value: Any) -> None:
        """Give back a value whose receiver vanished before it could be delivered."""
        with self._lock:
            while self._receivers:
                rw, ridx = self._receivers.popleft()
                if rw.claim():
                    rw.complete(ridx, value)
                    return
            self._buffer.appendleft(value)
            self._received -= 1

    # -- blocking (threads) ----------------------------------------------------

    def _send_now(self, value: Any) -> None:
        with self._lock:
            if not self._try_send(None, 0, value):
                raise WouldBlock(f"no receiver waits on {self.name} and its buffer is full")

    def _receive_now(self) -> Any:
        with self._lock:
            ok, value = self._try_receive(None, 0)
        if not ok:
            raise WouldBlock(f"nothing to receive on {self.name}")
        return _unwrap(value)

    def _send_blocking(self, value: Any, timeout: float | None) -> None:
        with self._lock:
            if self._try_send(None, 0, value):
                return
            waiter = Waiter()
            self._park_sender(waiter, 0, value)
        self._wait(waiter, timeout, "send")

    def _receive_blocking(self, timeout: float | None) -> Any:
        with self._lock:
            ok, value = self._try_receive(None, 0)
            if ok:
                return _unwrap(value)
            waiter = Waiter()
            self._park_receiver(waiter, 0)
        self._wait(waiter, timeout, "receive")
        return _unwrap(waiter.value)

    def _wait(self, waiter: Waiter, timeout: float | None, what: str) -> None:
        hook = current_waiter_hook.on_block
        if hook is not None:
            hook(waiter)  # a tasklet's cancel() may complete this waiter with an error
        try:
            if not waiter.wait(timeout):
                if waiter.claim():  # withdrawn: nobody can complete it any more
                    with self._lock:
                        self._forget(waiter)
                    raise ChannelTimeout(f"{what} on {self.name} timed out after {timeout} s")
                waiter.wait(None)  # a peer claimed it an instant ago; completion follows
        finally:
            if hook is not None:
                hook(None)
        if waiter.error is not None:
            raise waiter.error

    # -- async -----------------------------------------------------------------

    async def _send_async(self, value: Any, timeout: float | None) -> None:
        with self._lock:
            if self._try_send(None, 0, value):
                return
            waiter = Waiter(asyncio.get_running_loop())
            self._park_sender(waiter, 0, value)
        await self._wait_async(waiter, timeout, "send")

    async def _receive_async(self, timeout: float | None) -> Any:
        with self._lock:
            ok, value = self._try_receive(None, 0)
            if ok:
                return _unwrap(value)
            waiter = Waiter(asyncio.get_running_loop())
            self._park_receiver(waiter, 0)
        await self._wait_async(waiter, timeout, "receive", keep_value=True)
        return _unwrap(waiter.value)

    async def _wait_async(self, waiter: Waiter, timeout: float | None, what: str,
                          keep_value: bool = False) -> None:
        try:
            done = await waiter.wait_async(timeout)
        except asyncio.CancelledError:
            with self._lock:  # a peer completing us holds this lock: let it finish first
                withdrawn = waiter.claim()
                if withdrawn:
                    self._forget(waiter)
            if not withdrawn and keep_value and waiter.error is None:
                self.requeue_front(waiter.value)  # taken for us, never delivered: give back
            raise
        if not done:
            if waiter.claim():
                with self._lock:
                    self._forget(waiter)
                raise ChannelTimeout(f"{what} on {self.name} timed out after {timeout} s")
            await waiter.wait_async(None)  # a peer claimed us an instant ago
        if waiter.error is not None:
            raise waiter.error

    # -- iteration -------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        """Receive until the channel is closed and drained."""
        while True:
            try:
                yield self._receive_blocking(None)
            except ChannelClosed:
                return

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self._receive_async(None)
            except ChannelClosed:
                return


def channel(buffer: int = 0, *, name: str | None = None) -> Channel:
    """A new channel (``buffer=0``: every send waits for its receiver)."""
    return Channel(buffer, name=name)
