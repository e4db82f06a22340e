"""Channels across nodes: the owner serves an endpoint, others hold a ``RemoteChannel``.

A channel put in any message travels as a handle; the owning node serves it
as an exposed, concurrent endpoint whose async methods wait on the real
channel without tying up a thread. A ``RemoteChannel`` has the local API, and
each operation is a call to the endpoint, so a remote ``send`` still returns
only when a receiver somewhere has taken the value.

Guarantees: values are delivered once, in order per sender. If the owner dies,
waiters elsewhere get ``ConnectionLost`` (the node's keepalive turns a silent
owner into a closed link within seconds). If a remote receiver dies while
waiting, the owner's call is cancelled and a value already taken for it is put
back at the front. Remote operations always travel on the peer's main
connection, never the blocking side path, so the owner sees a waiter vanish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from netlet.channel._channel import Channel, ChannelStatistics, current_waiter_hook
from netlet.channel._endpoint import ChannelEndpoint, local_channel
from netlet.channel._select import Case
from netlet.clock import Waiter
from netlet.codec import RemoteRef
from netlet.errors import ChannelClosed, ChannelTimeout, ConnectionLost, NetletError, NoSuchObject
from netlet.node import Node, Proxy, default_node, register_ref_type, register_serve_adapter

if TYPE_CHECKING:
    from netlet.node import Link

__all__ = ["ChannelEndpoint", "RemoteChannel", "connect_channel"]

_MARGIN = 5.0  # extra seconds the call waits beyond the operation's own timeout
_IDLE = 0.02  # seconds without sends after which a handle gives back its credits


def _provide(node: Node, obj: object) -> RemoteRef | None:
    """Serve a local channel the first time it is sent from ``node``."""
    if type(obj) is not Channel:
        return None
    name = obj.exported_as
    if name is None or node.served(name) is None:
        name = f"chan-{uuid.uuid4().hex[:12]}"
        node.serve(ChannelEndpoint(obj, node), name)
        obj.exported_as = name
    return RemoteRef(node.id, node.address or "", name, "channel")


def _factory(node: Node, ref: RemoteRef, link: Link | None) -> object:
    # A handle made by connect_channel has no node id, only the owner's address.
    if ref.node == node.id or (not ref.node and ref.address and ref.address == node.address):
        try:
            return local_channel(node, ref.name)
        except NoSuchObject:
            pass
    return RemoteChannel(node, ref, link)


def _adapt(node: Node, ch: Channel, name: str) -> ChannelEndpoint:
    ch.exported_as = name
    return ChannelEndpoint(ch, node)


register_ref_type("channel", _provide, _factory)
register_serve_adapter(Channel, _adapt, "channel")


def connect_channel(address: str, name: str, *, node: Node | None = None) -> RemoteChannel:
    """The channel served as ``name`` at ``address`` (by ``node.serve(ch, name)``)."""
    node = node or default_node()
    return RemoteChannel(node, RemoteRef("", address, name, "channel"))


def _result(reply: list[Any]) -> Any:
    kind, value = reply
    if kind == "raise":
        raise value
    return value


def _call_timeout(timeout: float | None) -> float | None:
    return None if timeout is None else timeout + _MARGIN


class _RemoteSend:
    """``rc.send``: as a local channel's (``__call__``, ``aio``, ``nowait``)."""

    __slots__ = ("_blocking", "aio", "nowait")

    def __init__(self, blocking: Callable[[Any, float | None, bool], None],
                 aio: Callable[..., Awaitable[None]], nowait: Callable[[Any], None]) -> None:
        self._blocking = blocking
        self.aio = aio
        self.nowait = nowait

    def __call__(self, value: Any, timeout: float | None = None) -> None:
        self._blocking(value, timeout, False)


class _RemoteReceive:
    """``rc.receive``: as a local channel's (``__call__``, ``aio``, ``nowait``)."""

    __slots__ = ("_blocking", "aio", "nowait")

    def __init__(self, blocking: Callable[..., Any], aio: Callable[..., Awaitable[Any]],
                 nowait: Callable[[], Any]) -> None:
        self._blocking = blocking
        self.aio = aio
        self.nowait = nowait

    def __call__(self, timeout: float | None = None) -> Any:
        return self._blocking(timeout)


