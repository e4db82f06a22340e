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
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgpack

from netlet.codec import SLICED_FROM, Buffer, Codec, short
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
from netlet.node._backpressure import Backpressure, Held
from netlet.node._dispatch import encode_outcome
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
from netlet.node._unsent import LOOK, TRACK_MIN, Unsent
from netlet.transport import Connection, PeerInfo

if TYPE_CHECKING:
    from netlet.node._node import Node
    from netlet.node._stats import LinkStatistics

__all__ = ["Link", "OnReply"]

log = logging.getLogger("netlet.node")

OnReply = Callable[[bool, Any], None]
"""Settles one outgoing call: (True, value) or (False, exception). Runs on the loop."""

_SEEN_WINDOW = 4096
_PEEK = 32  # bytes of an undecodable body read for its kind and call id
_MAX_CALL_ID = 2**64 - 1  # msgpack's largest uint: bigger ids (ext 9) could flood _seen

_decoder: ThreadPoolExecutor | None = None
_decoder_lock = threading.Lock()


def _decode_thread() -> ThreadPoolExecutor:
    """The one thread (per process) that decodes big bodies, one at a time.

    Decoding a big body holds the GIL in slices (see ``netlet.codec``), so the
    loops keep serving while it runs; one thread bounds the CPU and memory
    that hostile bodies can take at once.
    """
    global _decoder
    with _decoder_lock:
        if _decoder is None:
            _decoder = ThreadPoolExecutor(1, thread_name_prefix="netlet-decode")
        return _decoder


