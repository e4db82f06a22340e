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
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Unpack

from netlet.codec import RemoteRef
from netlet.errors import ConfigError, NodeClosed
from netlet.node._calls import Caller
from netlet.node._config import NodeConfig, NodeOptions, make_config
from netlet.node._counters import NodeCounters
from netlet.node._dispatch import Dispatcher
from netlet.node._expose import is_exposed
from netlet.node._link import Link
from netlet.node._links import LinkTable
from netlet.node._objects import ObjectTable
from netlet.node._proxy import DEFAULT_TIMEOUT, Proxy, Timeout
from netlet.node._watch import Watchdog
from netlet.transport import (
    Budget,
    Listener,
    PeerInfo,
    advertised_address,
    cut_unfinished_closes,
    listen,
)

if TYPE_CHECKING:
    from netlet.node._stats import LinkStatistics, NodeStatistics

__all__ = [
    "Node",
    "NodeConfig",
    "NodeOptions",
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
_SERVE_ADAPTERS: dict[type, tuple[Callable[[Node, Any, str], object], str]] = {}


def register_serve_adapter(cls: type, adapter: Callable[[Node, Any, str], object],
                           kind: str) -> None:
    """Let ``node.serve`` accept instances of ``cls`` by serving ``adapter(node, obj, name)``;
    the reference it returns says ``kind`` (as ``register_ref_type``'s handles do)."""
    _SERVE_ADAPTERS[cls] = (adapter, kind)


def register_ref_type(kind: str, provider: RefProvider, factory: RefFactory) -> None:
    """Let a layer above the node send its own objects by reference (e.g. channels).

    ``provider(node, obj)`` returns a handle when it recognises ``obj`` (serving
    it on ``node`` as needed); ``factory(node, ref, link)`` builds the local
    stand-in for a received handle of ``kind``.
    """
    _REF_FACTORIES[kind] = factory
    if provider not in _REF_PROVIDERS:
        _REF_PROVIDERS.append(provider)


class Node:
    """A process's endpoint: serves exposed objects and calls remote ones.

    ``Node(listen="tcp://127.0.0.1:7000")`` starts at once on a background loop
    thread; use it from plain code and close it (or use ``with``). For async
    code use ``async with open_node(...)`` instead.

    The node owns the loop, the listener and the lifecycle, and composes its
    parts, each owning its state: ``objects`` (what is served, by name),
    ``links`` (the connections, and who owns which node id), ``dispatcher``
    (where an incoming call goes, for links and direct connections alike) and
    ``caller`` (how a proxy's call goes out).
    """

    def __init__(self, listen: str | None = None, *, config: NodeConfig | None = None,
                 start: bool = True, **options: Unpack[NodeOptions]) -> None:
        self.config = make_config(config, dict(options))
        self.id = uuid.uuid4().hex
        self.listen_spec = listen
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread_id: int | None = None
        """The loop's thread (``threading.get_ident()``): blocking there would deadlock."""
        self._thread: threading.Thread | None = None
        self._listener: Listener | None = None
        self._watch = Watchdog(self.config.keepalive, self.config.clock)
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = threading.Event()
        self._closing = False
        self._advertised: str | None = None
        self.budget = Budget(self.config.max_memory, self.config.max_connection_memory)
        self.counters = NodeCounters()
        self.objects = ObjectTable(self.get_loop, self.config.max_threads)
        self.links = LinkTable(self)
        self.dispatcher = Dispatcher(self.objects, self.links.identity,
                                     lambda: self.address or self.id[:8])
        self.caller = Caller(self, self.links, self._watch)
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
        self.loop_thread_id = threading.get_ident()
        self._sweeper = self.loop.create_task(self._watch.run(self.links.all))
        if self.listen_spec is not None:
            try:
                self._listener = await listen(self.listen_spec, self.config.transport,
                                              self.id, self.links.accepted, self.budget,
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
        self.links.cancel_dials()
        await self.links.let_calls_reply(grace)
        await self.links.close()
        self.caller.close()
        await self.objects.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.budget.drop_cache()  # receive buffers kept for reuse
        cut_unfinished_closes(asyncio.get_running_loop())  # no socket outlives the node
        self._closed.set()

    def close(self) -> None:
        """Close a node started with its own thread (blocking)."""
        loop, thread = self.loop, self._thread
        if thread is None or loop is None:
            if self._closing:
                return
            raise RuntimeError("this node runs on your loop: use 'await node.aclose()'")
        if threading.get_ident() == self.loop_thread_id:
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
        adapted = _SERVE_ADAPTERS.get(type(obj))
        if adapted is not None:
            adapter, kind = adapted
            name = name or f"obj-{uuid.uuid4().hex[:12]}"
            return replace(self.serve(adapter(self, obj, name), name), kind=kind)
        if not is_exposed(obj):
            raise ConfigError(f"{type(obj).__name__} has nothing exposed; mark it with @expose")
        name = name or f"obj-{uuid.uuid4().hex[:12]}"
        self.objects.add(name, obj)
        return RemoteRef(self.id, self.address or "", name)

    def served(self, name: str) -> object | None:
        """The object served here as ``name`` (what ``serve`` was given or adapted to), or None."""
        actor = self.objects.get(name)
        return None if actor is None else actor.obj

    def unserve(self, name: str) -> None:
        self.objects.remove(name)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The node's event loop; ``NodeClosed`` before it started."""
        if self.loop is None:
            raise NodeClosed("the node is not started")
        return self.loop

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task on the node's loop (from the loop thread), kept until
        it ends: the node's own background work (probes, oneway sends that dial)."""
        task = self.get_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def ref_for(self, obj: object, link: Link) -> RemoteRef | None:
        """The handle ``obj`` travels as to the peer of ``link``, or None (a plain value).

        The codec of every link asks: exposed objects passed as values are served
        automatically, for that peer; a higher layer's objects (channels) through
        ``register_ref_type``.
        """
        if not is_exposed(obj):
            for provider in _REF_PROVIDERS:
                ref = provider(self, obj)
                if ref is not None:
                    return ref
            return None
        return RemoteRef(self.id, self.address or "", self.objects.export(obj, link))

    def from_unbound_ref(self, ref: RemoteRef, claimed: str) -> object:
        """A REF from a direct connection that showed no main link of node ``claimed``.

        A handle naming that node cannot be routed by id (the id is only a claim):
        it becomes a proxy with nowhere to go.
        """
        if ref.kind == "object" and ref.node == claimed and claimed != self.id:
            return Proxy(self, ref, pinned=True)
        return self.from_ref(ref, None)

    def from_ref(self, ref: RemoteRef, link: Link | None = None) -> object:
        """The local object a received handle stands for: ours, a proxy, or a channel.

        ``link`` is the connection it came over (None: it came some other way, as
        in a cluster's task records); a proxy's calls then go back over it.
        """
        if ref.kind != "object":
            factory = _REF_FACTORIES.get(ref.kind)
            return factory(self, ref, link) if factory is not None else ref
        if ref.node == self.id:
            actor = self.objects.get(ref.name)
            if actor is not None:
                return actor.obj
        if link is None or link.peer.node != ref.node:
            return Proxy(self, ref)
        # A handle from the node at the other end: calls go back over this connection.
        # From a connection that does not own that id, they never go anywhere else.
        pinned = self.links.identity.owner(ref.node) is not link
        return Proxy(self, ref, link=link, pinned=pinned)

    # -- proxies -----------------------------------------------------------------

    def proxy(self, address: str, name: str, *, timeout: Timeout = DEFAULT_TIMEOUT) -> Proxy:
        """A proxy for ``name`` served at ``address``; connects on first use."""
        return Proxy(self, RemoteRef("", address, name), timeout=timeout)

    def proxy_for(self, ref: RemoteRef) -> Proxy:
        return Proxy(self, ref)

    # -- links -----------------------------------------------------------------

    def peer_of(self, ref: RemoteRef) -> PeerInfo | None:
        """What the peer that calls to ``ref`` would reach now proved in its handshake
        (key, pickle), or None when no link to it is open (nothing is dialed)."""
        link = self.links.known(ref)
        return None if link is None else link.peer

    def peer(self, node_id: str) -> PeerInfo | None:
        """What the link that owns ``node_id`` proved in its handshake, or None.

        Only the owner speaks for an id (docs/PROTOCOL.md 4.8): a head checks a
        member's key or pickle consent here, not on whatever link claims the id.
        """
        link = self.links.identity.owner(node_id)
        return None if link is None else link.peer

    def on_peer_change(self, listener: Callable[[str, bool], None]) -> None:
        """Call ``listener(peer_node_id, connected)`` on the loop when a link opens or closes."""
        self.links.on_peer_change(listener)

    def connected_peers(self) -> set[str]:
        return self.links.connected_peers()

    def link_closed(self, link: Link) -> None:
        """A link calls this once its connection closed: forget it everywhere, then
        what was served only for that peer."""
        self.links.drop(link)
        self.caller.forget(link)
        self.objects.release(link)

    def statistics(self) -> NodeStatistics:
        """Counters and gauges of this node (cheap: O(1) but for counting its links)."""
        from netlet.node._stats import NodeStatistics  # loaded when first asked

        c = self.counters
        failures = self._listener.handshake_failures if self._listener is not None else 0
        return NodeStatistics(self.id, self.address or "", c.calls_in, c.calls_out, c.errors,
                              c.bytes_in, c.bytes_out, c.frames_in, c.frames_out,
                              sum(1 for lk in self.links.all() if not lk.closed),
                              c.connections_total, failures)

    def link_statistics(self) -> tuple[LinkStatistics, ...]:
        """Each open connection's counters and gauges: O(connections)."""
        return tuple(lk.statistics() for lk in self.links.all())


@contextlib.asynccontextmanager
async def open_node(listen: str | None = None, *, config: NodeConfig | None = None,
                    **options: Unpack[NodeOptions]) -> AsyncIterator[Node]:
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

