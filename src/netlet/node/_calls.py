"""How a call leaves the node: the blocking, async, future and oneway paths.

A call picks its path here (a direct socket from the caller's thread, or the
node's link on the loop), makes the future or rendezvous its caller waits on,
arms its timeout and turns a cancellation into an abandon sent to the peer.
This changes when a calling style or the fast path changes, not when the node
learns to serve or connect differently, so it lives apart from ``_node.py``;
each proxy holds a ``Route`` and calls the node's ``Caller`` with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from netlet.clock import Waiter
from netlet.codec import RemoteRef
from netlet.errors import CallTimeout, ConnectionLost, NetletError, NodeClosed
from netlet.node._direct import DirectPool
from netlet.node._link import Link, OnReply
from netlet.node._links import LinkTable
from netlet.node._watch import Watchdog
from netlet.transport import SocketConnection

if TYPE_CHECKING:
    from netlet.node._node import Node

__all__ = ["Caller", "Route"]

log = logging.getLogger("netlet.node")


def _settle(fut: asyncio.Future[Any] | concurrent.futures.Future[Any], ok: bool,
            value: Any) -> None:
    """Complete a call's future (asyncio or concurrent) once with its outcome."""
    if not fut.done():
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _settle_concurrent(fut: concurrent.futures.Future[Any], ok: bool, value: Any) -> None:
    """``_settle`` for a future another thread may cancel meanwhile."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        _settle(fut, ok, value)


def _notify_if_cancelled(fut: concurrent.futures.Future[Any]) -> None:
    """Wake ``wait()`` and ``as_completed()`` on a cancelled call future.

    They learn of a cancellation only through ``set_running_or_notify_cancel``,
    which an executor calls when it reaches the task; a call has no executor.
    """
    if fut.cancelled():
        fut.set_running_or_notify_cancel()


class _CallFuture(asyncio.Future[Any]):
    """An async call's future: cancelling it asks the peer to stop the call.

    (A done callback would do the same at the cost of one more loop callback per call.)
    """

    __slots__ = ("call",)

    call: tuple[Link, int] | None

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        call, self.call = getattr(self, "call", None), None
        if call is not None:
            call[0].abandon(call[1])
        return True


class Route:
    """Where one proxy's calls go: the handle, the link that carries them now, the options.

    ``link`` is set once a call found (or opened) the link, so later calls skip the
    lookup. With ``pinned``, only that link may carry them: it came from a connection
    that does not own the node id it names, so routing by that id could reach
    someone else.
    """

    __slots__ = ("caller", "link", "pinned", "ref", "timeout")

    def __init__(self, caller: Caller, ref: RemoteRef, link: Link | None, pinned: bool,
                 timeout: float | None) -> None:
        self.caller = caller
        self.ref = ref
        self.link = link
        self.pinned = pinned
        self.timeout = timeout

    def check_pinned(self) -> None:
        """A pinned route whose connection closed has nowhere else to go."""
        if self.pinned:
            raise ConnectionLost(f"the connection that handed over {self.ref.name!r} is closed")

    def describe(self) -> str:
        where = self.ref.address or f"node {self.ref.node[:8]}"
        return f"{self.ref.name!r} at {where}"


class Caller:
    """Starts calls along routes: blocking, async, future and oneway.

    Owns the direct-call pools (one per link whose peer takes direct
    connections); links and deadlines come from the node's link table and
    watchdog.
    """

    def __init__(self, node: Node, links: LinkTable, watch: Watchdog) -> None:
        self._node = node
        self._links = links
        self._watch = watch
        self._clock = node.config.clock
        self._pools: dict[Link, DirectPool] = {}

    def _link_blocking(self, route: Route) -> Link:
        link = route.link
        if link is not None and not link.closed:
            return link
        route.check_pinned()
        link = route.link = self._links.blocking(route.ref)
        return link

    def blocking(self, route: Route, method: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any] | None) -> Any:
        """Call and wait for the outcome on this thread (direct path when it can)."""
        link = route.link
        if link is None or link.closed:
            link = self._link_blocking(route)
        pool = self._pools.get(link)
        if pool is None or pool.disabled:
            pool = self._direct_pool(link) if pool is None else None
        timeout = route.timeout
        target = route.ref.name
        if pool is not None:
            client = pool.acquire()
            if client is not None:
                try:
                    ok, value = client.call(target, method, args, kwargs, timeout)
                finally:
                    pool.release(client)
                if ok:
                    return value
                raise value
        waiter = Waiter()  # a thread's: wakes it with a bare lock, the cheapest way
        clock = self._clock
        since = clock.monotonic()  # the deadline counts from before the request goes
        cid = link.start_call(waiter, target, method, args, kwargs)
        if timeout is None:
            clock.wait(waiter.wait, None)
        elif not clock.wait(waiter.wait, link.first_look(cid, timeout), since):
            self._wait_sent(link, cid, waiter, timeout, f"{target}.{method}()")
        elif link.unsent:
            link.unsent.pop(cid, None)
        return waiter.result()

    def _wait_sent(self, link: Link, cid: int, waiter: Waiter, timeout: float,
                   what: str) -> None:
        """A blocking call's deadline came: wait on while its request is still going out
        to a peer that takes it (see ``_unsent``); raise CallTimeout if no reply comes."""
        clock = self._clock
        stalled = False
        while True:
            stalled = cid in link.unsent
            due = link.due_again(cid, timeout)
            if due is None:
                break
            if clock.wait(waiter.wait, due, 0.0):  # until the clock reads ``due``
                link.unsent.pop(cid, None)
                return
        link.abandon(cid)
        if waiter.wait(0):  # the reply slipped in meanwhile
            return
        if stalled:
            raise CallTimeout(f"{what} could not send its request: the peer took none of it "
                              f"for {timeout} s")
        raise CallTimeout(f"{what} got no reply in {timeout} s")

    def start_aio(self, route: Route, method: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any] | None) -> Awaitable[Any]:
        """Start a call from async code; eager when the link is up (no task per call)."""
        loop = asyncio.get_running_loop()
        link = route.link
        if loop is not self._node.loop or link is None or link.closed:
            return loop.create_task(self._call_aio_slow(route, method, args, kwargs))
        return self._start_aio(loop, link, route, method, args, kwargs)

    def _start_aio(self, loop: asyncio.AbstractEventLoop, link: Link, route: Route,
                     method: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any] | None) -> asyncio.Future[Any]:
        fut = _CallFuture(loop=loop)
        waiter = functools.partial(_settle, fut)
        timeout = route.timeout
        since = self._clock.monotonic()  # the deadline counts from before the request goes
        cid = link.start_call(waiter, route.ref.name, method, args, kwargs)
        if timeout is not None:
            self._watch.add_deadline(since, timeout, link, cid)
        fut.call = (link, cid)
        return fut

    async def _call_aio_slow(self, route: Route, method: str, args: tuple[Any, ...],
                               kwargs: dict[str, Any] | None) -> Any:
        loop = asyncio.get_running_loop()
        node_loop = self._node.loop
        if loop is not node_loop:  # another loop: run on ours, await the bridge
            if node_loop is None or self._node.closed:
                raise NodeClosed("the node is closed")
            cf = asyncio.run_coroutine_threadsafe(
                self._call_aio_slow(route, method, args, kwargs), node_loop)
            return await asyncio.wrap_future(cf)
        link = route.link
        if link is None or link.closed:
            route.check_pinned()
            link = route.link = await self._links.link_to(route.ref)
        return await self._start_aio(loop, link, route, method, args, kwargs)

    def future(self, route: Route, method: str, args: tuple[Any, ...],
               kwargs: dict[str, Any] | None) -> concurrent.futures.Future[Any]:
        """Start a call whose outcome lands in a ``concurrent.futures.Future``.

        The future stays PENDING until the outcome comes, so ``cancel()`` works as
        for any future not yet done: it asks the peer to stop the call (CANCEL),
        and ``wait``/``as_completed`` see the cancellation.
        """
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        fut.add_done_callback(_notify_if_cancelled)
        waiter = functools.partial(_settle_concurrent, fut)
        timeout = route.timeout

        def start(link: Link) -> None:
            if fut.done():
                return  # cancelled before the link was up: nothing to send
            since = self._clock.monotonic()
            try:
                cid = link.start_call(waiter, route.ref.name, method, args, kwargs)
            except BaseException as e:
                waiter(False, e)
                return
            if timeout is not None:
                self._watch.add_deadline(since, timeout, link, cid)
            fut.add_done_callback(lambda f: link.abandon(cid) if f.cancelled() else None)

        link = route.link
        if link is not None and not link.closed:
            start(link)
        else:
            threading.Thread(target=self._start_later, args=(route, start, waiter),
                             daemon=True).start()
        return fut

    def _start_later(self, route: Route, start: Callable[[Link], None], fail: OnReply) -> None:
        try:
            link = self._link_blocking(route)
        except BaseException as e:
            fail(False, e)
            return
        start(link)

    def oneway(self, route: Route, method: str, args: tuple[Any, ...],
               kwargs: dict[str, Any] | None) -> None:
        """Send the call and return; nobody hears of its outcome."""
        node = self._node
        link = route.link
        if link is None or link.closed:
            route.check_pinned()
            link = self._links.known(route.ref)
        target = route.ref.name
        if link is None and threading.get_ident() == node.loop_thread_id:
            # On the loop: connect in a task rather than block the loop we need.
            async def send_later() -> None:
                try:
                    lk = await self._links.link_to(route.ref)
                    lk.start_call(None, target, method, args, kwargs)
                except (NetletError, OSError) as e:  # a oneway has nobody to tell
                    log.info("oneway %s not sent: %s", method, e)

            node.spawn(send_later())
            return
        if link is None:
            link = self._link_blocking(route)
        link.start_call(None, target, method, args, kwargs)

    def _direct_pool(self, link: Link) -> DirectPool | None:
        """A new direct-call pool for a link's peer, when that path is possible."""
        config = self._node.config
        if (not config.direct_calls or type(link.conn) is not SocketConnection
                or config.wrap_connection is not None
                or not link.dial_address or link.closed):
            return None
        pool = self._pools[link] = DirectPool(self._node, link)
        return pool

    def direct_pools(self) -> int:
        """How many links have a direct-call pool (each opened on a blocking call)."""
        return len(self._pools)

    def forget(self, link: Link) -> None:
        """``link`` closed: close its direct pool, if it had one."""
        pool = self._pools.pop(link, None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        """Close every direct pool (the node is closing)."""
        for pool in list(self._pools.values()):
            pool.close()