class Link(Backpressure):
    """The node's view of one connection."""

    def __init__(self, node: Node, conn: Connection, peer: PeerInfo) -> None:
        self.node = node
        self.conn = conn
        self.peer = peer
        me = weakref.ref(self)  # no cycle link -> codec -> link: freed without the GC
        self.codec = Codec(
            node.config.transport.limits,
            allow_pickle=peer.pickle,
            ref_encoder=lambda obj: node.ref_for(obj, me()),  # type: ignore[arg-type]
            ref_decoder=lambda ref: node.from_ref(ref, me()),
        )
        dispatcher = node.dispatcher
        self._find = dispatcher.find
        self._caller_of = dispatcher.caller_of
        self.pending: dict[int, OnReply] = {}
        self.unsent: dict[int, Unsent] = {}  # calls whose request is still going out
        self._ids = itertools.count(1)
        self._incoming: dict[int, Callable[[], None]] = {}  # call id -> cancel
        self._idle: asyncio.Event | None = None  # set once _incoming empties, while closing
        self._seen: set[int] = set()
        self._max_seen = 0
        self.closed = False
        self.close_reason: BaseException | None = None
        self.exported: set[str] = set()  # auto-served object ids handed to this peer
        self.dial_address: str = ""  # where to open side connections to this peer ("" if none)
        self._clock = node.config.clock
        self._now = self._clock.monotonic
        self.last_heard = self._now()
        self._max_inflight = node.config.max_inflight
        self._paused = False
        self._decoding = False  # a big body is being decoded off the loop
        self._backlog: deque[tuple[bytes, list[Buffer]]] = deque()  # frames behind it
        self._send_lock = threading.Lock()
        # Memory budget: bytes of each call the peer made here, until it replies.
        self._account = conn.account
        self._frame_size = 0
        self._call_bytes: dict[int, int] = {}
        self._oneways = 0  # oneway calls queued or running (they count as in flight)
        self._count_lock = threading.Lock()
        self._dropped = False  # over its reply budget: no more replies; the close follows
        self._held: deque[Held] = deque()  # calls not started: it is behind on replies
        self._watching = False  # _check_stall is scheduled
        self._counters = node.counters
        self.bytes_in = self.bytes_out = self.frames_in = self.frames_out = 0  # this link's
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
        self._sent(body, buffers)

    def start_call(self, waiter: OnReply | None, target: str, method: str,
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
        self._counters.calls_out += 1
        self._sent(body, buffers)
        return cid

    def first_look(self, cid: int, timeout: float) -> float:
        """Seconds until call ``cid``'s deadline is first looked at: ``timeout``, or
        sooner when its request is still queued in bulk (see ``_unsent``)."""
        if self.conn.pending_bytes() < TRACK_MIN:
            return timeout
        written, queued = self.conn.send_progress()
        if queued < TRACK_MIN:
            return timeout
        self.unsent[cid] = Unsent(written + queued, written, self._now())
        return min(LOOK, timeout)

    def due_again(self, cid: int, timeout: float) -> float | None:
        """Call ``cid`` was looked at on its deadline: when it falls now (monotonic
        time of the node's clock), or None if the call fails now."""
        u = self.unsent.get(cid)
        if u is None:
            return None
        due = u.next_due(self.conn.send_progress()[0], timeout, self._now())
        if due is None or u.out:
            del self.unsent[cid]
        return due

    def _sent(self, body: bytes | memoryview, buffers: list[Buffer] | None) -> None:
        c = self._counters
        size = len(body) + (sum(map(len, buffers)) if buffers else 0)
        c.frames_out += 1
        c.bytes_out += size
        self.frames_out += 1
        self.bytes_out += size

    def statistics(self) -> LinkStatistics:
        """This connection's counters and gauges: O(1)."""
        from netlet.node._stats import LinkStatistics  # loaded when first asked

        return LinkStatistics(self.peer.node, str(self.conn.remote), self.bytes_in,
                              self.bytes_out, self.frames_in, self.frames_out,
                              len(self.pending), len(self._incoming) + self._oneways,
                              self.conn.pending_bytes(),
                              max(0.0, self._now() - self.last_heard), self.closed)

    def fail_pending(self, error: BaseException) -> None:
        """Fail every call still waiting for a reply with ``error`` (the node is closing)."""
        pending, self.pending = self.pending, {}
        for waiter in pending.values():
            waiter(False, error)

    @property
    def reading_paused(self) -> bool:
        """We stopped reading the peer (too many of its calls in flight): it is busy,
        not silent, so the keepalive must not judge it by what it says meanwhile."""
        return self._paused

    def abandon(self, cid: int) -> None:
        """Stop waiting for ``cid`` and ask the peer to cancel it."""
        if self.pending.pop(cid, None) is not None and not self.closed:
            try:
                self.send([_CANCEL, cid])
            except (ConnectionLost, EncodeError):
                pass

    # -- incoming (loop thread) ---------------------------------------------

    def _on_message(self, body: memoryview, buffers: list[Buffer]) -> None:
        self.last_heard = self._now()
        if self._decoding:  # keep arrival order behind the body being decoded
            self._backlog.append((bytes(body), list(buffers)))
            return
        self._frame_size = body.nbytes + (sum(map(len, buffers)) if buffers else 0)
        c = self._counters
        c.frames_in += 1
        c.bytes_in += self._frame_size
        self.frames_in += 1
        self.bytes_in += self._frame_size
        if len(body) >= SLICED_FROM:  # the size stays set: later frames wait in _backlog
            self._decode_aside(bytes(body), buffers)
            return
        try:
            msg = self.codec.decode(body, buffers)
        except DecodeError as e:
            self._undecodable(body, e)
            return
        self._dispatch(msg)

    def _decode_aside(self, body: bytes, buffers: list[Buffer]) -> None:
        """Decode a big body on the decode thread; stop reading until it is done."""
        self._decoding = True
        self.conn.pause_reading()
        _decode_thread().submit(self._decode_in_thread, body, buffers)

    def _decode_in_thread(self, body: bytes, buffers: list[Buffer]) -> None:
        if self.closed:
            return
        result: Any
        try:
            result = self.codec.decode(body, buffers)
            ok = True
        except DecodeError as e:
            result, ok = e, False
        with contextlib.suppress(RuntimeError):  # the loop is gone: so is the link
            self.conn.loop.call_soon_threadsafe(self._decoded, body, ok, result)

    def _decoded(self, body: bytes, ok: bool, result: Any) -> None:
        self._decoding = False
        if self.closed:
            self._backlog.clear()
            return
        if ok:
            self._dispatch(result)
        else:
            self._undecodable(memoryview(body), result)
        while self._backlog and not self._decoding and not self.closed:
            held, bufs = self._backlog.popleft()
            self._on_message(memoryview(held), bufs)
        if not self._decoding and not self._paused and not self.closed:
            self.conn.resume_reading()

    def _dispatch(self, msg: Any) -> None:
        """Act on one decoded message (loop thread)."""
        try:
            if type(msg) is not list:  # a map {0: 5, 1: token} is no PING (§11)
                raise TypeError("not an array")
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
                           else ProtocolError(f"malformed error reply: {short(exc)}"))
            elif kind == _CALL:
                self._on_call(msg[1], msg[2], msg[3], msg[4], msg[5])
            elif kind == _CANCEL:
                cancel = self._incoming.pop(msg[1], None)
                if cancel is not None:
                    self._give_back(msg[1])
                    cancel()
            elif kind == _PING:
                self.send([_PONG, msg[1]])
            elif kind == _PONG:  # it only proves the peer alive: last_heard recorded that
                if len(msg) < 2:  # [6, token]: a short one is malformed, as any other kind
                    raise IndexError(kind)
            elif kind == _BYE:
                reason = msg[1] if type(msg[1]) is str and len(msg[1]) <= 200 else short(msg[1])
                self.conn.close(ConnectionLost(f"{self.conn.remote} said goodbye: {reason}"))
            else:
                raise ProtocolError(f"unknown message kind {short(kind)}")
        except (IndexError, TypeError, KeyError, ValueError) as e:
            why = _malformed(msg, e)
            log.warning("closing %s: malformed message (%s)", self.conn.remote, why)
            self.conn.close(ProtocolError(f"malformed message: {why}"))

    def _undecodable(self, body: memoryview, error: DecodeError) -> None:
        """A body that does not decode: answer the call if we can tell which it was."""
        try:  # the kind and the id are small ints: the first bytes hold them
            unpacker = msgpack.Unpacker(max_buffer_size=_PEEK)
            unpacker.feed(body[:_PEEK])
            size = unpacker.read_array_header()
            kind, cid = unpacker.unpack(), unpacker.unpack()
        except Exception:
            size, kind, cid = 0, None, None
        if size >= 2 and type(cid) is int:
            if kind == _CALL and 0 < cid <= _MAX_CALL_ID:
                log.warning("refused a call from %s: %s", self.conn.remote, error)
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
        if type(cid) is not int or not 0 <= cid <= _MAX_CALL_ID:
            raise TypeError(f"call id {short(cid)}: call ids are ints from 0 (oneway) to 2**64 - 1")
        if (type(target) is not str or type(method) is not str or type(args) is not list
                or (kwargs is not None and type(kwargs) is not dict)):
            log.warning("refused a call from %s: malformed call (target %s, method %s, "
                        "arguments must be a list and a map)", self.conn.remote, short(target),
                        short(method))
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
        try:
            actor, info = self._find(target, method, self.conn.remote)
        except (NoSuchObject, NotExposed) as e:  # the node's own answer: no traceback
            self._reply(cid, False, e.with_traceback(None))
            return
        caller = CALLER.set(self._caller_of(self))
        try:
            self._start(actor, info, cid, target, method, args, kwargs)
        finally:
            CALLER.reset(caller)

    def _start(self, actor: Actor, info: MethodInfo, cid: int, target: str, method: str,
               args: list[Any], kwargs: dict[str, Any] | None) -> None:
        size = self._frame_size
        acct = self._account
        self._counters.calls_in += 1
        if acct is not None:
            acct.charge(size)
        # Behind on reading its replies (acct.backlogged(), inlined): run nothing new.
        hold = bool(self._held) or (acct is not None and acct.queued > acct.limit)
        if not cid:
            with self._count_lock:
                self._oneways += 1
            done = self._oneway_done(target, method, size)
            if hold:
                self._hold(Held(actor, info, args, kwargs, done))
            else:
                actor.submit(info, args, kwargs, done)
            self._maybe_pause()
            return
        # Register the cancel hook before starting: a pool thread may reply at once.
        started: list[Callable[[], None]] = []

        def cancel() -> None:
            if started:
                started[0]()

        self._incoming[cid] = cancel
        self._call_bytes[cid] = size

        def reply(ok: bool, value: Any) -> None:
            self._incoming.pop(cid, None)
            self._give_back(cid)
            self._reply(cid, ok, value)
            if self._idle is not None and not self._incoming:
                self.conn.loop.call_soon_threadsafe(self._idle.set)
            if self._paused and self._inflight() < self._max_inflight // 2:
                self.conn.loop.call_soon_threadsafe(self._resume)

        if hold:
            self._hold(Held(actor, info, args, kwargs, reply, cid, cancel, started))
        else:
            started.append(actor.submit(info, args, kwargs, reply))
        self._maybe_pause()

    async def calls_replied(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) until every call the peer made here has replied."""
        self._idle = asyncio.Event()  # before the check: reply() sets it from any thread
        if not self._incoming:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()

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
        if not ok:
            self._counters.errors += 1
        if not cid or self.closed or self._dropped:
            return
        try:
            body, buffers = encode_outcome(self.codec, cid, ok, value)
            if self.conn.pending_bytes() and self._account is not None:
                # The peer is behind: check and queue as one step, so that threads
                # replying at once cannot all pass on the same reading of the queue.
                size = len(body) + (sum(map(len, buffers)) if buffers else 0)
                with self._send_lock:
                    if not self._dropped and not self._past_reply_budget(
                            self.conn.pending_bytes(), size):
                        self.conn.send(body, buffers)
                        self._sent(body, buffers)
                return
            self.conn.send(body, buffers)
            self._sent(body, buffers)
        except (EncodeError, ConnectionLost):
            pass

    def _on_close(self, reason: BaseException | None) -> None:
        self.closed = True
        self.close_reason = reason
        error = reason if isinstance(reason, ConnectionLost) else ConnectionLost(
            f"connection to {self.conn.remote} closed: {reason or 'by us'}")
        pending, self.pending = self.pending, {}
        self.unsent.clear()
        for waiter in pending.values():
            waiter(False, error)
        incoming, self._incoming = self._incoming, {}
        for cancel in incoming.values():
            cancel()
        self._call_bytes.clear()  # the connection gave its whole account back
        self._held.clear()
        self.codec.release()
        self.node.link_closed(self)


def _malformed(msg: Any, error: Exception) -> str:
    """Why a decoded message cannot be acted on, in words a peer's author can act on."""
    if type(msg) is not list or not msg:
        return f"a message is a non-empty array (PROTOCOL.md §5), not {short(msg)}"
    if isinstance(error, IndexError):
        return f"{len(msg)} elements are too few for a message of kind {short(msg[0])}"
    return str(error)
