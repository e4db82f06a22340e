"""Channels with Stackless semantics, usable from threads and asyncio alike.

``send`` blocks until a receiver takes the value (rendezvous) unless the
channel has buffer room; ``receive`` blocks until a value comes; ``balance``
says who waits (positive: senders, negative: receivers); ``close`` wakes every
waiter with ``ChannelClosed`` after the buffer drains. A thread and a
coroutine may meet on the same channel. The state and the rules are the
channel's ``core`` (``_core``); this is the face applications use.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

from netlet.channel._core import ChannelCore, Raise, current_waiter_hook
from netlet.errors import ChannelClosed, ConfigError

__all__ = [
    "Case",
    "Channel",
    "ChannelStatistics",
    "Raise",
    "ReceiveOp",
    "SendOp",
    "channel",
    "current_waiter_hook",
]

_ids = itertools.count(1)


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


class SendOp:
    """``ch.send``: call it from a thread, ``.aio`` from async code, ``.nowait`` to send
    only if a receiver waits or the buffer has room (else ``WouldBlock``)."""

    __slots__ = ("_core",)

    def __init__(self, core: ChannelCore) -> None:
        self._core = core

    def __call__(self, value: Any, timeout: float | None = None) -> None:
        """Send ``value``; blocks until taken (or buffered). Thread code."""
        self._core.send_blocking(value, timeout)

    def aio(self, value: Any, timeout: float | None = None) -> Awaitable[None]:
        """Send from async code."""
        return self._core.send_aio(value, timeout)

    def nowait(self, value: Any) -> None:
        """Send only if a receiver waits or the buffer has room, else ``WouldBlock``."""
        self._core.send_now(value)


class ReceiveOp:
    """``ch.receive``: call it from a thread, ``.aio`` from async code, ``.nowait`` to
    receive only if a value is ready (else ``WouldBlock``)."""

    __slots__ = ("_core",)

    def __init__(self, core: ChannelCore) -> None:
        self._core = core

    def __call__(self, timeout: float | None = None) -> Any:
        """Receive one value; blocks until one comes. Thread code."""
        return self._core.receive_blocking(timeout)

    def aio(self, timeout: float | None = None) -> Awaitable[Any]:
        """Receive from async code."""
        return self._core.receive_aio(timeout)

    def nowait(self) -> Any:
        """Receive only if a value is ready, else ``WouldBlock``."""
        return self._core.receive_now()


class Channel:
    """A channel owned by this process; send it in any message to use it elsewhere.

    ``send(value, timeout=None)`` and ``receive(timeout=None)`` block a thread;
    ``send.aio`` and ``receive.aio`` are their async forms; ``send.nowait`` and
    ``receive.nowait`` never wait.
    """

    def __init__(self, buffer: int = 0, *, name: str | None = None) -> None:
        if not isinstance(buffer, int) or buffer < 0:
            raise ConfigError("buffer must be a non-negative int")
        self.capacity = buffer
        self.name = name or f"chan-{next(_ids)}"
        self.core = ChannelCore(buffer, self.name)
        """The state and the rules (for ``select`` and for serving it to other nodes)."""
        self.send = SendOp(self.core)
        self.receive = ReceiveOp(self.core)
        self.exported_as: str | None = None  # set when served to other nodes

    def __repr__(self) -> str:
        state = "closed" if self.core.closed else f"balance {self.balance}"
        return f"<netlet.Channel {self.name!r} buffer {self.capacity}, {state}>"

    @property
    def balance(self) -> int:
        """Senders waiting (positive) or receivers waiting (negative)."""
        senders, receivers = self.core.waiting()
        return senders - receivers

    @property
    def closed(self) -> bool:
        return self.core.closed

    def statistics(self) -> ChannelStatistics:
        """A snapshot: O(parked waiters), as ``balance``."""
        core = self.core
        senders, receivers = core.waiting()
        return ChannelStatistics(self.name, self.capacity, len(core.buffer), senders - receivers,
                                 core.sent, core.received, core.closed, senders, receivers)

    def close(self) -> None:
        """No more sends; waiting senders fail now, receivers once the buffer is empty."""
        self.core.close()

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
        self.core.send_blocking(Raise(error), timeout)

    def __iter__(self) -> Iterator[Any]:
        """Receive until the channel is closed and drained."""
        receive = self.core.receive_blocking
        while True:
            try:
                yield receive(None)
            except ChannelClosed:
                return

    async def __aiter__(self) -> AsyncIterator[Any]:
        receive = self.core.receive_aio
        while True:
            try:
                yield await receive(None)
            except ChannelClosed:
                return


def channel(buffer: int = 0, *, name: str | None = None) -> Channel:
    """A new channel (``buffer=0``: every send waits for its receiver)."""
    return Channel(buffer, name=name)
