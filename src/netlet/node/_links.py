"""The node's link table: which connection reaches which peer, and who owns an id.

Accepting a connection (a main link, or a direct one served on a thread of its
own), dialing an address once however many callers wait for it, finding the
live link to a handle's owner, telling listeners when a peer comes or goes,
and forgetting a link when it closes. This is the part that changes with how
nodes connect (roles, addresses, identity), apart from serving and calling.
Who owns a node id is the ``Identity``'s to say; the table tells it of every
main link that opens or closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from netlet.codec import RemoteRef
from netlet.errors import CallTimeout, ConnectionLost, NodeClosed
from netlet.node._direct import serve_direct
from netlet.node._identity import Identity
from netlet.node._link import Link
from netlet.node._messages import BYE
from netlet.transport import (
    BlockingFramer,
    Connection,
    PeerInfo,
    SocketConnection,
    connect,
)

if TYPE_CHECKING:
    from netlet.node._node import Node

__all__ = ["LinkTable"]

log = logging.getLogger("netlet.node")


class LinkTable:
    """The node's open links, by the address we dialed and by the node id they own.

    It also runs the threads that serve direct connections (they belong to a
    main link, and close with the node).
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._config = node.config
        self._links: set[Link] = set()
        self._by_addr: dict[str, Link] = {}  # only addresses we dialed
        self._connecting: dict[str, asyncio.Task[Link]] = {}
        self._listeners: list[Callable[[str, bool], None]] = []
        self._direct_framers: set[BlockingFramer] = set()
        self._direct_threads: set[threading.Thread] = set()
        self.identity = Identity(node.id, node.config.keepalive, node.config.clock,
                                 self._links, node.spawn)
        """Which link owns which node id (routing and ``current_peer``)."""

    def __len__(self) -> int:
        return len(self._links)

    def all(self) -> list[Link]:
        """Every link now, open or closing (a copy: safe to iterate while links close)."""
        return list(self._links)

    def serving_direct(self) -> int:
        """Threads serving direct connections now."""
        return len(self._direct_threads)

    # -- opening --------------------------------------------------------------

    def accepted(self, conn: Connection, peer: PeerInfo) -> None:
        """The listener's callback: a main link, or a direct connection to serve."""
        if peer.role != "direct":
            self.add(conn, peer, None)
            return
        node, config = self._node, self._config
        direct_ok = not node.closed and config.wrap_connection is None and config.direct_calls
        cap = config.max_direct_threads
        if direct_ok and cap and len(self._direct_threads) >= cap:
            # No more threads: serve it on the loop, as the main link would be. It
            # carries only calls and their replies, which a side link handles too.
            log.info("direct connection from %s served on the event loop: %d direct "
                     "threads already (max_direct_threads)", conn.remote, cap)
            self._links.add(Link(node, conn, peer))  # closed with the node
            return
        sock = conn.detach() if direct_ok and type(conn) is SocketConnection else None
        if sock is None:
            conn.close()
            return
        slot, conn.slot = conn.slot, None
        main = self.identity.main_link_of(peer)  # None: served, but its REFs have no way back
        thread = threading.Thread(target=self._serve_direct,
                                  args=(sock, peer, conn.remote, main, slot),
                                  name=f"netlet-direct-{peer.node[:8]}", daemon=True)
        self._direct_threads.add(thread)
        thread.start()

    def _serve_direct(self, sock: socket.socket, peer: PeerInfo, remote: str,
                      main: Link | None, slot: Callable[[], None] | None) -> None:
        try:
            node = self._node
            limits = self._config.transport.limits
            account = node.budget.account()
            framer = BlockingFramer(sock, limits.max_frame, limits.max_buffers, account,
                                    shm=peer.shm)
            self._direct_framers.add(framer)
            try:
                serve_direct(node, framer, peer, remote, main)
            finally:
                self._direct_framers.discard(framer)
                framer.close()
                framer.release()
                account.close()
        finally:
            self._direct_threads.discard(threading.current_thread())
            if slot is not None:
                slot()

    def add(self, conn: Connection, peer: PeerInfo, dialed: str | None) -> Link:
        """A main link over ``conn``; ``dialed`` is the address we dialed, if we did."""
        node = self._node
        if self._config.wrap_connection is not None:
            conn = self._config.wrap_connection(conn)
        link = Link(node, conn, peer)
        link.dial_address = dialed or peer.address
        node.counters.connections_total += 1
        if node.closed:
            conn.close()
            return link
        self._links.add(link)
        self.identity.register(link)  # the first live link with an id owns it
        self._notify(peer.node, True)
        # Only an address we dialed names this link: the one a peer announces is a
        # claim, and calls to that address go to whoever really listens there.
        known = self._by_addr.get(dialed) if dialed else None
        if dialed and (known is None or known.closed):
            self._by_addr[dialed] = link
        return link

    def drop(self, link: Link) -> None:
        """Forget a closed link."""
        self._links.discard(link)
        if not any(lk.peer.node == link.peer.node for lk in self._links):
            self._notify(link.peer.node, False)
        self.identity.forget(link)
        for addr in [a for a, lk in self._by_addr.items() if lk is link]:
            del self._by_addr[addr]

    # -- finding --------------------------------------------------------------

    async def link_to(self, ref: RemoteRef) -> Link:
        """The live link to the owner of ``ref``, connecting if needed (loop thread)."""
        if self._node.closed:
            raise NodeClosed("the node is closed")
        if ref.node:
            link = self.identity.owner(ref.node)
            if link is not None and not link.closed:
                return link
        addr = ref.address
        if not addr:
            raise ConnectionLost(
                f"no route to node {ref.node[:8]}: it does not listen and its connection "
                "is gone")
        link = self._by_addr.get(addr)
        if link is not None and not link.closed:
            return link
        task = self._connecting.get(addr)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._dial(addr))
            self._connecting[addr] = task
            task.add_done_callback(lambda t: self._dialled(addr, t))
        return await asyncio.shield(task)

    def _dialled(self, addr: str, task: asyncio.Task[Link]) -> None:
        """A dial ended. Its callers hear how; with none left (all cancelled: a crash,
        a timeout), its error is looked at here, not reported as never retrieved."""
        self._connecting.pop(addr, None)
        if not task.cancelled():
            task.exception()

    async def _dial(self, addr: str) -> Link:
        node = self._node
        conn, peer = await connect(addr, self._config.transport, node.id, node.address or "",
                                   budget=node.budget)
        return self.add(conn, peer, addr)

    def known(self, ref: RemoteRef) -> Link | None:
        """A live link to the owner of ``ref`` we already have (no connecting)."""
        link = self.identity.owner(ref.node) if ref.node else None
        if link is None and ref.address:
            link = self._by_addr.get(ref.address)
        return link if link is not None and not link.closed else None

    def blocking(self, ref: RemoteRef) -> Link:
        """The live link to the owner of ``ref``, connecting if needed (any thread but
        the loop's, which it would deadlock)."""
        link = self.known(ref)
        if link is not None:
            return link
        node = self._node
        loop = node.loop
        if loop is None or node.closed:
            raise NodeClosed("the node is closed")
        if threading.get_ident() == node.loop_thread_id:
            raise RuntimeError(
                "blocking netlet call on the node's event loop would deadlock it; "
                "use 'await proxy.method.aio(...)' in async code")
        t = self._config.transport
        fut = asyncio.run_coroutine_threadsafe(self.link_to(ref), loop)
        try:
            return fut.result(timeout=t.connect_timeout + t.handshake_timeout + 1)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise CallTimeout(f"could not reach {ref.address} in time") from None

    # -- peers ----------------------------------------------------------------

    def on_peer_change(self, listener: Callable[[str, bool], None]) -> None:
        self._listeners.append(listener)

    def connected_peers(self) -> set[str]:
        return {lk.peer.node for lk in self._links if not lk.closed}

    def _notify(self, node_id: str, connected: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(node_id, connected)
            except Exception:
                log.exception("peer listener failed")

    # -- closing --------------------------------------------------------------

    def cancel_dials(self) -> None:
        for task in list(self._connecting.values()):
            task.cancel()

    async def let_calls_reply(self, grace: float) -> None:
        """Read no new calls; wait up to ``grace`` s for the running ones to reply."""
        for framer in list(self._direct_framers):
            framer.shutdown_read()  # its thread ends after the call it is running, if any
        deadline = time.monotonic() + grace
        for thread in list(self._direct_threads):
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
        for link in list(self._links):
            await link.calls_replied(max(0.0, deadline - time.monotonic()))

    async def close(self) -> None:
        """Say goodbye on every link, fail what still waits, stop the direct threads."""
        links = list(self._links)
        for link in links:
            with contextlib.suppress(Exception):
                link.send([BYE, "node closing"])
        await asyncio.gather(*(link.conn.drain_and_close(0.5) for link in links),
                             return_exceptions=True)
        for link in links:  # fail whatever still waits, with the clearer reason
            link.fail_pending(NodeClosed("the node was closed"))
        for framer in list(self._direct_framers):
            framer.close()
        for thread in list(self._direct_threads):
            await asyncio.to_thread(thread.join, 5)
