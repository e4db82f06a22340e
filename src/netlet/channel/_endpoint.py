"""The owner's side of a served channel, and what it keeps for each remote peer.

A remote receiver's values stay at the owner until acknowledged, and a remote
sender is lent buffer slots: state the owner keeps for a peer after its call
returns. Tickets and sender names are the peer's own words, so they are filed
under the node id of the connection the call came in on (``current_peer``),
never under what the name itself says: a peer can acknowledge, cancel, fill
or release only its own, and all of it is given back when that node leaves.
What one peer can make the owner hold is bounded (docs/PROTOCOL.md §15): a
receive that would pass the bound waits for the peer's acks instead.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from netlet.channel._channel import Channel, Raise
from netlet.channel._select import Case, select_aio
from netlet.errors import (
    CallCancelled,
    ChannelTimeout,
    NoSuchObject,
    ProtocolError,
)
from netlet.node import Node, current_peer, expose

__all__ = ["PEER_SENDERS", "PEER_VALUES", "ChannelEndpoint", "local_channel", "weight"]

PEER_VALUES = 1024
"""Values one peer may hold unacknowledged at once (its further receives wait)."""
PEER_SENDERS = 256
"""Sender names of one peer that may hold lent slots at once (others get no credit)."""
NAME_MAX = 128
"""Characters in a ticket or a sender name (netlet's own use under 50)."""
_ENTRY = 256  # bytes charged per kept value beyond its weight: the ticket, the dict slot


def weight(value: Any) -> int:
    """Roughly the bytes ``value`` holds: every object reached through lists, tuples,
    sets and dicts (the shapes a decoded value has), each by ``sys.getsizeof``."""
    total = 0
    stack = [value]
    seen: set[int] = set()
    while stack:
        v = stack.pop()
        if type(v) is Raise:
            v = v.exc
        t = type(v)
        if t is list or t is tuple or t is set or t is frozenset or t is dict:
            if id(v) in seen:
                continue
            seen.add(id(v))
            if t is dict:
                stack.extend(v.keys())
                stack.extend(v.values())
            else:
                stack.extend(v)
        try:
            total += sys.getsizeof(v)
        except TypeError:  # an object that will not say
            total += 64
    return total


def _name(value: Any, what: str) -> str:
    if type(value) is not str or not value or len(value) > NAME_MAX:
        raise ProtocolError(f"a {what} is a non-empty string of at most {NAME_MAX} characters "
                            f"(got {type(value).__name__} {str(value)[:40]!r}...): make it from "
                            "your node id and a counter")
    return value


def _count(value: Any, what: str) -> int:
    """A `want` or `n` (§15): an int, a bool not being one (§6.4)."""
    if type(value) is not int:
        raise ProtocolError(f"{what} is an int, not {type(value).__name__}")
    return value


def _exception(value: Any) -> BaseException:
    """What `send_exception` and a raising send place: an exception (ext 11, §15)."""
    if not isinstance(value, BaseException):
        raise ProtocolError(f"an exception to send is an exception (ext 11), "
                            f"not {type(value).__name__}")
    return value


class _Peer:
    """What the owner keeps for one peer (one node id)."""

    __slots__ = ("bytes", "cancelled", "reserved", "unacked", "waiting")

    def __init__(self) -> None:
        self.unacked: dict[str, tuple[Any, int]] = {}  # ticket -> (value, bytes charged)
        self.bytes = 0
        self.waiting: dict[str, asyncio.Task[Any] | None] = {}  # tickets of waiting receives
        self.cancelled: set[str] = set()  # waiting tickets that cancel_receive ended
        self.reserved: dict[str, int] = {}  # sender -> slots lent (never 0)


@expose(concurrent=True)
class ChannelEndpoint:
    """The owner's face of one channel to other nodes."""

    def __init__(self, channel: Channel, node: Node) -> None:
        self._channel = channel
        self._core = channel.core
        self._node = node
        self._peers: dict[str, _Peer] = {}
        self._bytes = 0  # held for all peers together
        self._freed: asyncio.Event | None = None  # set when held values are let go
        node.on_peer_change(self._peer_changed)

    @property
    def channel(self) -> Channel:
        """The channel this endpoint serves."""
        return self._channel

    # -- whose call this is -------------------------------------------------------------

    def _scope(self) -> str:
        """The node id the calling connection proved: "" if it has none (§4.8)."""
        caller = current_peer()
        return self._node.id if caller is None else caller

    def _peer(self, scope: str) -> _Peer:
        peer = self._peers.get(scope)
        if peer is None:
            peer = self._peers[scope] = _Peer()
        return peer

    def _peer_changed(self, node: str, connected: bool) -> None:
        if connected:
            return
        peer = self._peers.pop(node, None)
        if peer is None:
            return
        self._core.release(sum(peer.reserved.values()))  # a sender died: free its slots
        for value, size in reversed(peer.unacked.values()):  # their order, at the front
            self._bytes -= size
            self._core.requeue_front(value)  # a receiver died before its value reached it
        peer.unacked.clear()
        self._wake()

    # -- plain operations -----------------------------------------------------------------

    async def send(self, value: Any, timeout: float | None = None) -> None:
        await self._core.send_aio(value, timeout)

    async def send_nowait(self, value: Any) -> None:
        self._core.send_now(value)

    async def send_exception(self, exc: BaseException, timeout: float | None = None) -> None:
        await self._core.send_aio(Raise(_exception(exc)), timeout)

    async def receive_nowait(self) -> Any:
        return self._pass(self._core.receive_raw_now())

    async def capacity(self) -> int:
        return self._channel.capacity

    # -- pipelined sends: a sender reserves buffer slots, then fills them ----------------

    async def send_reserving(self, sender: str, value: Any, raise_it: bool, want: int,
                             timeout: float | None = None) -> int:
        """Send ``value``; if it went in at once, also promise up to ``want`` more slots.

        A value that must wait parks here with the value itself, like a local sender,
        so room that frees up takes it in the same step.
        """
        sender = _name(sender, "sender name")
        want = self._may_reserve(sender, _count(want, "want"))
        core = self._core
        item = Raise(_exception(value)) if raise_it else value
        with core.lock:
            placed = core.try_send(None, 0, item)  # raises ChannelClosed when closed
            extra = core.reserve_now(want) if placed and want > 0 else 0
        if not placed:
            await core.send_aio(item, timeout)
            return 0
        self._lend(sender, extra)
        return extra

    async def push(self, sender: str, values: list[Any], raises: list[int],
                   want: int = 0) -> int:
        """Fill slots ``sender`` reserved, in order (``raises``: indexes of exceptions),
        then promise it up to ``want`` more free slots; returns how many.

        Granting in the reply keeps a steady stream going without a stall per refill.
        """
        sender = _name(sender, "sender name")
        if type(values) is not list or type(raises) is not list:
            raise ProtocolError("push takes a list of values and a list of indexes")
        _count(want, "want")
        for i in raises:
            if type(i) is not int or not 0 <= i < len(values):
                raise ProtocolError(f"push: raises holds indexes into values, not {i!r}"[:120])
            _exception(values[i])
        core = self._core
        peer = self._peers.get(self._scope())
        held = peer.reserved.get(sender, 0) if peer is not None else 0
        if len(values) > held:
            raise ProtocolError(f"{len(values)} values pushed with {held} slots reserved "
                                "for this sender by this connection")
        if values:
            assert peer is not None
            self._take_back(peer, sender, len(values))
        if raises:
            marked = set(raises)
            values = [Raise(v) if i in marked else v for i, v in enumerate(values)]
        core.put_reserved(values)
        want = self._may_reserve(sender, want)
        if want <= 0:
            return 0
        with core.lock:
            extra = 0 if core.closed else core.reserve_now(want)
        self._lend(sender, extra)
        return extra

    async def release(self, sender: str, n: int) -> None:
        sender = _name(sender, "sender name")
        n = _count(n, "n")
        peer = self._peers.get(self._scope())
        if peer is None or sender not in peer.reserved:
            return  # nothing lent under this name to this connection: nothing to free
        n = self._take_back(peer, sender, max(0, n))
        self._core.release(n)

    def _may_reserve(self, sender: str, want: int) -> int:
        """How many slots this call may ask for: none for a connection with no id of its
        own (nobody would free them), nor for a new name past ``PEER_SENDERS``."""
        scope = self._scope()
        if not scope or want <= 0:
            return 0
        peer = self._peers.get(scope)
        if peer is not None and sender not in peer.reserved \
                and len(peer.reserved) >= PEER_SENDERS:
            return 0
        return want

    def _lend(self, sender: str, n: int) -> None:
        if n > 0:
            reserved = self._peer(self._scope()).reserved
            reserved[sender] = reserved.get(sender, 0) + n

    @staticmethod
    def _take_back(peer: _Peer, sender: str, n: int) -> int:
        held = peer.reserved.get(sender, 0)
        n = min(n, held)
        if held - n > 0:
            peer.reserved[sender] = held - n
        else:
            peer.reserved.pop(sender, None)
        return n

    # -- acknowledged receives ------------------------------------------------------------
    #
    # The owner keeps each value it handed out under a ticket until the receiving node
    # confirms it arrived (which that node does before its application sees the value).
    # A receiver that cancels, or whose node leaves first, gets nothing: the value goes
    # back to the front of the channel. A connection with no node id of its own (§4.8)
    # gets its value without it being kept: nobody could give it back.

    async def receive(self, timeout: float | None = None, ticket: str | None = None) -> Any:
        if ticket is None:
            return self._pass(await self._receive_raw(timeout))
        ticket = _name(ticket, "ticket")
        scope = self._scope()
        peer = self._peer(scope)
        if ticket in peer.waiting or ticket in peer.unacked:
            raise ProtocolError(f"ticket {ticket!r} is already in use: use a fresh one "
                                "for every receive")
        peer.waiting[ticket] = asyncio.current_task()
        try:
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            if scope:
                await self._room_for(peer, deadline, timeout)
            left = None if deadline is None else max(0.0, deadline - loop.time())
            value = await self._receive_raw(left)
        except asyncio.CancelledError:
            if ticket not in peer.cancelled:
                raise  # a CANCEL from the caller: it is not listening
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            # The caller may still be listening (a foreign client, a oneway
            # cancel_receive): the call gets an answer rather than none.
            raise CallCancelled(f"receive with ticket {ticket!r} cancelled by "
                                "cancel_receive") from None
        finally:
            peer.waiting.pop(ticket, None)
            peer.cancelled.discard(ticket)
        # Kept for a node with an id of its own, still here (if it left while we waited,
        # a side connection may still carry the reply: it goes out unkept).
        if scope and self._peers.get(scope) is peer:
            size = weight(value) + len(ticket) + _ENTRY
            peer.unacked[ticket] = (value, size)
            peer.bytes += size
            self._bytes += size
        return self._pass(value)

    def _over(self, peer: _Peer) -> bool:
        config = self._node.config
        return (len(peer.unacked) >= PEER_VALUES or peer.bytes >= config.max_connection_memory
                or self._bytes >= config.max_memory)

    async def _room_for(self, peer: _Peer, deadline: float | None,
                        timeout: float | None) -> None:
        """Wait until ``peer`` may hold one more value (its acks make room)."""
        loop = asyncio.get_running_loop()
        while self._over(peer):
            if self._freed is None:
                self._freed = asyncio.Event()
            freed = self._freed
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise ChannelTimeout(
                    f"receive on {self._channel.name} timed out after {timeout} s: this node "
                    f"holds {len(peer.unacked)} values not yet acknowledged by you "
                    "(ack each value as soon as it arrives)")
            try:
                await asyncio.wait_for(freed.wait(), left)
            except TimeoutError:
                pass

    def _wake(self) -> None:
        freed, self._freed = self._freed, None
        if freed is not None:
            freed.set()

    def _drop(self, peer: _Peer, ticket: str) -> tuple[Any, int] | None:
        """Stop keeping the value given for ``ticket``: (value, size), or None if none."""
        entry = peer.unacked.pop(ticket, None)
        if entry is None:
            return None
        size = entry[1]
        peer.bytes -= size
        self._bytes -= size
        self._wake()
        return entry

    async def ack(self, ticket: str) -> None:
        peer = self._peers.get(self._scope())
        if peer is not None:
            self._drop(peer, _name(ticket, "ticket"))

    async def cancel_receive(self, ticket: str) -> None:
        """The remote caller gave up: stop waiting for it, or take back what it was given."""
        ticket = _name(ticket, "ticket")
        peer = self._peers.get(self._scope())
        if peer is None:
            return  # this connection has no receive with that ticket
        task = peer.waiting.pop(ticket, None)
        if task is not None:
            peer.cancelled.add(ticket)  # receive answers CallCancelled
            task.cancel()  # _wait_aio puts a value it already holds back at the front
        entry = self._drop(peer, ticket)
        if entry is not None:
            self._core.requeue_front(entry[0])

    async def _receive_raw(self, timeout: float | None) -> Any:
        # Keeps a queued exception wrapped, so it travels as a value and is raised on
        # the receiving side.
        return await self._core.receive_raw_aio(timeout)

    @staticmethod
    def _pass(value: Any) -> Any:
        return ["raise", value.exc] if type(value) is Raise else ["value", value]

    # -- the rest -------------------------------------------------------------------------

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
                "closed": s.closed, "senders_waiting": s.senders_waiting,
                "receivers_waiting": s.receivers_waiting}

    async def select(self, specs: list[list[Any]], timeout: float | None) -> list[Any]:
        """A select over channels all owned by this node, on behalf of a remote caller."""
        cases = []
        if type(specs) is not list or not all(
                type(spec) is list and len(spec) == 3 and type(spec[1]) is str for spec in specs):
            raise ProtocolError("select takes specs [[is_send, channel_name, value], ...]")
        for send, name, value in specs:
            cases.append(Case(local_channel(self._node, name), bool(send), value))
        index, value = await select_aio(*cases, timeout=timeout)
        return [index, value]


def local_channel(node: Node, name: str) -> Channel:
    """The channel ``node`` serves as ``name`` (``NoSuchObject`` if it serves none)."""
    endpoint = node.served(name)
    if not isinstance(endpoint, ChannelEndpoint):
        raise NoSuchObject(f"no channel named {name!r} on node {node.address or node.id[:8]}")
    return endpoint.channel
