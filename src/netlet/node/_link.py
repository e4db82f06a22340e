"""One authenticated connection to a peer node: calls out, calls in, replies.

Calls in both directions share the connection (so a server can call back a
client that does not listen). Call ids are per direction; a reply settles the
waiter registered under its id exactly once, and late or duplicate replies are
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from netlet.codec import Buffer, Codec
from netlet.errors import (
    ConnectionLost,
    DecodeError,
    EncodeError,
    NoSuchObject,
    NotExposed,
    PeerUnreachable,
    ProtocolError,
)
from netlet.node._actor import CALLER, Actor
from netlet.node._expose import MethodInfo
from netlet.node._messages import (
    BYE as _BYE,
)
from netlet.node._messages import (
    CALL as _CALL,
)
from netlet.node._messages import (
    CANCEL as _CANCEL,
)
from netlet.node._messages import (
    ERROR as _ERROR,
)
from netlet.node._messages import (
    PING as _PING,
)
from netlet.node._messages import (
    PONG as _PONG,
)
from netlet.node._messages import (
    REPLY as _REPLY,
)
from netlet.transport import Connection, PeerInfo

if TYPE_CHECKING:
    from netlet.node._node import Node

__all__ = ["Link", "Waiter"]

log = logging.getLogger("netlet.node")

Waiter = Callable[[bool, Any], None]
"""Settles one outgoing call: (True, value) or (False, exception). Runs on the loop."""

_SEEN_WINDOW = 4096


class Link:
    """The node's view of one connection."""

    def __init__(self, node: Node, conn: Connection, peer: PeerInfo) -> None:
        self.node = node
        self.conn = conn
        self.peer = peer
        self.codec = Codec(
            node.config.transport.limits,
            allow_pickle=peer.pickle,
            ref_encoder=lambda obj: node._ref_for(obj, self),
            ref_decoder=lambda ref: node._from_ref(ref, self),
        )
        self.pending: dict[int, Waiter] = {}
        self._ids = itertools.count(1)
        self._incoming: dict[int, Callable[[], None]] = {}  # call id -> cancel
        self._idle: asyncio.Event | None = None  # set once _incoming empties, while closing
        self._seen: set[int] = set()
        self._max_seen = 0
        self.closed = False
        self.close_reason: BaseException | None = None
        self.exported: set[str] = set()  # auto-served object ids handed to this peer
        self.dial_address = ""  # where to open side connections to this peer ("" if none)
        self.last_heard = conn.loop.time()
        self._max_inflight = node.config.max_inflight
        self._paused = False
        self._send_lock = threading.Lock()
        conn.set_handlers(self._on_message, self._on_close)

    def __repr__(self) -> str:
        return f"<Link to {self.peer.node[:8]} {self.conn.remote}>"

    # -- outgoing -----------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, message: list[Any]) -> None:
        """Encode and send from any thread; raises EncodeError or ConnectionLost."""
        body, buffers = self.codec.encode(message)
        self.conn.send(body, buffers)

    def start_call(self, waiter: Waiter | None, target: str, method: str,
                   args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> int:
        """Register ``waiter`` and send the CALL; returns the call id (0 for oneway)."""
        if self.closed:
            raise ConnectionLost(f"connection to {self.conn.remote} is closed")
        cid = next(self._ids) if waiter is not None else 0
        if waiter is not None:
            self.pending[cid] = waiter
        try:
            body, buffers = self.codec.encode([_CALL, cid, target, method, list(args), kwargs])
            self.conn.send(body, buffers)
        except BaseException:
            self.pending.pop(cid, None)
            raise
        return cid

    def abandon(self, cid: int) -> None:
        """Stop waiting for ``cid`` and ask the peer to cancel it."""
        if self.pending.pop(cid, None) is not None and not self.closed:
            try:
                self.send([_CANCEL, cid])
            except (ConnectionLost, EncodeError):
                pass

    # -- incoming (loop thread) ---------------------------------------------

    def _on_message(self, body: memoryview, buffers: list[Buffer]) -> None:
        self.last_heard = self.conn.loop.time()
        try:
            msg = self.codec.decode(body, buffers)
        except DecodeError as e:
            self._undecodable(body, e)
            return
        try:
            kind = msg[0]
            if kind == _REPLY:
                waiter = self.pending.pop(msg[1], None)
                if waiter is not None:
                    waiter(True, msg[2])
            elif kind == _ERROR:
                waiter = self.pending.pop(msg[1], None)
                if waiter is not None:
                    exc = msg[2]
                    waiter(False, exc if isinstance(exc, BaseException)
                           else ProtocolError(f"malformed error reply: {exc!r}"))
            elif kind == _CALL:
                self._on_call(msg[1], msg[2], msg[3], msg[4], msg[5])
            elif kind == _CANCEL:
                cancel = self._incoming.pop(msg[1], None)
                if cancel is not None:
                    cancel()
            elif kind == _PING:
                self.send([_PONG, msg[1]])
            elif kind == _PONG:
                self.node._on_pong(self, msg[1])
            elif kind == _BYE:
                self.conn.close(ConnectionLost(f"{self.conn.remote} said goodbye: {msg[1]}"))
            else:
                raise ProtocolError(f"unknown message kind {kind!r}")
        except (IndexError, TypeError, KeyError, ValueError) as e:
            log.warning("closing %s: malformed message (%s)", self.conn.remote, e)
            self.conn.close(ProtocolError(f"malformed message: {e}"))

    def _undecodable(self, body: memoryview, error: DecodeError) -> None:
        """A body that does not decode: answer the call if we can tell which it was."""
        try:
            unpacker = msgpack.Unpacker(max_buffer_size=len(body) or 1)
            unpacker.feed(body)
            size = unpacker.read_array_header()
            kind, cid = unpacker.unpack(), unpacker.unpack()
        except Exception:
            size, kind, cid = 0, None, None
        if size >= 2 and type(cid) is int:
            if kind == _CALL:
                log.warning("refused a call from %s: %s", self.conn.remote, error)
                if cid:
                    self._reply(cid, False, error)
                return
            if kind in (_REPLY, _ERROR):
                waiter = self.pending.pop(cid, None)
                if waiter is not None:
                    waiter(False, error)
                return
        log.warning("closing connection from %s: %s", self.conn.remote, error)
        self.conn.close(error)

    def _on_call(self, cid: int, target: str, method: str, args: list[Any],
                 kwargs: dict[str, Any] | None) -> None:
        if type(cid) is not int or cid < 0:
            raise TypeError("call ids are non-negative integers")
        if (type(target) is not str or type(method) is not str or type(args) is not list
                or (kwargs is not None and type(kwargs) is not dict)):
            log.warning("refused a call from %s: malformed call (target %r, method %r, "
                        "arguments must be a list and a map)", self.conn.remote, target, method)
            if cid:
                self._reply(cid, False, ProtocolError(
                    "a call is [1, id, target: str, method: str, args: list, kwargs: map|nil]"))
            return
        if cid:
            if cid in self._seen:
                return  # a duplicate of a call we already ran or are running
            self._remember(cid)
        if self.node.closed:  # not run: the caller may safely try elsewhere
            self._reply(cid, False, PeerUnreachable(
                f"{self.node.address or 'the node'} is shutting down; the call was not run"))
            return
        actor = self.node._actors.get(target)
        if actor is None:
            log.warning("refused a call from %s: no object named %r", self.conn.remote, target)
            self._reply(cid, False, NoSuchObject(f"no object named {target!r} on this node"))
            return
        info = actor.methods.get(method)
        if info is None:
            log.warning("refused a call from %s: %s.%s is not exposed",
                        self.conn.remote, target, method)
            self._reply(cid, False, NotExposed(
                f"{type(actor.obj).__name__}.{method} is not exposed for remote calls"))
            return
        caller = CALLER.set(self.node._caller_of(self))
        try:
            self._start(actor, info, cid, target, method, args, kwargs)
        finally:
            CALLER.reset(caller)

    def _start(self, actor: Actor, info: MethodInfo, cid: int, target: str, method: str,
               args: list[Any], kwargs: dict[str, Any] | None) -> None:
        if not cid:
            actor.submit(info, args, kwargs, _log_oneway_failure(target, method))
            return
        # Register the cancel hook before starting: a pool thread may reply at once.
        started: list[Callable[[], None]] = []
        self._incoming[cid] = lambda: started[0]() if started else None

        def reply(ok: bool, value: Any) -> None:
            self._incoming.pop(cid, None)
            self._reply(cid, ok, value)
            if self._idle is not None and not self._incoming:
                self.conn.loop.call_soon_threadsafe(self._idle.set)
            if self._paused and len(self._incoming) < self._max_inflight // 2:
                self.conn.loop.call_soon_threadsafe(self._resume)

        started.append(actor.submit(info, args, kwargs, reply))
        if len(self._incoming) >= self._max_inflight and not self._paused:
            self._paused = True  # backpressure: stop reading until calls finish
            self.conn.pause_reading()

    async def calls_replied(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) until every call the peer made here has replied."""
        self._idle = asyncio.Event()  # before the check: reply() sets it from any thread
        if not self._incoming:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()

    def _resume(self) -> None:
        if self._paused and len(self._incoming) < self._max_inflight // 2:
            self._paused = False
            self.conn.resume_reading()

    def _remember(self, cid: int) -> None:
        """Remember recent call ids (ids only grow, so old ones are pruned in bulk)."""
        seen = self._seen
        seen.add(cid)
        if cid > self._max_seen:
            self._max_seen = cid
        if len(seen) > 2 * _SEEN_WINDOW:
            floor = self._max_seen - _SEEN_WINDOW
            self._seen = {c for c in seen if c > floor}

    def _reply(self, cid: int, ok: bool, value: Any) -> None:
        """Send a call's outcome; runs on whichever thread finished the call."""
        if not cid or self.closed:
            return
        try:
            self.send([_REPLY, cid, value] if ok else [_ERROR, cid, value])
        except EncodeError as e:
            # The result cannot travel: tell the caller why instead of leaving it waiting.
            try:
                self.send([_ERROR, cid, e])
            except (EncodeError, ConnectionLost):
                pass
        except ConnectionLost:
            pass

    def _on_close(self, reason: BaseException | None) -> None:
        self.closed = True
        self.close_reason = reason
        error = reason if isinstance(reason, ConnectionLost) else ConnectionLost(
            f"connection to {self.conn.remote} closed: {reason or 'by us'}")
        pending, self.pending = self.pending, {}
        for waiter in pending.values():
            waiter(False, error)
        incoming, self._incoming = self._incoming, {}
        for cancel in incoming.values():
            cancel()
        self.node._link_closed(self)


def _log_oneway_failure(target: str, method: str) -> Callable[[bool, Any], None]:
    def reply(ok: bool, value: Any) -> None:
        if not ok:
            log.warning("oneway call %s.%s raised %r", target, method, value)
    return reply
