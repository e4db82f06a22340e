"""How a call leaves the node: the blocking, async, future and oneway paths.

A call picks its path here (a direct socket from the caller's thread, or the
node's link on the loop), makes the future or rendezvous its caller waits on,
arms its timeout and turns a cancellation into an abandon sent to the peer.
This changes when a calling style or the fast path changes, not when the node
learns to serve or connect differently, so it lives apart from ``_node.py``;
the proxies call these functions with their node.
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
from netlet.errors import CallTimeout, NetletError, NodeClosed
from netlet.node._direct import DirectPool
from netlet.node._link import Link, OnReply
from netlet.node._links import check_pinned, known_link, link_blocking, link_to
from netlet.transport import SocketConnection

if TYPE_CHECKING:
    from netlet.node._node import Node
    from netlet.node._proxy import Proxy

__all__ = ["call_aio", "call_blocking", "call_future", "call_oneway"]

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


def call_blocking(node: Node, proxy: Proxy, method: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any] | None, timeout: float | None) -> Any:
    link = proxy._link
    if link is None or link.closed:
        link = link_blocking(node, proxy)
    pool = _direct_pool(node, link)
    if pool is not None:
        client = pool.acquire()
        if client is not None:
            try:
                ok, value = client.call(proxy._ref.name, method, args, kwargs, timeout)
            finally:
                pool.release(client)
            if ok:
                return value
            raise value
    waiter = Waiter()  # a thread's: wakes it with a bare lock, the cheapest way
    cid = link.start_call(waiter, proxy._ref.name, method, args, kwargs)
    clock = node.config.clock
    if timeout is None:
        clock.wait(waiter.wait, None)
    elif not clock.wait(waiter.wait, link.first_look(cid, timeout)):
        _wait_sent(node, link, cid, waiter, timeout, f"{proxy._ref.name}.{method}()")
    elif link.unsent:
        link.unsent.pop(cid, None)
    return waiter.result()


def _wait_sent(node: Node, link: Link, cid: int, waiter: Waiter, timeout: float,
               what: str) -> None:
    """A blocking call's deadline came: wait on while its request is still going out
    to a peer that takes it (see ``_unsent``); raise CallTimeout if no reply comes."""
    clock = node.config.clock
    stalled = False
    while True:
        stalled = cid in link.unsent
        due = link.due_again(cid, timeout)
        if due is None:
            break
        if clock.wait(waiter.wait, max(due - clock.monotonic(), 0.0)):
            link.unsent.pop(cid, None)
            return
    link.abandon(cid)
    if waiter.wait(0):  # the reply slipped in meanwhile
        return
    if stalled:
        raise CallTimeout(f"{what} could not send its request: the peer took none of it "
                          f"for {timeout} s")
    raise CallTimeout(f"{what} got no reply in {timeout} s")


def call_aio(node: Node, proxy: Proxy, method: str, args: tuple[Any, ...],
             kwargs: dict[str, Any] | None, timeout: float | None) -> Awaitable[Any]:
    """Start a call from async code; eager when the link is up (no task per call)."""
    loop = asyncio.get_running_loop()
    link = proxy._link
    if loop is not node.loop or link is None or link.closed:
        return loop.create_task(_call_aio_slow(node, proxy, method, args, kwargs, timeout))
    return _start_aio(node, loop, link, proxy, method, args, kwargs, timeout)


def _start_aio(node: Node, loop: asyncio.AbstractEventLoop, link: Link, proxy: Proxy,
               method: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
               timeout: float | None) -> asyncio.Future[Any]:
    fut = _CallFuture(loop=loop)
    waiter = functools.partial(_settle, fut)
    cid = link.start_call(waiter, proxy._ref.name, method, args, kwargs)
    if timeout is not None:
        node._watch.add_deadline(timeout, link, cid)
    fut.call = (link, cid)
    return fut


async def _call_aio_slow(node: Node, proxy: Proxy, method: str, args: tuple[Any, ...],
                         kwargs: dict[str, Any] | None, timeout: float | None) -> Any:
    loop = asyncio.get_running_loop()
    if loop is not node.loop:  # another loop: run on ours, await the bridge
        if node.loop is None or node._closing:
            raise NodeClosed("the node is closed")
        cf = asyncio.run_coroutine_threadsafe(
            _call_aio_slow(node, proxy, method, args, kwargs, timeout), node.loop)
        return await asyncio.wrap_future(cf)
    link = proxy._link
    if link is None or link.closed:
        check_pinned(proxy)
        link = proxy._link = await link_to(node, proxy._ref)
    return await _start_aio(node, loop, link, proxy, method, args, kwargs, timeout)


def call_future(node: Node, proxy: Proxy, method: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any] | None,
                 timeout: float | None) -> concurrent.futures.Future[Any]:
    """Start a call whose outcome lands in a ``concurrent.futures.Future``.

    The future stays PENDING until the outcome comes, so ``cancel()`` works as
    for any future not yet done: it asks the peer to stop the call (CANCEL),
    and ``wait``/``as_completed`` see the cancellation.
    """
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
    fut.add_done_callback(_notify_if_cancelled)
    waiter = functools.partial(_settle_concurrent, fut)

    def start(link: Link) -> None:
        if fut.done():
            return  # cancelled before the link was up: nothing to send
        try:
            cid = link.start_call(waiter, proxy._ref.name, method, args, kwargs)
        except BaseException as e:
            waiter(False, e)
            return
        if timeout is not None:
            node._watch.add_deadline(timeout, link, cid)
        fut.add_done_callback(lambda f: link.abandon(cid) if f.cancelled() else None)

    link = proxy._link
    if link is not None and not link.closed:
        start(link)
    else:
        threading.Thread(target=_start_later, args=(node, proxy, start, waiter),
                         daemon=True).start()
    return fut


def _start_later(node: Node, proxy: Proxy, start: Callable[[Link], None], fail: OnReply) -> None:
    try:
        link = link_blocking(node, proxy)
    except BaseException as e:
        fail(False, e)
        return
    start(link)


def _direct_pool(node: Node, link: Link) -> DirectPool | None:
    """The direct-call pool for a link's peer, when that path is possible."""
    pool = node._direct_pools.get(link)
    if pool is not None:
        return None if pool.disabled else pool
    if (not node.config.direct_calls or type(link.conn) is not SocketConnection
            or node.config.wrap_connection is not None
            or not link.dial_address or link.closed):
        return None
    pool = node._direct_pools[link] = DirectPool(node, link)
    return pool


def call_oneway(node: Node, proxy: Proxy, method: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any] | None) -> None:
    link = proxy._link
    if link is None or link.closed:
        check_pinned(proxy)
        link = known_link(node, proxy._ref)
    if link is None and threading.get_ident() == node._loop_thread_id:
        # On the loop: connect in a task rather than block the loop we need.
        async def send_later() -> None:
            try:
                lk = await link_to(node, proxy._ref)
            except (NetletError, OSError) as e:  # a oneway has nobody to tell
                log.info("oneway %s not sent: %s", method, e)
                return
            lk.start_call(None, proxy._ref.name, method, args, kwargs)

        task = node._get_loop().create_task(send_later())
        node._background.add(task)
        task.add_done_callback(node._background.discard)
        return
    if link is None:
        link = link_blocking(node, proxy)
    link.start_call(None, proxy._ref.name, method, args, kwargs)
