"""A channel's state and rules: what its plain, async and select paths share.

``ChannelCore`` is the inside of a ``Channel``: the buffer, the queues of parked
waiters, the lock, and the rules that hand a value from a sender to a receiver.
``select`` takes several cores' locks together, and the endpoint that serves a
channel to other nodes works on its core; applications use ``Channel``.
Everything called "lock held" expects its caller to hold ``lock``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from netlet.clock import Waiter
from netlet.errors import ChannelClosed, ChannelTimeout, WouldBlock
from netlet.node import checked_timeout

__all__ = ["ChannelCore", "Raise", "current_waiter_hook", "unwrap"]


class Raise:
    """A queued exception: the receiver raises it instead of returning it."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _ThreadHook(threading.local):
    """Lets a tasklet running on this thread be woken from a blocked wait (cancel)."""

    on_block: Any = None


current_waiter_hook = _ThreadHook()


def unwrap(value: Any) -> Any:
    """A received value, or the exception it carries raised."""
    if type(value) is Raise:
        raise value.exc
    return value


class ChannelCore:
    """The state of one channel and the rules over it (see the module's docstring)."""

    def __init__(self, capacity: int, name: str) -> None:
        self.capacity = capacity
        self.name = name
        self.lock = threading.Lock()
        self.buffer: deque[Any] = deque()
        self.senders: deque[tuple[Waiter, int, Any]] = deque()
        self.receivers: deque[tuple[Waiter, int]] = deque()
        self.closed = False
        self.reserved = 0  # buffer slots promised to remote senders (see _remote)
        self.sent = 0
        self.received = 0

    def waiting(self) -> tuple[int, int]:
        """(senders, receivers) parked and not yet claimed: O(parked waiters)."""
        with self.lock:
            s = sum(1 for w, _, _ in self.senders if not w.claimed)
            r = sum(1 for w, _ in self.receivers if not w.claimed)
        return s, r

    def close(self) -> None:
        """No more sends; waiting senders fail now, receivers once the buffer is empty."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            senders, self.senders = self.senders, deque()
            drained = not self.buffer and not self.reserved
            receivers = self.receivers if drained else deque()
            if drained:
                self.receivers = deque()
        for w, idx, _ in senders:
            if w.claim():
                w.complete(idx, error=ChannelClosed(f"{self.name} was closed"))
        for w, idx in receivers:
            if w.claim():
                w.complete(idx, error=ChannelClosed(f"{self.name} was closed"))

    # -- the rules, under the lock (shared by plain, async and select paths) ----

    def try_send(self, waiter: Waiter | None, index: int, value: Any) -> bool:
        """Hand ``value`` to a receiver or the buffer now; lock held.

        With ``waiter`` (select), claims it before taking anyone's value.
        """
        if self.closed:
            raise ChannelClosed(f"{self.name} is closed")
        while self.receivers:
            rw, ridx = self.receivers[0]
            if rw.claimed:
                self.receivers.popleft()  # won elsewhere (select) or timed out
                continue
            if waiter is not None and not waiter.claim():
                return True  # our own select already completed through another case
            if not rw.claim():
                self.receivers.popleft()
                if waiter is not None:
                    raise AssertionError("waiter claimed twice")  # pragma: no cover
                continue
            self.receivers.popleft()
            self.sent += 1
            self.received += 1
            rw.complete(ridx, value)
            if waiter is not None:
                waiter.complete(index)
            return True
        if len(self.buffer) + self.reserved < self.capacity:
            if waiter is not None and not waiter.claim():
                return True
            self.buffer.append(value)
            self.sent += 1
            if waiter is not None:
                waiter.complete(index)
            return True
        return False

    def try_receive(self, waiter: Waiter | None, index: int) -> tuple[bool, Any]:
        """Take a value now if there is one; lock held."""
        if self.buffer:
            if waiter is not None and not waiter.claim():
                return True, None
            value = self.buffer.popleft()
            self.received += 1
            self._refill()
            self._wake_if_drained()
            if waiter is not None:
                waiter.complete(index, value)
            return True, value
        while self.senders:
            sw, sidx, value = self.senders[0]
            if sw.claimed:
                self.senders.popleft()
                continue
            if waiter is not None and not waiter.claim():
                return True, None
            self.senders.popleft()
            if not sw.claim():  # pragma: no cover - checked above under the same lock
                continue
            self.sent += 1
            self.received += 1
            sw.complete(sidx)
            if waiter is not None:
                waiter.complete(index, value)
            return True, value
        if self.closed and not self.reserved:  # reserved slots: values still on the way
            raise ChannelClosed(f"{self.name} is closed and empty")
        return False, None

    def _refill(self) -> None:
        """Buffer room freed up: move the first waiting sender's value in."""
        while self.senders and len(self.buffer) + self.reserved < self.capacity:
            sw, sidx, value = self.senders.popleft()
            if not sw.claim():
                continue
            self.buffer.append(value)
            self.sent += 1
            sw.complete(sidx)
            return

    def park_sender(self, waiter: Waiter, index: int, value: Any) -> None:
        """Queue a sender that could not send now; lock held."""
        if len(self.senders) > 64 and len(self.senders) % 64 == 0:
            self.senders = deque(e for e in self.senders if not e[0].claimed)
        self.senders.append((waiter, index, value))

    def park_receiver(self, waiter: Waiter, index: int) -> None:
        """Queue a receiver that found nothing; lock held."""
        if len(self.receivers) > 64 and len(self.receivers) % 64 == 0:
            self.receivers = deque(e for e in self.receivers if not e[0].claimed)
        self.receivers.append((waiter, index))

    def _forget(self, waiter: Waiter) -> None:
        """Drop a withdrawn waiter (timed out or cancelled) from the queues; lock held."""
        self.senders = deque(e for e in self.senders if e[0] is not waiter)
        self.receivers = deque(e for e in self.receivers if e[0] is not waiter)

    def _wake_if_drained(self) -> None:
        """Closed, empty and nothing on the way: waiting receivers learn it now (lock held)."""
        if self.closed and not self.buffer and not self.reserved and self.receivers:
            receivers, self.receivers = self.receivers, deque()
            for rw, ridx in receivers:
                if rw.claim():
                    rw.complete(ridx, error=ChannelClosed(f"{self.name} was closed"))

    # -- reservations: how remote senders pipeline (see _remote) -------------------

    def reserve_now(self, want: int) -> int:
        """Promise up to ``want`` free buffer slots now; lock held. Raises if closed."""
        if self.closed:
            raise ChannelClosed(f"{self.name} is closed")
        k = max(0, min(want, self.capacity - len(self.buffer) - self.reserved))
        self.reserved += k
        return k

    def put_reserved(self, values: list[Any]) -> None:
        """Fill promised slots in order (also after close: they were taken before it)."""
        with self.lock:
            for value in values:
                self.reserved -= 1
                self.sent += 1
                handed = False
                while self.receivers:
                    rw, ridx = self.receivers.popleft()
                    if rw.claim():
                        self.received += 1
                        rw.complete(ridx, value)
                        handed = True
                        break
                if not handed:
                    self.buffer.append(value)
            self._refill()  # slots handed straight to receivers leave room for others
            self._wake_if_drained()

    def release(self, n: int) -> None:
        """Give back promised slots that will not be used."""
        with self.lock:
            self.reserved = max(0, self.reserved - n)
            self._refill()
            self._wake_if_drained()

    def requeue_front(self, value: Any) -> None:
        """Give back a value whose receiver vanished before it could be delivered."""
        with self.lock:
            while self.receivers:
                rw, ridx = self.receivers.popleft()
                if rw.claim():
                    rw.complete(ridx, value)
                    return
            self.buffer.appendleft(value)
            self.received -= 1

    # -- now, never waiting ------------------------------------------------------

    def send_now(self, value: Any) -> None:
        """Send only if a receiver waits or the buffer has room, else ``WouldBlock``."""
        with self.lock:
            if not self.try_send(None, 0, value):
                raise WouldBlock(f"no receiver waits on {self.name} and its buffer is full")

    def receive_raw_now(self) -> Any:
        """Receive only if a value is ready, else ``WouldBlock``; a ``Raise`` stays wrapped."""
        with self.lock:
            ok, value = self.try_receive(None, 0)
        if not ok:
            raise WouldBlock(f"nothing to receive on {self.name}")
        return value

    def receive_now(self) -> Any:
        """Receive only if a value is ready, else ``WouldBlock``."""
        return unwrap(self.receive_raw_now())

    def _finish(self, waiter: Waiter, done: bool, timeout: float | None, what: str) -> Any:
        """After the wait (blocking or async): withdrawn on timeout, or the outcome."""
        if not done:  # withdrawn: nobody can complete it any more
            with self.lock:
                self._forget(waiter)
            raise ChannelTimeout(f"{what} on {self.name} timed out after {timeout} s")
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    # -- blocking (threads) ----------------------------------------------------
    # The "try now, else park a waiter" step is written out in each method: a helper
    # call on this path costs 5-15% of a buffered send or receive.

    def send_blocking(self, value: Any, timeout: float | None = None) -> None:
        """Send ``value``; blocks until taken (or buffered). Thread code."""
        if timeout is not None:  # inf: no timeout; NaN or not a number: refused
            timeout = checked_timeout(timeout)
        with self.lock:
            if self.try_send(None, 0, value):
                return
            waiter = Waiter()
            self.park_sender(waiter, 0, value)
        self._wait(waiter, timeout, "send")

    def receive_blocking(self, timeout: float | None = None) -> Any:
        """Receive one value; blocks until one comes. Thread code."""
        if timeout is not None:  # inf: no timeout; NaN or not a number: refused
            timeout = checked_timeout(timeout)
        with self.lock:
            ok, value = self.try_receive(None, 0)
            if ok:
                return unwrap(value)
            waiter = Waiter()
            self.park_receiver(waiter, 0)
        return unwrap(self._wait(waiter, timeout, "receive"))

    def _wait(self, waiter: Waiter, timeout: float | None, what: str) -> Any:
        hook = current_waiter_hook.on_block
        if hook is None:
            return self._finish(waiter, waiter.wait_or_withdraw(timeout), timeout, what)
        hook(waiter)  # a tasklet's cancel() may complete this waiter with an error
        try:
            done = waiter.wait_or_withdraw(timeout)
        finally:
            hook(None)
        return self._finish(waiter, done, timeout, what)

    # -- async -----------------------------------------------------------------

    async def send_aio(self, value: Any, timeout: float | None = None) -> None:
        """Send from async code."""
        if timeout is not None:  # inf: no timeout; NaN or not a number: refused
            timeout = checked_timeout(timeout)
        with self.lock:
            if self.try_send(None, 0, value):
                return
            waiter = Waiter(asyncio.get_running_loop())
            self.park_sender(waiter, 0, value)
        await self._wait_aio(waiter, timeout, "send")

    async def receive_raw_aio(self, timeout: float | None = None) -> Any:
        """Receive from async code; a ``Raise`` stays wrapped (to travel as a value)."""
        if timeout is not None:  # inf: no timeout; NaN or not a number: refused
            timeout = checked_timeout(timeout)
        with self.lock:
            ok, value = self.try_receive(None, 0)
            if ok:
                return value
            waiter = Waiter(asyncio.get_running_loop())
            self.park_receiver(waiter, 0)
        return await self._wait_aio(waiter, timeout, "receive", keep_value=True)

    async def receive_aio(self, timeout: float | None = None) -> Any:
        """Receive from async code."""
        if timeout is not None:  # inf: no timeout; NaN or not a number: refused
            timeout = checked_timeout(timeout)
        with self.lock:
            ok, value = self.try_receive(None, 0)
            if ok:
                return unwrap(value)
            waiter = Waiter(asyncio.get_running_loop())
            self.park_receiver(waiter, 0)
        return unwrap(await self._wait_aio(waiter, timeout, "receive", keep_value=True))

    async def _wait_aio(self, waiter: Waiter, timeout: float | None, what: str,
                        keep_value: bool = False) -> Any:
        try:
            done = await waiter.wait_or_withdraw_aio(timeout)
        except asyncio.CancelledError:
            with self.lock:  # a peer completing us holds this lock: let it finish first
                withdrawn = waiter.claim()
                if withdrawn:
                    self._forget(waiter)
            if not withdrawn and keep_value and waiter.error is None:
                self.requeue_front(waiter.value)  # taken for us, never delivered: give back
            raise
        return self._finish(waiter, done, timeout, what)
