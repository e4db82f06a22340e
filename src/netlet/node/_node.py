"""The node: one per process (or several in tests), owning a loop and its links.

The async core runs on one event loop. ``Node(...)`` starts that loop in a
background thread and gives a blocking face; ``open_node()`` runs the same core
on the caller's loop, so async code pays no thread hop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from netlet.codec import RemoteRef
from netlet.errors import (
    CallTimeout,
    ConfigError,
    ConnectionLost,
    NetletError,
    NodeClosed,
)
from netlet.node._actor import Actor
from netlet.node._config import NodeConfig, make_config
from netlet.node._direct import DirectPool, serve_direct
from netlet.node._expose import is_exposed
from netlet.node._identity import caller_of, forget_link, main_link_of, register_link
from netlet.node._link import Link, Waiter
from netlet.node._messages import BYE
from netlet.node._proxy import DEFAULT_TIMEOUT, Proxy, Timeout
from netlet.node._stats import LinkStatistics, NodeCounters, NodeStatistics
from netlet.node._watch import Watchdog
from netlet.transport import (
    BlockingFramer,
    Budget,
    Connection,
    Listener,
    PeerInfo,
    SocketConnection,
    advertised_address,
    connect,
    listen,
)

__all__ = [
    "Node",
    "NodeConfig",
    "RefFactory",
    "RefProvider",
    "default_node",
    "open_node",
    "register_ref_type",
    "register_serve_adapter",
]

log = logging.getLogger("netlet.node")

RefFactory = Callable[["Node", RemoteRef, Link | None], object]
"""Turns a received handle of some ``kind`` into a local object (channels use this)."""
RefProvider = Callable[["Node", object], RemoteRef | None]
"""Turns a local object of a higher layer into a handle others can use (serving it)."""

_REF_FACTORIES: dict[str, RefFactory] = {}
_REF_PROVIDERS: list[RefProvider] = []
_SERVE_ADAPTERS: dict[type, Callable[[Node, Any, str], object]] = {}


def register_serve_adapter(cls: type, adapter: Callable[[Node, Any, str], object]) -> None:
    """Let ``node.serve`` accept instances of ``cls`` by serving ``adapter(node, obj, name)``."""
    _SERVE_ADAPTERS[cls] = adapter


def register_ref_type(kind: str, provider: RefProvider, factory: RefFactory) -> None:
    """Let a layer above the node send its own objects by reference (e.g. channels).

    ``provider(node, obj)`` returns a handle when it recognises ``obj`` (serving
    it on ``node`` as needed); ``factory(node, ref, link)`` builds the local
    stand-in for a received handle of ``kind``.
    """
    _REF_FACTORIES[kind] = factory
    if provider not in _REF_PROVIDERS:
        _REF_PROVIDERS.append(provider)



def _settle(fut: asyncio.Future[Any] | concurrent.futures.Future[Any], ok: bool,
            value: Any) -> None:
    """Complete a call's future (asyncio or concurrent) once with its outcome."""
    if not fut.done():
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


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


class _SyncWaiter:
    """A one-shot rendezvous for a blocking caller; a bare lock is the cheapest wake-up."""

    __slots__ = ("_lock", "ok", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.ok = False
        self.value: Any = None

    def __call__(self, ok: bool, value: Any) -> None:
        self.ok, self.value = ok, value
        self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)


