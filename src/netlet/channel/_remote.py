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
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING, Any

from netlet.channel._channel import Channel, Raise
from netlet.channel._select import Case, aselect
from netlet.codec import RemoteRef
from netlet.errors import (
    ChannelClosed,
    ChannelTimeout,
    ConnectionLost,
    NetletError,
    NoSuchObject,
    WouldBlock,
)
from netlet.node import (
    Node,
    Proxy,
    default_node,
    expose,
    register_ref_type,
    register_serve_adapter,
)

if TYPE_CHECKING:
    from netlet.node import Link

__all__ = ["ChannelEndpoint", "RemoteChannel", "connect_channel"]

_MARGIN = 5.0  # extra seconds the call waits beyond the operation's own timeout


@expose(concurrent=True)
class ChannelEndpoint:
    """The owner's face of one channel to other nodes."""

    def __init__(self, channel: Channel, node: Node) -> None:
        self._channel = channel
        self._node = node

    async def send(self, value: Any, timeout: float | None = None) -> None:
        await self._channel._send_async(value, timeout)

    async def push(self, values: list[Any]) -> None:
        """A batch of pipelined sends from one remote sender, placed in order."""
        ch, i, n = self._channel, 0, len(values)
        with ch._lock:  # place what fits now under one lock; await only when full
            while i < n and ch._try_send(None, 0, values[i]):
                i += 1
        for value in values[i:]:
            await ch._send_async(value, None)

    async def send_nowait(self, value: Any) -> None:
        self._channel._send_now(value)

    async def receive_nowait(self) -> Any:
        with self._channel._lock:
            ok, value = self._channel._try_receive(None, 0)
        if not ok:
            raise WouldBlock(f"nothing to receive on {self._channel.name}")
        return self._pass(value)

    async def capacity(self) -> int:
        return self._channel.capacity

    async def send_exception(self, exc: BaseException, timeout: float | None = None) -> None:
        await self._channel._send_async(Raise(exc), timeout)

    async def receive(self, timeout: float | None = None) -> Any:
        with self._channel._lock:
            ok, value = self._channel._try_receive(None, 0)
        if ok:
            return self._pass(value)
        return self._pass(await self._receive_raw(timeout))

    async def _receive_raw(self, timeout: float | None) -> Any:
        # Like Channel._receive_async, but keeps a queued exception wrapped so it
        # travels as a value and is raised on the receiving side.
        import asyncio

        from netlet.channel._waiter import Waiter

        ch = self._channel
        with ch._lock:
            ok, value = ch._try_receive(None, 0)
            if ok:
                return value
            waiter = Waiter(asyncio.get_running_loop())
            ch._park_receiver(waiter, 0)
        await ch._wait_async(waiter, timeout, "receive", keep_value=True)
        return waiter.value

    @staticmethod
    def _pass(value: Any) -> Any:
        return ["raise", value.exc] if type(value) is Raise else ["value", value]

    def balance(self) -> int:
        return self._channel.balance

    def close(self) -> None:
        self._channel.close()

    def closed(self) -> bool:
        return self._channel.closed

    def statistics(self) -> dict[str, Any]:
        s = self._channel.statistics()
        return {"name": s.name, "capacity": s.capacity, "buffered": s.buffered,
                "balance": s.balance, "sent": s.sent, "received": s.received,
                "closed": s.closed}

    async def select(self, specs: list[list[Any]], timeout: float | None) -> list[Any]:
        """A select over channels all owned by this node, on behalf of a remote caller."""
        cases = []
        for send, name, value in specs:
            cases.append(Case(_local_channel(self._node, name), bool(send), value))
        index, value = await aselect(*cases, timeout=timeout)
        return [index, value]


def _local_channel(node: Node, name: str) -> Channel:
    actor = node._actors.get(name)
    if actor is None or not isinstance(actor.obj, ChannelEndpoint):
        raise NoSuchObject(f"no channel named {name!r} on this node")
    return actor.obj._channel


def _provide(node: Node, obj: object) -> RemoteRef | None:
    """Serve a local channel the first time it is sent from ``node``."""
    if type(obj) is not Channel:
        return None
    name = obj.exported_as
    if name is None or name not in node._actors:
        name = f"chan-{uuid.uuid4().hex[:12]}"
        node.serve(ChannelEndpoint(obj, node), name)
        obj.exported_as = name
    return RemoteRef(node.id, node.address or "", name, "channel")


def _factory(node: Node, ref: RemoteRef, link: Link | None) -> object:
    if ref.node == node.id:
        try:
            return _local_channel(node, ref.name)
        except NoSuchObject:
            pass
    return RemoteChannel(node, ref, link)


def _adapt(node: Node, ch: Channel, name: str) -> ChannelEndpoint:
    ch.exported_as = name
    return ChannelEndpoint(ch, node)


register_ref_type("channel", _provide, _factory)
register_serve_adapter(Channel, _adapt)


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
    __slots__ = ("_rc",)

    def __init__(self, rc: RemoteChannel) -> None:
        self._rc = rc

    def __call__(self, value: Any, timeout: float | None = None) -> None:
        rc = self._rc
        if rc._capacity() > 0:
            rc._send_pipelined(value, timeout)
            return
        p = rc._proxy.with_options(timeout=_call_timeout(timeout))
        p.send.future(value, timeout).result()

    async def aio(self, value: Any, timeout: float | None = None) -> None:
        self._rc._check_pipeline()
        p = self._rc._proxy.with_options(timeout=_call_timeout(timeout))
        await p.send.aio(value, timeout)

    def nowait(self, value: Any) -> None:
        self._rc._check_pipeline()
        self._rc._proxy.send_nowait.future(value).result()


