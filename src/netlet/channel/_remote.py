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

import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING, Any

from netlet.channel._channel import Channel, Raise
from netlet.channel._select import Case, aselect
from netlet.codec import RemoteRef
from netlet.errors import ChannelClosed, NoSuchObject
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
        p = self._rc._proxy.with_options(timeout=_call_timeout(timeout))
        p.send.future(value, timeout).result()

    async def aio(self, value: Any, timeout: float | None = None) -> None:
        p = self._rc._proxy.with_options(timeout=_call_timeout(timeout))
        await p.send.aio(value, timeout)


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


class RemoteChannel:
    """A channel owned by another node, with the same API as a local one."""

    def __init__(self, node: Node, ref: RemoteRef, link: Link | None = None) -> None:
        self._ref = ref
        self._proxy = Proxy(node, ref, link=link, timeout=None)
        self.name = ref.name
        self.send = _RemoteSend(self)
        self.receive = _RemoteReceive(self)

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