class Node:
    """A process's endpoint: serves exposed objects and calls remote ones.

    ``Node(listen="tcp://127.0.0.1:7000")`` starts at once on a background loop
    thread; use it from plain code and close it (or use ``with``). For async
    code use ``async with open_node(...)`` instead.
    """

    def __init__(self, listen: str | None = None, *, config: NodeConfig | None = None,
                 start: bool = True, **options: Any) -> None:
        self.config = make_config(config, options)
        self.id = uuid.uuid4().hex
        self.listen_spec = listen
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._thread: threading.Thread | None = None
        self._listener: Listener | None = None
        self._actors: dict[str, Actor] = {}
        self._auto_names: dict[int, str] = {}
        self._export_counts: dict[str, int] = {}
        self._links: set[Link] = set()
        self._links_by_node: dict[str, Link] = {}  # id -> the link that owns it (_identity)
        self._claimants: dict[str, Link] = {}  # id -> a later link waiting to own it
        self._links_by_addr: dict[str, Link] = {}
        self._connecting: dict[str, asyncio.Task[Link]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._watch = Watchdog(self.config.keepalive, self.config.clock)
        self._sweeper: asyncio.Task[None] | None = None
        self._direct_pools: dict[Link, DirectPool] = {}
        self._direct_sockets: set[BlockingFramer] = set()
        self._direct_threads: set[threading.Thread] = set()
        self._peer_listeners: list[Callable[[str, bool], None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._closed = threading.Event()
        self._closing = False
        self._advertised: str | None = None
        self.budget = Budget(self.config.max_memory, self.config.max_connection_memory)
        self.counters = NodeCounters()
        if start:
            self._start_thread()

    # -- lifecycle -------------------------------------------------------------

    @property
    def address(self) -> str | None:
        """Where peers reach this node (the listen address with its real port), or None.

        A wildcard listen (0.0.0.0, ::) gives the advertised host instead: see
        ``NodeConfig.advertise``.
        """
        if self._listener is None:
            return None
        if self._advertised is None:
            self._advertised = advertised_address(self._listener.address, self.config.advertise)
        return self._advertised

    @property
    def closed(self) -> bool:
        return self._closing

    def _start_thread(self) -> None:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.astart())
            except BaseException as e:
                ready.set_exception(e)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_forever()
            finally:
                # As asyncio.run does: nothing outlives the loop half-done or unreported.
                leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in leftover:
                    task.cancel()
                if leftover:
                    loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self._thread = threading.Thread(target=run, name="netlet-node", daemon=True)
        self._thread.start()
        ready.result()

    async def astart(self) -> None:
        """Start on the running loop: listen (if asked) and begin sweeping timeouts."""
        if self.loop is not None:
            raise RuntimeError("node already started")
        self.loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._sweeper = self.loop.create_task(self._watch.run(lambda: self._links))
        if self.listen_spec is not None:
            try:
                self._listener = await listen(self.listen_spec, self.config.transport,
                                              self.id, self._accepted, self.budget,
                                              self.config.max_connections)
            except BaseException:
                self._sweeper.cancel()
                raise

    async def aclose(self, grace: float = 1.0) -> None:
        """Stop listening, let running calls reply (up to ``grace`` s), say goodbye, stop.

        New calls are refused from the start; a call already running gets to send
        its reply, so a caller is not told "connection lost" about a call that
        finished. Then pending outgoing calls fail and every thread stops.
        """
        if self._closing:
            return
        self._closing = True
        if self._listener is not None:
            await self._listener.close()
        for task in list(self._connecting.values()):
            task.cancel()
        await self._let_running_calls_reply(grace)
        links = list(self._links)
        for link in links:
            with contextlib.suppress(Exception):
                link.send([BYE, "node closing"])
        await asyncio.gather(*(link.conn.drain_and_close(0.5) for link in links),
                             return_exceptions=True)
        for link in links:  # fail whatever still waits, with the clearer reason
            pending, link.pending = link.pending, {}
            for waiter in pending.values():
                waiter(False, NodeClosed("the node was closed"))
        for pool in list(self._direct_pools.values()):
            pool.close()
        for framer in list(self._direct_sockets):
            framer.close()
        for thread in list(self._direct_threads):
            await asyncio.to_thread(thread.join, 5)
        for actor in list(self._actors.values()):
            await asyncio.to_thread(actor.close)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.budget.drop_cache()  # receive buffers kept for reuse
        self._closed.set()

    async def _let_running_calls_reply(self, grace: float) -> None:
        for framer in list(self._direct_sockets):
            framer.shutdown_read()  # its thread ends after the call it is running, if any
        deadline = time.monotonic() + grace
        for thread in list(self._direct_threads):
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
        for link in list(self._links):
            await link.calls_replied(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Close a node started with its own thread (blocking)."""
        loop, thread = self.loop, self._thread
        if thread is None or loop is None:
            if self._closing:
                return
            raise RuntimeError("this node runs on your loop: use 'await node.aclose()'")
        if threading.get_ident() == self._loop_thread_id:
            raise RuntimeError("close() called from the node's own loop; use aclose()")
        if not self._closing and loop.is_running():
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=15)
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the node is closed (from another thread or a signal handler)."""
        return self._closed.wait(timeout)

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<netlet.Node {self.id[:8]} at {self.address or '(not listening)'}>"

    # -- serving -----------------------------------------------------------------

    def serve(self, obj: object, name: str | None = None) -> RemoteRef:
        """Make an exposed object (or a channel) reachable under ``name`` (default: an id)."""
        adapter = _SERVE_ADAPTERS.get(type(obj))
        if adapter is not None:
            name = name or f"obj-{uuid.uuid4().hex[:12]}"
            return replace(self.serve(adapter(self, obj, name), name), kind="channel")
        if not is_exposed(obj):
            raise ConfigError(f"{type(obj).__name__} has nothing exposed; mark it with @expose")
        name = name or f"obj-{uuid.uuid4().hex[:12]}"
        if name in self._actors:
            raise ConfigError(f"a different object is already served as {name!r}")
        self._actors[name] = Actor(obj, name, self._get_loop, self._get_pool)
        return RemoteRef(self.id, self.address or "", name)

    def unserve(self, name: str) -> None:
        actor = self._actors.pop(name, None)
        if actor is not None:
            self._auto_names.pop(id(actor.obj), None)
            actor.close()

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            raise NodeClosed("the node is not started")
        return self.loop

    def _get_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self.config.max_threads, thread_name_prefix="netlet-pool")
        return self._pool

    def _ref_for(self, obj: object, link: Link) -> RemoteRef | None:
        """Exposed objects passed as values are served automatically, for that peer."""
        if not is_exposed(obj):
            for provider in _REF_PROVIDERS:
                ref = provider(self, obj)
                if ref is not None:
                    return ref
            return None
        name = self._auto_names.get(id(obj))
        if name is None or name not in self._actors:
            name = f"auto-{uuid.uuid4().hex[:12]}"
            self._actors[name] = Actor(obj, name, self._get_loop, self._get_pool)
            self._auto_names[id(obj)] = name
        if name not in link.exported:
            link.exported.add(name)
            self._export_counts[name] = self._export_counts.get(name, 0) + 1
        return RemoteRef(self.id, self.address or "", name)

    def _from_unbound_ref(self, ref: RemoteRef, claimed: str) -> object:
        """A REF from a direct connection that showed no main link of node ``claimed``.

        A handle naming that node cannot be routed by id (the id is only a claim):
        it becomes a proxy with nowhere to go.
        """
        if ref.kind == "object" and ref.node == claimed and claimed != self.id:
            return Proxy(self, ref, pinned=True)
        return self._from_ref(ref, None)

    def _from_ref(self, ref: RemoteRef, link: Link | None) -> object:
        if ref.kind != "object":
            factory = _REF_FACTORIES.get(ref.kind)
            return factory(self, ref, link) if factory is not None else ref
        if ref.node == self.id:
            actor = self._actors.get(ref.name)
            if actor is not None:
                return actor.obj
        if link is None or link.peer.node != ref.node:
            return Proxy(self, ref)
        # A handle from the node at the other end: calls go back over this connection.
        # From a connection that does not own that id, they never go anywhere else.
        pinned = self._links_by_node.get(ref.node) is not link
        return Proxy(self, ref, link=link, pinned=pinned)

    # -- proxies -----------------------------------------------------------------

    def proxy(self, address: str, name: str, *, timeout: Timeout = DEFAULT_TIMEOUT) -> Proxy:
        """A proxy for ``name`` served at ``address``; connects on first use."""
        return Proxy(self, RemoteRef("", address, name), timeout=timeout)

    def proxy_for(self, ref: RemoteRef) -> Proxy:
        return Proxy(self, ref)

    # -- links -------------------------------------------------------------------

    def _accepted(self, conn: Connection, peer: PeerInfo) -> None:
        if peer.role == "direct":
            direct_ok = (not self._closing and self.config.wrap_connection is None
                         and self.config.direct_calls)
            cap = self.config.max_direct_threads
            if direct_ok and cap and len(self._direct_threads) >= cap:
                # No more threads: serve it on the loop, as the main link would be. It
                # carries only calls and their replies, which a side link handles too.
                log.info("direct connection from %s served on the event loop: %d direct "
                         "threads already (max_direct_threads)", conn.remote, cap)
                self._links.add(Link(self, conn, peer))  # closed with the node
                return
            sock = conn.detach() if direct_ok and type(conn) is SocketConnection else None
            if sock is None:
                conn.close()
                return
            slot, conn.slot = conn.slot, None
            main = main_link_of(self, peer)  # None: served, but its REFs have no way back
            thread = threading.Thread(target=self._serve_direct,
                                      args=(sock, peer, conn.remote, main, slot),
                                      name=f"netlet-direct-{peer.node[:8]}", daemon=True)
            self._direct_threads.add(thread)
            thread.start()
            return
        self._add_link(conn, peer, None)

    def _caller_of(self, link: Link) -> str:
        """The id a call over ``link`` may act for (see ``current_peer``)."""
        return caller_of(self, link)

    def _serve_direct(self, sock: socket.socket, peer: PeerInfo, remote: str,
                      main: Link | None, slot: Callable[[], None] | None) -> None:
        try:
            serve_direct(self, sock, peer, remote, main)
        finally:
            self._direct_threads.discard(threading.current_thread())
            if slot is not None:
                slot()

    def _add_link(self, conn: Connection, peer: PeerInfo, dialed: str | None) -> Link:
        if self.config.wrap_connection is not None:
            conn = self.config.wrap_connection(conn)
        link = Link(self, conn, peer)
        link.dial_address = dialed or peer.address
        self.counters.connections_total += 1
        if self._closing:
            conn.close()
            return link
        self._links.add(link)
        register_link(self, link)  # the first live link with an id owns it
        self._notify_peer(peer.node, True)
        # Only an address we dialed names this link: the one a peer announces is a
        # claim, and calls to that address go to whoever really listens there.
        if dialed and (dialed not in self._links_by_addr or self._links_by_addr[dialed].closed):
            self._links_by_addr[dialed] = link
        return link

    def statistics(self) -> NodeStatistics:
        """Counters and gauges of this node (cheap: O(1) but for counting its links)."""
        c = self.counters
        failures = self._listener.handshake_failures if self._listener is not None else 0
        return NodeStatistics(self.id, self.address or "", c.calls_in, c.calls_out, c.errors,
                              c.bytes_in, c.bytes_out, c.frames_in, c.frames_out,
                              sum(1 for lk in list(self._links) if not lk.closed),
                              c.connections_total, failures)

    def link_statistics(self) -> tuple[LinkStatistics, ...]:
        """Each open connection's counters and gauges: O(connections)."""
        return tuple(lk.statistics() for lk in list(self._links))

    def on_peer_change(self, listener: Callable[[str, bool], None]) -> None:
        """Call ``listener(peer_node_id, connected)`` on the loop when a link opens or closes."""
        self._peer_listeners.append(listener)

    def connected_peers(self) -> set[str]:
        return {lk.peer.node for lk in self._links if not lk.closed}

    def _notify_peer(self, node_id: str, connected: bool) -> None:
        for listener in list(self._peer_listeners):
            try:
                listener(node_id, connected)
            except Exception:
                log.exception("peer listener failed")

    def _link_closed(self, link: Link) -> None:
        self._links.discard(link)
        if not any(lk.peer.node == link.peer.node for lk in self._links):
            self._notify_peer(link.peer.node, False)
        pool = self._direct_pools.pop(link, None)
        if pool is not None:
            pool.close()
        forget_link(self, link)
        for addr in [a for a, lk in self._links_by_addr.items() if lk is link]:
            del self._links_by_addr[addr]
        for name in link.exported:
            left = self._export_counts.get(name, 1) - 1
            if left <= 0:
                self._export_counts.pop(name, None)
                self.unserve(name)
            else:
                self._export_counts[name] = left

    async def _link_to(self, ref: RemoteRef) -> Link:
        """The live link to the owner of ``ref``, connecting if needed (loop thread)."""
        if self._closing:
            raise NodeClosed("the node is closed")
        if ref.node:
            link = self._links_by_node.get(ref.node)
            if link is not None and not link.closed:
                return link
        addr = ref.address
        if not addr:
            raise ConnectionLost(
                f"no route to node {ref.node[:8]}: it does not listen and its connection is gone")
        link = self._links_by_addr.get(addr)
        if link is not None and not link.closed:
            return link
        task = self._connecting.get(addr)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._dial(addr))
            self._connecting[addr] = task
            task.add_done_callback(lambda _: self._connecting.pop(addr, None))
        return await asyncio.shield(task)

    async def _dial(self, addr: str) -> Link:
        conn, peer = await connect(addr, self.config.transport, self.id, self.address or "",
                                   budget=self.budget)
        return self._add_link(conn, peer, addr)

    def _known_link(self, ref: RemoteRef) -> Link | None:
        """A live link to the owner of ``ref`` we already have (no connecting)."""
        link = self._links_by_node.get(ref.node) if ref.node else None
        if link is None and ref.address:
            link = self._links_by_addr.get(ref.address)
        return link if link is not None and not link.closed else None

    def _link_blocking(self, proxy: Proxy) -> Link:
        link = proxy._link
        if link is not None and not link.closed:
            return link
        _check_pinned(proxy)
        link = self._known_link(proxy._ref)
        if link is not None:
            proxy._link = link
            return link
        loop = self.loop
        if loop is None or self._closing:
            raise NodeClosed("the node is closed")
        if threading.get_ident() == self._loop_thread_id:
            raise RuntimeError(
                "blocking netlet call on the node's event loop would deadlock it; "
                "use 'await proxy.method.aio(...)' in async code")
        t = self.config.transport
        fut = asyncio.run_coroutine_threadsafe(self._link_to(proxy._ref), loop)
        try:
            link = fut.result(timeout=t.connect_timeout + t.handshake_timeout + 1)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise CallTimeout(f"could not reach {proxy._ref.address} in time") from None
        proxy._link = link
        return link

    # -- calls -------------------------------------------------------------------

    def _call_blocking(self, proxy: Proxy, method: str, args: tuple[Any, ...],
                       kwargs: dict[str, Any] | None, timeout: float | None) -> Any:
        link = proxy._link
        if link is None or link.closed:
            link = self._link_blocking(proxy)
        pool = self._direct_pool(link)
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
        waiter = _SyncWaiter()
        cid = link.start_call(waiter, proxy._ref.name, method, args, kwargs)
        clock = self.config.clock
        if timeout is None:
            clock.wait(waiter.wait, None)
        elif not clock.wait(waiter.wait, link.first_look(cid, timeout)):
            self._wait_sent(link, cid, waiter, timeout, f"{proxy._ref.name}.{method}()")
        elif link.unsent:
            link.unsent.pop(cid, None)
        if waiter.ok:
            return waiter.value
        raise waiter.value

    def _wait_sent(self, link: Link, cid: int, waiter: _SyncWaiter, timeout: float,
                   what: str) -> None:
        """A blocking call's deadline came: wait on while its request is still going
        out to a peer that takes it (see ``_unsent``); raise CallTimeout if none comes."""
        clock = self.config.clock
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
            raise CallTimeout(f"{what} could not send its request: the peer took none of "
                              f"it for {timeout} s")
        raise CallTimeout(f"{what} got no reply in {timeout} s")

    def _call_async(self, proxy: Proxy, method: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any] | None, timeout: float | None) -> Awaitable[Any]:
        """Start a call from async code; eager when the link is up (no task per call)."""
        loop = asyncio.get_running_loop()
        link = proxy._link
        if loop is not self.loop or link is None or link.closed:
            return loop.create_task(self._call_async_slow(proxy, method, args, kwargs, timeout))
        return self._start_async(loop, link, proxy, method, args, kwargs, timeout)

    def _start_async(self, loop: asyncio.AbstractEventLoop, link: Link, proxy: Proxy,
                     method: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                     timeout: float | None) -> asyncio.Future[Any]:
        fut = _CallFuture(loop=loop)
        waiter = functools.partial(_settle, fut)
        cid = link.start_call(waiter, proxy._ref.name, method, args, kwargs)
        if timeout is not None:
            self._watch.add_deadline(timeout, link, cid)
        fut.call = (link, cid)
        return fut

    async def _call_async_slow(self, proxy: Proxy, method: str, args: tuple[Any, ...],
                               kwargs: dict[str, Any] | None, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # another loop: run on ours, await the bridge
            if self.loop is None or self._closing:
                raise NodeClosed("the node is closed")
            cf = asyncio.run_coroutine_threadsafe(
                self._call_async_slow(proxy, method, args, kwargs, timeout), self.loop)
            return await asyncio.wrap_future(cf)
        link = proxy._link
        if link is None or link.closed:
            _check_pinned(proxy)
            link = proxy._link = await self._link_to(proxy._ref)
        return await self._start_async(loop, link, proxy, method, args, kwargs, timeout)

    def _call_future(self, proxy: Proxy, method: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any] | None,
                     timeout: float | None) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()
        waiter = functools.partial(_settle, fut)

        def start(link: Link) -> None:
            try:
                cid = link.start_call(waiter, proxy._ref.name, method, args, kwargs)
            except BaseException as e:
                waiter(False, e)
                return
            if timeout is not None:
                self._watch.add_deadline(timeout, link, cid)
            fut.add_done_callback(lambda f: link.abandon(cid) if f.cancelled() else None)

        link = proxy._link
        if link is not None and not link.closed:
            start(link)
        else:
            threading.Thread(target=self._start_later, args=(proxy, start, waiter),
                             daemon=True).start()
        return fut

    def _start_later(self, proxy: Proxy, start: Callable[[Link], None], fail: Waiter) -> None:
        try:
            link = self._link_blocking(proxy)
        except BaseException as e:
            fail(False, e)
            return
        start(link)

    def _direct_pool(self, link: Link) -> DirectPool | None:
        """The direct-call pool for a link's peer, when that path is possible."""
        pool = self._direct_pools.get(link)
        if pool is not None:
            return None if pool.disabled else pool
        if (not self.config.direct_calls or type(link.conn) is not SocketConnection
                or self.config.wrap_connection is not None
                or not link.dial_address or link.closed):
            return None
        pool = self._direct_pools[link] = DirectPool(self, link)
        return pool

    def _call_oneway(self, proxy: Proxy, method: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any] | None) -> None:
        link = proxy._link
        if link is None or link.closed:
            _check_pinned(proxy)
            link = self._known_link(proxy._ref)
        if link is None and threading.get_ident() == self._loop_thread_id:
            # On the loop: connect in a task rather than block the loop we need.
            async def send_later() -> None:
                try:
                    lk = await self._link_to(proxy._ref)
                except (NetletError, OSError) as e:  # a oneway has nobody to tell
                    log.info("oneway %s not sent: %s", method, e)
                    return
                lk.start_call(None, proxy._ref.name, method, args, kwargs)

            task = self._get_loop().create_task(send_later())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        if link is None:
            link = self._link_blocking(proxy)
        link.start_call(None, proxy._ref.name, method, args, kwargs)

    def _on_pong(self, link: Link, token: Any) -> None:
        """A pong only proves the peer is alive; ``last_heard`` already recorded it."""


def _check_pinned(proxy: Proxy) -> None:
    """A pinned proxy whose connection closed has nowhere else to go."""
    if proxy._pinned:
        raise ConnectionLost(f"the connection that handed over {proxy._ref.name!r} is closed")


@contextlib.asynccontextmanager
async def open_node(listen: str | None = None, *, config: NodeConfig | None = None,
                    **options: Any) -> AsyncIterator[Node]:
    """A node on the running loop, closed when the block ends."""
    node = Node(listen, config=config, start=False, **options)
    await node.astart()
    try:
        yield node
    finally:
        await node.aclose()


_default: Node | None = None
_default_lock = threading.Lock()


def default_node() -> Node:
    """The process-wide client node behind ``netlet.connect`` (started on first use)."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Node()
            atexit.register(_close_default)
        return _default


def _close_default() -> None:
    global _default
    node, _default = _default, None
    if node is not None and not node.closed:
        with contextlib.suppress(Exception):
            node.close()

