"""The direct path for blocking calls: a side connection per calling thread.

Going through the event loop costs two thread hops per blocking call (the
caller hands the reply wait to the loop thread; the server's loop hands the
call to the actor's thread), and a hop costs tens of microseconds. So a thread
making a blocking call borrows a *direct* connection to that peer: it writes
the call and reads its own reply on the socket. The server serves each direct
connection with a thread of its own, which runs the call inline (under the
actor's lock, so an actor still handles one call at a time).

The main link always exists first and carries everything else: async calls,
callbacks from the server, pings. A direct connection carries only calls from
the client and their replies, one at a time. It belongs to that main link: its
hello carries the link's transcript token, which only the two ends of the link
know, so a peer that merely claims another node's id cannot borrow that node's
link to resolve references (docs/PROTOCOL.md 4.8).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

from netlet.codec import Codec, RemoteRef, short
from netlet.errors import (
    CallTimeout,
    ConnectionLost,
    DecodeError,
    NetletError,
    NoSuchObject,
    NotExposed,
    ProtocolError,
)
from netlet.node._actor import CALLER
from netlet.node._dispatch import encode_outcome
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
    REPLY as _REPLY,
)
from netlet.transport import (
    BlockingFramer,
    PeerInfo,
    SendStalled,
    SocketConnection,
    connect,
    received_size,
)

if TYPE_CHECKING:
    from netlet.node._link import Link
    from netlet.node._node import Node

__all__ = ["DirectPool", "serve_direct"]

log = logging.getLogger("netlet.node")

MAX_DIRECT_PER_PEER = 16
_CHARGED_FROM = 64 * 1024
"""Replies this large count in the memory budget while they are being sent."""
_STALL = 5
"""Seconds a direct peer may take none of its reply before it is dropped (the thread
and the reply would otherwise wait for it for ever)."""
_CANCEL_STALL = 1.0
"""Seconds a CANCEL may wait for room in the socket, after a call timed out."""


def _codec(node: Node, peer: PeerInfo, link: Link | None) -> Codec:
    """REFs on a direct connection resolve through the main link it belongs to.

    With none (it showed no valid token), exposed objects cannot be sent on it
    and handles naming its peer lead nowhere.
    """
    def encode_ref(obj: object) -> Any:
        return None if link is None or link.closed else node.ref_for(obj, link)

    def decode_ref(ref: RemoteRef) -> object:
        if link is None:
            return node.from_unbound_ref(ref, peer.node)
        return node.from_ref(ref, link)

    return Codec(node.config.transport.limits, allow_pickle=peer.pickle,
                 ref_encoder=encode_ref, ref_decoder=decode_ref)


class _DirectClient:
    """One direct connection, used by one thread at a time."""

    def __init__(self, framer: BlockingFramer, codec: Codec, node: Node, link: Link) -> None:
        self.framer = framer
        self.codec = codec
        self.next_id = 1
        self.broken = False
        self.node = node
        self.link = link
        self.keepalive = node.config.keepalive
        self.clock = node.config.clock

    def _check_peer(self, pinged: float | None) -> float:
        """Ping the peer over its main link; give up once a ping went unanswered long."""
        link = self.link
        if link.closed:
            raise ConnectionLost("the connection to the peer is gone")
        now = self.clock.monotonic()
        if pinged is not None and link.last_heard < pinged and self.keepalive is not None \
                and now - pinged > 3 * self.keepalive:
            raise ConnectionLost(
                f"{link.conn.remote} stopped answering ({now - pinged:.1f} s after a ping)")
        if pinged is None or link.last_heard >= pinged:
            link.send([_PING, 0])  # its pong refreshes last_heard
            return now
        return pinged

    def call(self, target: str, method: str, args: tuple[Any, ...],
             kwargs: dict[str, Any] | None, timeout: float | None) -> tuple[bool, Any]:
        cid = self.next_id
        self.next_id += 1
        body, buffers = self.codec.encode([_CALL, cid, target, method, list(args), kwargs])
        clock = self.clock
        ka = self.keepalive
        pinged: float | None = None
        counters = self.node.counters
        counters.calls_out += 1
        counters.frames_out += 1
        counters.bytes_out += len(body) + (sum(map(len, buffers)) if buffers else 0)
        try:
            try:  # the timeout bounds a stall while sending, then the wait for the reply
                start = self.framer.send(body, buffers, timeout, clock)
            except SendStalled:
                self.broken = True  # cut mid-frame
                stalled = CallTimeout(f"{target}.{method}() could not send its request: the "
                                      f"peer took none of it for {timeout} s")
                return False, stalled
            deadline = None if timeout is None else start + timeout
            look = None if ka is None else start + ka  # next look at the peer's liveness
            # The first wait is exactly min(timeout, keepalive), the same each call, so
            # the socket's receive timeout is not set again (a syscall per call).
            left, to_look = timeout, ka
            while True:
                # Wait in keepalive slices: between them, make sure the peer still lives
                # (a frozen peer never closes this socket, and nothing else would notice).
                wait = left if to_look is None else (
                    to_look if left is None else min(to_look, left))
                try:
                    rbody, rbufs = self.framer.recv(clock.io_slice(wait))
                except TimeoutError:
                    now = clock.monotonic()
                    if deadline is not None and now >= deadline:
                        raise
                    if look is not None and ka is not None and now >= look:
                        pinged = self._check_peer(pinged)
                        look = now + ka
                    left, to_look = _left(deadline, now), _left(look, now)
                    continue
                counters.frames_in += 1
                counters.bytes_in += received_size(rbody, rbufs) if rbufs else len(rbody)
                try:
                    msg = self.codec.decode(rbody, rbufs)
                except DecodeError as e:
                    return False, e  # the frame was consumed whole: the connection is fine
                if msg[0] in (_REPLY, _ERROR) and msg[1] == cid:
                    return msg[0] == _REPLY, msg[2]
                # Anything else is a late reply to an abandoned call: skip it.
                now = clock.monotonic()
                left, to_look = _left(deadline, now), _left(look, now)
        except TimeoutError:
            self.broken = True
            try:  # a peer that took nothing for so long may take no CANCEL either
                self.framer.send(self.codec.encode([_CANCEL, cid])[0], (), _CANCEL_STALL, clock)
            except (NetletError, TimeoutError):
                pass
            raise CallTimeout(f"{target}.{method}() got no reply in {timeout} s") from None
        except (NetletError, OSError, IndexError, TypeError):
            self.broken = True
            raise


def _close_unclaimed(fut: concurrent.futures.Future[tuple[socket.socket | None, Any]]) -> None:
    """A direct connection made after its caller gave up waiting: nobody will use it."""
    if not fut.cancelled() and fut.exception() is None:
        sock = fut.result()[0]
        if sock is not None:
            sock.close()


def _left(until: float | None, now: float) -> float | None:
    """Seconds from ``now`` to ``until`` (None: no bound)."""
    return None if until is None else max(until - now, 0.0)


class DirectPool:
    """Free direct connections to the peer at the other end of one main link."""

    def __init__(self, node: Node, link: Link) -> None:
        self.node = node
        self.link = link
        self.address = link.dial_address
        self._free: list[_DirectClient] = []
        self._lock = threading.Lock()
        self._count = 0
        self.disabled = False

    def acquire(self) -> _DirectClient | None:
        """A free connection, a new one, or None (use the main link instead)."""
        with self._lock:
            if self._free:
                return self._free.pop()
            if self.disabled or self._count >= MAX_DIRECT_PER_PEER:
                return None
            self._count += 1
        try:
            return self._open()
        except (NetletError, OSError, TimeoutError) as e:
            log.info("no direct connection to %s (%s); using the main link", self.address, e)
            with self._lock:
                self._count -= 1
                self.disabled = True
            return None

    def release(self, client: _DirectClient) -> None:
        """Give a connection back; a broken one, or one returned after close, is closed."""
        with self._lock:
            if not client.broken and not self.disabled:
                self._free.append(client)
                return
            self._count -= 1
        client.framer.close()
        client.codec.release()

    def _open(self) -> _DirectClient:
        node = self.node
        loop = node.get_loop()

        async def dial() -> tuple[socket.socket | None, PeerInfo]:
            conn, peer = await connect(self.address, node.config.transport, node.id,
                                       node.address or "", role="direct",
                                       link_token=self.link.peer.token)
            if peer.node != self.link.peer.node:  # another node answers there now
                conn.close()
                raise ConnectionLost(f"{self.address} is now node {peer.node[:8]}, "
                                     f"not {self.link.peer.node[:8]}")
            sock = conn.detach() if isinstance(conn, SocketConnection) else None
            if sock is None:
                conn.close()
            return sock, peer

        t = node.config.transport
        fut = asyncio.run_coroutine_threadsafe(dial(), loop)
        try:
            sock, peer = fut.result(t.connect_timeout + t.handshake_timeout + 1)
        except concurrent.futures.TimeoutError:
            fut.cancel()  # a dial that completes anyway closes what it made
            fut.add_done_callback(_close_unclaimed)
            raise
        if sock is None:
            raise ConnectionLost("direct connection unavailable on this transport")
        limits = t.limits
        return _DirectClient(BlockingFramer(sock, limits.max_frame, limits.max_buffers,
                                            shm=peer.shm),
                             _codec(node, peer, self.link), node, self.link)

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
            self.disabled = True
        for client in free:
            client.framer.close()
            client.codec.release()


def serve_direct(node: Node, framer: BlockingFramer, peer: PeerInfo, remote: str,
                 link: Link | None) -> None:
    """Server side: read calls from one direct connection and run them (its own thread).

    The link table owns the framer and closes it; this reads until the peer goes.
    """
    codec = _codec(node, peer, link)
    counters = node.counters
    counters.connections_total += 1
    dispatcher = node.dispatcher
    try:
        while not node.closed:
            try:
                body, bufs = framer.recv()
            except ConnectionLost as e:
                if framer.has_partial():
                    log.warning("direct connection from %s closed mid-frame: a truncated "
                                "frame was dropped", remote)
                else:
                    log.debug("direct connection from %s closed: %s", remote, e)
                return
            except ProtocolError as e:  # a frame over the limits
                log.warning("closing direct connection from %s: %s", remote, e)
                return
            except OSError:
                return
            counters.frames_in += 1
            # Never reads lazy buffers (most frames have none).
            counters.bytes_in += received_size(body, bufs) if bufs else len(body)
            try:
                msg = codec.decode(body, bufs)
            except DecodeError as e:
                log.warning("closing direct connection from %s: %s", remote, e)
                return
            problem = _check_call(msg)
            if problem == "cancel":
                continue  # the call it names already finished: we run one at a time
            if problem:
                log.warning("closing direct connection from %s: %s", remote, problem)
                return
            _, cid, target, method, args, kwargs = msg
            del msg, body, bufs
            counters.calls_in += 1
            caller = CALLER.set(dispatcher.caller_of(link) if link is not None else "")
            try:
                _run_call(node, framer, codec, remote, cid, target, method, args, kwargs)
            finally:
                CALLER.reset(caller)
            del args, kwargs
            framer.release()  # the call is over: its frame leaves the budget
    finally:
        codec.release()


def _check_call(msg: Any) -> str:
    """What is wrong with a message on a direct connection ("" for a good call)."""
    if type(msg) is not list or not msg:
        return "malformed message: not a non-empty array"
    if msg[0] == _CANCEL:
        return "cancel"
    if msg[0] != _CALL:
        return f"unexpected message kind {short(msg[0])} on a direct connection"
    if len(msg) != 6:
        return "malformed message: a call has 6 elements"
    _, cid, target, method, args, kwargs = msg
    if type(cid) is not int or cid < 0:
        return "malformed message: call ids are non-negative integers"
    if type(target) is not str or type(method) is not str:
        return "malformed message: target and method are strings"
    if type(args) is not list or (kwargs is not None and type(kwargs) is not dict):
        return "malformed message: call arguments must be a list and a map"
    return ""


def _run_call(node: Node, framer: BlockingFramer, codec: Codec, remote: str, cid: int,
              target: str, method: str, args: list[Any],
              kwargs: dict[str, Any] | None) -> None:
    def reply(ok: bool, value: Any) -> None:
        counters = node.counters
        if not ok:
            counters.errors += 1
        if not cid:
            if not ok:
                log.warning("oneway call %s.%s raised %r", target, method, value)
            return
        body, buffers = encode_outcome(codec, cid, ok, value)
        # A large reply waits in memory until the peer reads it: charge it meanwhile.
        size = len(body) + (sum(map(len, buffers)) if buffers else 0)
        counters.frames_out += 1
        counters.bytes_out += size
        account = framer.account if size >= _CHARGED_FROM else None
        if account is not None:
            account.queue(size)
        try:
            framer.send(body, buffers, _STALL, node.config.clock)
        except SendStalled:
            log.warning("closing direct connection from %s: it has not read its reply "
                        "(%d bytes) for %d s", remote, size, _STALL)
            framer.close()  # the frame is cut short: nothing can follow it on this stream
        except ConnectionLost:
            framer.close()
        finally:
            if account is not None:
                account.unqueue(size)

    try:
        actor, info = node.dispatcher.find(target, method, remote)
    except (NoSuchObject, NotExposed) as e:  # the node's own answer: no traceback
        reply(False, e.with_traceback(None))
        return
    actor.run_inline(info, args, kwargs, reply, gone=lambda: _peer_gone(framer.sock))


def _peer_gone(sock: socket.socket) -> bool:
    """Whether the caller at the other end of ``sock`` gave up on its running call: it
    closed the socket, the socket broke, or it sent something. While its call runs a
    direct caller sends nothing but a CANCEL, after its timeout, and then closes. What
    it sent stays unread here: the serving loop reads it next."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        pass
    return True
