"""The node's link table: which connection reaches which peer, and who owns an id.

Accepting a connection (a main link, or a direct one served on a thread of its
own), dialing an address once however many callers wait for it, finding the
live link to a handle's owner, telling listeners when a peer comes or goes,
and forgetting a link when it closes. This is the part that changes with how
nodes connect (roles, addresses, identity), apart from serving and calling.
The table itself (``node._links``, ``_links_by_addr``, ...) lives on the
``Node``; these functions are the only writers of it besides ``_identity``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from netlet.codec import RemoteRef
from netlet.errors import CallTimeout, ConnectionLost, NodeClosed
from netlet.node._direct import serve_direct
from netlet.node._identity import forget_link, main_link_of, register_link
from netlet.node._link import Link
from netlet.transport import (
    Connection,
    PeerInfo,
    SocketConnection,
    connect,
)

if TYPE_CHECKING:
    from netlet.node._node import Node
    from netlet.node._proxy import Proxy

__all__ = [
    "accepted",
    "add_link",
    "check_pinned",
    "drop_link",
    "known_link",
    "link_blocking",
    "link_to",
]

log = logging.getLogger("netlet.node")


def accepted(node: Node, conn: Connection, peer: PeerInfo) -> None:
    if peer.role == "direct":
        direct_ok = (not node._closing and node.config.wrap_connection is None
                     and node.config.direct_calls)
        cap = node.config.max_direct_threads
        if direct_ok and cap and len(node._direct_threads) >= cap:
            # No more threads: serve it on the loop, as the main link would be. It
            # carries only calls and their replies, which a side link handles too.
            log.info("direct connection from %s served on the event loop: %d direct "
                     "threads already (max_direct_threads)", conn.remote, cap)
            node._links.add(Link(node, conn, peer))  # closed with the node
            return
        sock = conn.detach() if direct_ok and type(conn) is SocketConnection else None
        if sock is None:
            conn.close()
            return
        slot, conn.slot = conn.slot, None
        main = main_link_of(node, peer)  # None: served, but its REFs have no way back
        thread = threading.Thread(target=_serve_direct,
                                  args=(node, sock, peer, conn.remote, main, slot),
                                  name=f"netlet-direct-{peer.node[:8]}", daemon=True)
        node._direct_threads.add(thread)
        thread.start()
        return
    add_link(node, conn, peer, None)


def _serve_direct(node: Node, sock: socket.socket, peer: PeerInfo, remote: str,
                  main: Link | None, slot: Callable[[], None] | None) -> None:
    try:
        serve_direct(node, sock, peer, remote, main)
    finally:
        node._direct_threads.discard(threading.current_thread())
        if slot is not None:
            slot()


def add_link(node: Node, conn: Connection, peer: PeerInfo, dialed: str | None) -> Link:
    if node.config.wrap_connection is not None:
        conn = node.config.wrap_connection(conn)
    link = Link(node, conn, peer)
    link.dial_address = dialed or peer.address
    node.counters.connections_total += 1
    if node._closing:
        conn.close()
        return link
    node._links.add(link)
    register_link(node, link)  # the first live link with an id owns it
    node._notify_peer(peer.node, True)
    # Only an address we dialed names this link: the one a peer announces is a
    # claim, and calls to that address go to whoever really listens there.
    if dialed and (dialed not in node._links_by_addr or node._links_by_addr[dialed].closed):
        node._links_by_addr[dialed] = link
    return link


def drop_link(node: Node, link: Link) -> None:
    """Forget a closed link (``Node`` then drops what was served only for it)."""
    node._links.discard(link)
    if not any(lk.peer.node == link.peer.node for lk in node._links):
        node._notify_peer(link.peer.node, False)
    pool = node._direct_pools.pop(link, None)
    if pool is not None:
        pool.close()
    forget_link(node, link)
    for addr in [a for a, lk in node._links_by_addr.items() if lk is link]:
        del node._links_by_addr[addr]


async def link_to(node: Node, ref: RemoteRef) -> Link:
    """The live link to the owner of ``ref``, connecting if needed (loop thread)."""
    if node._closing:
        raise NodeClosed("the node is closed")
    if ref.node:
        link = node._links_by_node.get(ref.node)
        if link is not None and not link.closed:
            return link
    addr = ref.address
    if not addr:
        raise ConnectionLost(
            f"no route to node {ref.node[:8]}: it does not listen and its connection is gone")
    link = node._links_by_addr.get(addr)
    if link is not None and not link.closed:
        return link
    task = node._connecting.get(addr)
    if task is None:
        task = asyncio.get_running_loop().create_task(_dial(node, addr))
        node._connecting[addr] = task
        task.add_done_callback(lambda _: node._connecting.pop(addr, None))
    return await asyncio.shield(task)


async def _dial(node: Node, addr: str) -> Link:
    conn, peer = await connect(addr, node.config.transport, node.id, node.address or "",
                               budget=node.budget)
    return add_link(node, conn, peer, addr)


def known_link(node: Node, ref: RemoteRef) -> Link | None:
    """A live link to the owner of ``ref`` we already have (no connecting)."""
    link = node._links_by_node.get(ref.node) if ref.node else None
    if link is None and ref.address:
        link = node._links_by_addr.get(ref.address)
    return link if link is not None and not link.closed else None


def link_blocking(node: Node, proxy: Proxy) -> Link:
    link = proxy._link
    if link is not None and not link.closed:
        return link
    check_pinned(proxy)
    link = known_link(node, proxy._ref)
    if link is not None:
        proxy._link = link
        return link
    loop = node.loop
    if loop is None or node._closing:
        raise NodeClosed("the node is closed")
    if threading.get_ident() == node._loop_thread_id:
        raise RuntimeError(
            "blocking netlet call on the node's event loop would deadlock it; "
            "use 'await proxy.method.aio(...)' in async code")
    t = node.config.transport
    fut = asyncio.run_coroutine_threadsafe(link_to(node, proxy._ref), loop)
    try:
        link = fut.result(timeout=t.connect_timeout + t.handshake_timeout + 1)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        raise CallTimeout(f"could not reach {proxy._ref.address} in time") from None
    proxy._link = link
    return link


def check_pinned(proxy: Proxy) -> None:
    """A pinned proxy whose connection closed has nowhere else to go."""
    if proxy._pinned:
        raise ConnectionLost(f"the connection that handed over {proxy._ref.name!r} is closed")