class _RemoteReceive:
    __slots__ = ("_rc",)

    def __init__(self, rc: RemoteChannel) -> None:
        self._rc = rc

    def __call__(self, timeout: float | None = None) -> Any:
        p = self._rc._proxy.with_options(timeout=_call_timeout(timeout))
        return _result(p.receive.future(timeout).result())

    async def aio(self, timeout: float | None = None) -> Any:
        p = self._rc._proxy.with_options(timeout=_call_timeout(timeout))
        return _result(await p.receive.aio(timeout))

    def nowait(self) -> Any:
        return _result(self._rc._proxy.receive_nowait.future().result())


class RemoteChannel:
    """A channel owned by another node, with the same API as a local one."""

    def __init__(self, node: Node, ref: RemoteRef, link: Link | None = None) -> None:
        self._ref = ref
        self._node = node
        self._proxy = Proxy(node, ref, link=link, timeout=None)
        self.name = ref.name
        self.send = _RemoteSend(self)
        self.receive = _RemoteReceive(self)
        # Pipelined sends (buffered channels only): see _send_pipelined.
        self._cap: int | None = None
        self._window = threading.Condition()
        self._outbox: list[Any] = []
        self._inflight = 0
        self._pushing = False
        self._broken: BaseException | None = None

    # -- pipelined sends ----------------------------------------------------------------
    #
    # A send to a buffered remote channel returns once its value is queued within a
    # window of the channel's capacity; one batch at a time goes to the owner, which
    # places it in order and confirms it. The next batch carries whatever queued up
    # meanwhile, so throughput grows with load and nothing waits for a timer.

    def _capacity(self) -> int:
        if self._cap is None:
            self._cap = int(self._proxy.capacity.future().result())
        return self._cap

    def _check_pipeline(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _send_pipelined(self, value: Any, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        cap = self._capacity()
        with self._window:
            while True:
                self._check_pipeline()
                if len(self._outbox) + self._inflight < cap:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ChannelTimeout(f"send on {self.name} timed out after {timeout} s")
                self._window.wait(left)
            self._outbox.append(value)
            start = not self._pushing
            self._pushing = True
        if start:
            self._node._get_loop().call_soon_threadsafe(self._push_next)

    def _push_next(self) -> None:
        with self._window:
            batch, self._outbox = self._outbox, []
            self._inflight = len(batch)
            if not batch:
                self._pushing = False
                self._window.notify_all()
                return
        try:
            fut = asyncio.ensure_future(self._proxy.push.aio(batch))
        except NetletError as e:
            self._pipeline_failed(e, len(batch))
            return
        fut.add_done_callback(lambda f: self._pushed(f, len(batch)))

    def _pushed(self, fut: asyncio.Future[Any], n: int) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._pipeline_failed(fut.exception() if not fut.cancelled() else None, n)
            return
        with self._window:
            self._inflight = 0
            self._window.notify_all()
        self._push_next()

    def _pipeline_failed(self, error: BaseException | None, n: int) -> None:
        with self._window:
            self._broken = ConnectionLost(
                f"sends to {self.name} failed ({error}); {n + len(self._outbox)} value(s) "
                "sent but not confirmed may be lost")
            self._inflight, self._outbox, self._pushing = 0, [], False
            self._window.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every pipelined send was placed on the owner."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._window:
            while self._pushing or self._outbox:
                self._check_pipeline()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ChannelTimeout(f"flush of {self.name} timed out")
                self._window.wait(left)
            self._check_pipeline()

    def __netlet_ref__(self) -> RemoteRef:
        return self._ref

    def __repr__(self) -> str:
        return f"<netlet.RemoteChannel {self.name!r} at {self._ref.address or self._ref.node[:8]}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteChannel) and other._ref == self._ref

    def __hash__(self) -> int:
        return hash(self._ref)

    @property
    def balance(self) -> int:
        return int(self._proxy.balance.future().result())

    @property
    def closed(self) -> bool:
        return bool(self._proxy.closed.future().result())

    def close(self) -> None:
        self.flush()  # values sent before close() arrive before it
        self._proxy.close.future().result()

    def statistics(self) -> dict[str, Any]:
        return dict(self._proxy.statistics.future().result())

    def send_exception(self, exc: BaseException | type[BaseException], *args: Any,
                       timeout: float | None = None) -> None:
        error = exc(*args) if isinstance(exc, type) else exc
        p = self._proxy.with_options(timeout=_call_timeout(timeout))
        p.send_exception.future(error, timeout).result()

    def sending(self, value: Any) -> Case:
        return Case(self, True, value)

    def receiving(self) -> Case:
        return Case(self, False)

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.receive()
            except ChannelClosed:
                return

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.receive.aio()
            except ChannelClosed:
                return

    def remote_select(self, cases: list[Case], timeout: float | None) -> Awaitable[Any]:
        """Select over channels that all live on this channel's owner (async)."""
        specs = [[c.send, c.channel.name, c.value] for c in cases]
        p = self._proxy.with_options(timeout=_call_timeout(timeout))
        return p.select.aio(specs, timeout)