def _wait_cancellable(fut: concurrent.futures.Future[Any], on_cancel: Any) -> Any:
    """Wait for ``fut``; a tasklet's cancel() wakes us (running ``on_cancel``) too."""
    hook = current_waiter_hook.on_block
    if hook is None:
        return fut.result()
    waiter = Waiter()

    def done(_: Any) -> None:
        if waiter.claim():
            waiter.complete(0)

    fut.add_done_callback(done)
    hook(waiter)
    try:
        waiter.wait(None)
    finally:
        hook(None)
    if waiter.error is not None:
        on_cancel()
        raise waiter.error
    return fut.result()


class RemoteChannel:
    """A channel owned by another node, with the same API as a local one."""

    def __init__(self, node: Node, ref: RemoteRef, link: Link | None = None) -> None:
        self._ref = ref
        self._node = node
        self._clock = node.config.clock  # send-window waits, flush deadlines, idle release
        self._proxy = Proxy(node, ref, link=link, timeout=None)
        self.name = ref.name
        self.send = _RemoteSend(self._send, self._send_aio, self._send_nowait)
        self.receive = _RemoteReceive(self._receive, self._receive_aio, self._receive_nowait)
        # Pipelined sends (buffered channels only): see _send.
        self._cap: int | None = None
        self._cap_lookup: asyncio.Future[Any] | None = None
        self._sender = f"{node.id}:{uuid.uuid4().hex[:8]}"
        self._window = threading.Condition()
        self._outbox: list[Any] = []
        self._raises: list[int] = []
        self._credits = 0
        self._want = 1
        self._last_use = 0.0
        self._pushing = False
        self._idle_armed = False
        self._broken: BaseException | None = None

    # -- pipelined sends ----------------------------------------------------------------
    #
    # A buffered channel's owner promises this handle some of its free slots (credits).
    # A send that holds a credit returns at once, its value queued here; one batch at a
    # time travels to the owner and fills the promised slots in order. So a send returns
    # exactly when its value has room in the buffer, as on a local channel, and a stream
    # of sends costs one message per batch. Credits are asked for in doubling amounts and
    # given back when the handle goes quiet, so an idle sender does not hold room.

    def _capacity(self) -> int:
        if self._cap is None:
            self._cap = int(self._proxy.capacity.future().result())
        return self._cap

    def _check_pipeline(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _take_credit(self, value: Any, raise_it: bool) -> bool:
        """Queue ``value`` on a credit if one is held (True), else leave it (False)."""
        with self._window:
            self._check_pipeline()
            if self._credits <= 0:
                return False
            self._credits -= 1
            if raise_it:
                self._raises.append(len(self._outbox))
            self._outbox.append(value)
            self._last_use = self._clock.monotonic()
            start = not self._pushing
            self._pushing = self._pushing or start
        if start:
            self._node.get_loop().call_soon_threadsafe(self._push_next)
        return True

    def _send(self, value: Any, timeout: float | None, raise_it: bool) -> None:
        if self._capacity() == 0:  # rendezvous: every send meets its receiver
            self.flush()
            p = self._proxy.with_options(timeout=_call_timeout(timeout))
            method = p.send_exception if raise_it else p.send
            method.future(value, timeout).result()
            return
        if self._take_credit(value, raise_it):
            return
        # A push in flight brings more credits when the owner has room: wait for it.
        if self._credit_from_push(timeout) and self._take_credit(value, raise_it):
            return
        # No credit: send this value with a request for more (after what is queued,
        # whose last reply may have brought credits after all).
        self._settle()
        if self._take_credit(value, raise_it):
            return
        want = self._want
        p = self._proxy.with_options(timeout=_call_timeout(timeout))
        got = int(p.send_reserving.future(self._sender, value, raise_it, want, timeout).result())
        with self._window:
            self._credits += got
            self._last_use = self._clock.monotonic()
            self._want = min(self._cap or 1, want * 2)
        if got:
            self._node.get_loop().call_soon_threadsafe(self._arm_idle_release)

    async def _send_aio(self, value: Any, timeout: float | None = None) -> None:
        """Send from async code."""
        if self._cap is None:  # never block the loop we run on; one lookup per handle
            lookup = self._cap_lookup
            if lookup is None or lookup.get_loop() is not asyncio.get_running_loop():
                lookup = self._cap_lookup = asyncio.ensure_future(self._proxy.capacity.aio())
            self._cap = int(await asyncio.shield(lookup))
        if self._cap and self._take_credit(value, False):
            return
        if self._pushing or self._outbox:
            await asyncio.to_thread(self.flush)
            if self._cap and self._take_credit(value, False):  # the last push granted room
                return
        p = self._proxy.with_options(timeout=_call_timeout(timeout))
        await p.send.aio(value, timeout)

    def _send_nowait(self, value: Any) -> None:
        """Send only if the owner has a receiver waiting or room, else ``WouldBlock``."""
        if self._capacity() and self._take_credit(value, False):
            return
        self.flush()
        if self._cap and self._take_credit(value, False):  # the last push granted room
            return
        self._proxy.send_nowait.future(value).result()

    def _receive(self, timeout: float | None = None) -> Any:
        """Receive one value; blocks until one comes. Thread code."""
        self._settle()
        ticket, state = self._ticket()
        p = self._proxy.with_options(timeout=_call_timeout(timeout))
        fut = p.receive.future(timeout, ticket)
        fut.add_done_callback(lambda f: self._acknowledge(f, ticket, state))
        return _result(_wait_cancellable(fut, lambda: self._abandon_receive(ticket, state)))

    async def _receive_aio(self, timeout: float | None = None) -> Any:
        """Receive from async code."""
        if self._pushing:
            await asyncio.to_thread(self.flush)
        ticket, state = self._ticket()
        p = self._proxy.with_options(timeout=_call_timeout(timeout))
        fut: Any
        if asyncio.get_running_loop() is self._node.loop:
            fut = asyncio.ensure_future(p.receive.aio(timeout, ticket))
            waiting = asyncio.shield(fut)
        else:  # run the call on the node's loop: it must not die with this one
            fut = p.receive.future(timeout, ticket)
            waiting = asyncio.shield(asyncio.wrap_future(fut))
        fut.add_done_callback(lambda f: self._acknowledge(f, ticket, state))
        try:
            return _result(await waiting)
        except asyncio.CancelledError:
            self._abandon_receive(ticket, state)
            raise

    def _receive_nowait(self) -> Any:
        """Receive only if a value is ready, else ``WouldBlock``."""
        self._settle()
        return _result(self._proxy.receive_nowait.future().result())

    def _credit_from_push(self, timeout: float | None) -> bool:
        """Wait while a push is out for the credits its reply may carry; True if any came."""
        deadline = None if timeout is None else self._clock.monotonic() + timeout
        with self._window:
            if self._credits <= 0 and self._pushing:  # we ran dry: ask for more next time
                self._want = min(self._cap or 1, self._want * 2)
            while self._credits <= 0 and self._pushing and self._broken is None:
                left = None if deadline is None else deadline - self._clock.monotonic()
                if left is not None and left <= 0:
                    break
                self._clock.wait(self._window.wait, left)
            return self._credits > 0

    def _push_next(self) -> None:
        with self._window:
            batch, self._outbox = self._outbox, []
            raises, self._raises = self._raises, []
            if not batch:
                self._pushing = False
                self._window.notify_all()
                return
            top_up = max(0, self._want - self._credits)  # keep about _want slots ahead
        try:
            fut = asyncio.ensure_future(
                self._proxy.push.aio(self._sender, batch, raises, top_up))
        except NetletError as e:
            self._pipeline_failed(e, len(batch))
            return
        fut.add_done_callback(lambda f: self._pushed(f, len(batch)))

    def _pushed(self, fut: asyncio.Future[Any], n: int) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._pipeline_failed(None if fut.cancelled() else fut.exception(), n)
            return
        granted = int(fut.result() or 0)  # an owner from before push grants says None
        if granted:
            with self._window:
                self._credits += granted
                self._last_use = self._clock.monotonic()
                self._window.notify_all()
            self._arm_idle_release()
        self._push_next()

    def _pipeline_failed(self, error: BaseException | None, n: int) -> None:
        with self._window:
            self._broken = ConnectionLost(
                f"sends to {self.name} failed ({error}); {n + len(self._outbox)} value(s) "
                "that had buffer room may be lost")
            self._outbox, self._raises, self._pushing, self._credits = [], [], False, 0
            self._window.notify_all()

    def _arm_idle_release(self) -> None:
        """(Loop thread) Watch the credits held: give them back once the handle idles."""
        if not self._idle_armed:
            self._idle_armed = True
            self._clock.call_later(self._node.get_loop(), _IDLE, self._release_if_idle)

    def _release_if_idle(self) -> None:
        with self._window:
            if self._credits <= 0:
                self._idle_armed = False
                return
            if self._pushing or self._clock.monotonic() - self._last_use < _IDLE:
                self._clock.call_later(self._node.get_loop(), _IDLE, self._release_if_idle)
                return
            self._idle_armed = False
            n, self._credits = self._credits, 0
            self._want = max(1, self._want // 2)
        try:
            self._proxy.release.oneway(self._sender, n)
        except NetletError:
            pass

    def _ticket(self) -> tuple[str, dict[str, bool]]:
        # The node id prefix tells the owner whose link closing gives the value back.
        return f"{self._node.id}:{uuid.uuid4().hex[:16]}", {"cancelled": False}

    def _acknowledge(self, fut: Any, ticket: str, state: dict[str, bool]) -> None:
        """The reply landed: confirm it before anyone sees the value, unless we gave up."""
        if state["cancelled"] or fut.cancelled() or fut.exception() is not None:
            return
        try:
            self._proxy.ack.oneway(ticket)
        except NetletError:
            pass

    def _abandon_receive(self, ticket: str, state: dict[str, bool]) -> None:
        """Our receive was cancelled: the owner stops waiting, or takes the value back."""
        state["cancelled"] = True
        try:
            self._proxy.cancel_receive.oneway(ticket)
        except NetletError:
            pass

    def _settle(self) -> None:
        """Before any other operation: this handle's earlier sends go first."""
        if self._pushing or self._outbox:
            self.flush()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every pipelined send was placed on the owner."""
        deadline = None if timeout is None else self._clock.monotonic() + timeout
        with self._window:
            while self._pushing or self._outbox:
                self._check_pipeline()
                left = None if deadline is None else deadline - self._clock.monotonic()
                if left is not None and left <= 0:
                    raise ChannelTimeout(f"flush of {self.name} timed out")
                self._clock.wait(self._window.wait, left)
            self._check_pipeline()

    def __netlet_ref__(self) -> RemoteRef:
        return self._ref

    def __repr__(self) -> str:
        return f"<netlet.RemoteChannel {self.name!r} at {self._ref.address or self._ref.node[:8]}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteChannel) and other.__netlet_ref__() == self._ref

    def __hash__(self) -> int:
        return hash(self._ref)

    @property
    def balance(self) -> int:
        self._settle()
        return int(self._proxy.balance.future().result())

    @property
    def closed(self) -> bool:
        return bool(self._proxy.closed.future().result())

    def close(self) -> None:
        self.flush()  # values sent before close() arrive before it
        with self._window:
            unused, self._credits = self._credits, 0
        if unused:  # room we will not fill must not look like values on their way
            self._proxy.release.future(self._sender, unused).result()
        self._proxy.close.future().result()

    def statistics(self) -> ChannelStatistics:
        self._settle()
        return ChannelStatistics(**self._proxy.statistics.future().result())

    def send_exception(self, exc: BaseException | type[BaseException], *args: Any,
                       timeout: float | None = None) -> None:
        error = exc(*args) if isinstance(exc, type) else exc
        self._send(error, timeout, raise_it=True)
        self.flush()  # rare, and worth being certain of: confirmed before returning

    def sending(self, value: Any) -> Case:
        return Case(self, True, value)

    def receiving(self) -> Case:
        return Case(self, False)

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self._receive()
            except ChannelClosed:
                return

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self._receive_aio()
            except ChannelClosed:
                return

    def remote_select(self, cases: list[Case], timeout: float | None) -> Awaitable[Any]:
        """Select over channels that all live on this channel's owner (async)."""
        specs = [[c.send, c.channel.name, c.value] for c in cases]
        p = self._proxy.with_options(timeout=_call_timeout(timeout))
        return p.select.aio(specs, timeout)
