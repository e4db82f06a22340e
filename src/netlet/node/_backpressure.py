"""What one peer's calls may hold on a link, and what happens past each bound.

``Link`` mixes this in. Three rules, all per connection:

- too many calls running (``max_inflight``) or too many of their bytes held
  (``Account.over``): stop reading the peer until half replied and memory came
  back (TCP then slows the sender);
- more replies unread than the connection's limit (``Account.backlogged``):
  keep reading it (its replies to our calls must still come in), but hold its
  new calls, in order, until it has read enough (``Account.when_drained``);
- a reply that would take its unread replies past twice the limit: drop the
  peer, on the thread that made the reply, at once.

A peer we stopped reading, or whose calls we hold, must still read us: if
what we queued for it does not shrink for 10 s, it is closed (each side may
be waiting for the other, and neither would move again).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from netlet.clock import Clock
from netlet.errors import ConnectionLost, PeerUnreachable
from netlet.node._actor import CALLER, Actor
from netlet.node._expose import MethodInfo
from netlet.transport import Account, Connection

if TYPE_CHECKING:
    from netlet.node._node import Node

__all__ = ["Backpressure", "Held", "log_oneway_failure"]

log = logging.getLogger("netlet.node")

_STALL_CHECK = 2.0
_STALL_CHECKS = 5
"""A link that does not read the peer or run its calls, and whose queue for the peer
does not shrink for 5 x 2 s, is closed."""


class Backpressure:
    """The budget rules of a ``Link`` (see the module docstring); loop thread unless said."""

    node: Node
    conn: Connection
    closed: bool
    _account: Account | None
    _incoming: dict[int, Callable[[], None]]
    _call_bytes: dict[int, int]
    _oneways: int
    _count_lock: threading.Lock
    _max_inflight: int
    _paused: bool
    _decoding: bool
    _held: deque[Held]
    _watching: bool
    _dropped: bool
    _clock: Clock

    def _hold(self, call: Held) -> None:
        """Keep a call to start once the peer has read its replies (loop thread)."""
        self._held.append(call)
        if len(self._held) == 1:
            log.info("holding calls from %s until it reads its replies (%d bytes unread)",
                     self.conn.remote, self.conn.pending_bytes())
            self._watch_stall()
            assert self._account is not None
            self._account.when_drained(self._wake_held)

    def _wake_held(self) -> None:
        """From any thread: the peer read enough of its replies."""
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.conn.loop.call_soon_threadsafe(self._start_held)

    def _start_held(self) -> None:
        """Start held calls, in order, while the peer keeps up (loop thread)."""
        held, acct = self._held, self._account
        while held and not self.closed:
            if acct is not None and acct.backlogged():
                acct.when_drained(self._wake_held)
                return
            call = held.popleft()
            if call.cid and self._incoming.get(call.cid) is not call.cancel:
                continue  # cancelled while held
            if self.node.closed:
                call.reply(False, PeerUnreachable(
                    f"{self.node.address or 'the node'} is shutting down; the call was not run"))
                continue
            caller = CALLER.set(call.caller)
            try:
                started = call.actor.submit(call.info, call.args, call.kwargs, call.reply)
            finally:
                CALLER.reset(caller)
            if call.started is not None:
                call.started.append(started)

    def _inflight(self) -> int:
        return len(self._incoming) + self._oneways

    def _give_back(self, cid: int) -> None:
        """The call ``cid`` replied or was cancelled: its bytes leave the budget."""
        n = self._call_bytes.pop(cid, 0)
        if n and self._account is not None:
            self._account.release(n)

    def _oneway_done(self, target: str, method: str, size: int) -> Callable[[bool, Any], None]:
        log_failure = log_oneway_failure(target, method)

        def done(ok: bool, value: Any) -> None:
            with self._count_lock:
                self._oneways -= 1
            if self._account is not None:
                self._account.release(size)
            log_failure(ok, value)
            if self._paused and self._inflight() < self._max_inflight // 2:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    self.conn.loop.call_soon_threadsafe(self._resume)
        return done

    def _maybe_pause(self) -> None:
        """Stop reading the peer while too many of its calls run or it holds too much memory.

        TCP then slows the sender. Reading resumes once half the calls replied and
        the connection is back under half its memory limit (see ``Account``).
        """
        if self._paused:
            return
        acct = self._account
        if self._inflight() >= self._max_inflight or (acct is not None and acct.over()):
            self._paused = True
            self.conn.pause_reading()
            if acct is not None and acct.over():
                acct.when_under(self._wake)
            self._watch_stall()

    def _watch_stall(self) -> None:
        if not self._watching:
            self._watching = True
            self._clock.call_later(self.conn.loop, _STALL_CHECK, self._check_stall, -1, 0)

    def _check_stall(self, queued_before: int, stuck: int) -> None:
        """While we do not read the peer or run its calls, it must still read us: if
        what we queued for it does not shrink for a while, close (it may wait for us
        first, and neither would move again)."""
        if not (self._paused or self._held) or self.closed:
            self._watching = False
            return
        queued = self.conn.pending_bytes()
        stuck = stuck + 1 if queued and 0 <= queued_before <= queued else 0
        if stuck >= _STALL_CHECKS:
            log.warning("closing %s: we stopped reading it or running its calls (memory "
                        "budget or max_inflight) and it has not read the %d bytes we queued "
                        "for it in %.0f s", self.conn.remote, queued,
                        _STALL_CHECK * _STALL_CHECKS)
            self.conn.close(ConnectionLost(
                f"{self.conn.remote} stopped reading while we waited for it to"))
            return
        self._clock.call_later(self.conn.loop, _STALL_CHECK, self._check_stall, queued, stuck)

    def _wake(self) -> None:
        """From any thread: memory was given back; see whether to read again."""
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.conn.loop.call_soon_threadsafe(self._resume)

    def _resume(self) -> None:
        if not self._paused or self.closed or self._inflight() >= self._max_inflight // 2:
            return  # the next reply calls this again
        acct = self._account
        if acct is not None and not acct.under_low_water():
            acct.when_under(self._wake)
            return
        self._paused = False
        if not self._decoding:
            self.conn.resume_reading()

    def _past_reply_budget(self, queued: int, size: int) -> bool:
        """Would a reply of ``size`` bytes take what the peer has not read past twice
        its limit? Then drop the peer, on this thread and at once.

        The loop closes the connection, and under load it can lag far behind the
        threads making replies: ``_dropped`` stops every later reply here and now.
        """
        assert self._account is not None
        if queued + size <= 2 * self._account.limit:
            return False
        self._dropped = True
        log.warning("closing %s: it does not read its replies (%d bytes queued, a %d-byte "
                    "reply would pass twice max_connection_memory)", self.conn.remote,
                    queued, size)
        self.conn.close(ConnectionLost(
            f"{self.conn.remote} did not read its replies: over the memory budget"))
        return True


class Held:
    """A call from a peer that is behind on reading its replies, not started yet."""

    __slots__ = ("actor", "args", "caller", "cancel", "cid", "info", "kwargs", "reply",
                 "started")

    def __init__(self, actor: Actor, info: MethodInfo, args: list[Any],
                 kwargs: dict[str, Any] | None, reply: Callable[[bool, Any], None],
                 cid: int = 0, cancel: Callable[[], None] | None = None,
                 started: list[Callable[[], None]] | None = None) -> None:
        self.actor, self.info, self.args, self.kwargs = actor, info, args, kwargs
        self.reply, self.cid, self.cancel, self.started = reply, cid, cancel, started
        self.caller = CALLER.get()


def log_oneway_failure(target: str, method: str) -> Callable[[bool, Any], None]:
    def reply(ok: bool, value: Any) -> None:
        if not ok:
            log.warning("oneway call %s.%s raised %r", target, method, value)
    return reply
