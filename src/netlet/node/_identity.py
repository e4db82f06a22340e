"""Which connection a node id belongs to (docs/PROTOCOL.md 4.8).

A node id in a hello is only a claim, and ids are public. So an id routes to,
and acts through, the first live main link that authenticated it: its *owner*.
A later link claiming an owned id (an impostor, or a reconnect that arrives
before the old link is known dead) is served on its own behalf only. The owner
is then pinged: if it stays silent for three keepalives it is closed and the
claimant takes over; if it closes meanwhile the claimant takes over too (the
usual reconnect). An owner that answers keeps the id for as long as it lives.
Direct side connections belong to the main link whose token they show.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from netlet.errors import ConnectionLost, EncodeError
from netlet.node._messages import PING
from netlet.transport import PeerInfo

if TYPE_CHECKING:
    from netlet.node._link import Link
    from netlet.node._node import Node

__all__ = ["caller_of", "forget_link", "main_link_of", "register_link"]

log = logging.getLogger("netlet.node")


def register_link(node: Node, link: Link) -> None:
    """A new main link: it owns its id unless a live link already does."""
    peer = link.peer.node
    owner = node._links_by_node.get(peer)
    if owner is None or owner.closed:
        node._links_by_node[peer] = link
        return
    keepalive = node.config.keepalive
    if peer == node.id or keepalive is None:
        return
    node._claimants[peer] = link
    task = link.conn.loop.create_task(_probe(node, owner, link, keepalive))
    node._background.add(task)
    task.add_done_callback(node._background.discard)


def forget_link(node: Node, link: Link) -> None:
    """A main link closed: its id goes to a claimant still waiting, else to nobody."""
    peer = link.peer.node
    if node._claimants.get(peer) is link:
        del node._claimants[peer]
    if node._links_by_node.get(peer) is not link:
        return
    del node._links_by_node[peer]
    claimant = node._claimants.pop(peer, None)
    if claimant is not None and not claimant.closed:
        node._links_by_node[peer] = claimant


async def _probe(node: Node, owner: Link, claimant: Link, keepalive: float) -> None:
    """Ping the owner of an id another link claims; close it if it stays silent."""
    clock = node.config.clock
    sent = clock.monotonic()
    try:
        owner.send([PING, 0])
    except (ConnectionLost, EncodeError):
        pass
    for _ in range(12):  # three keepalives, looked at four times each
        if owner.closed or claimant.closed or owner.last_heard >= sent:
            break
        await clock.sleep(keepalive / 4)
    if owner.closed or claimant.closed:
        return  # forget_link already did what there was to do
    if owner.last_heard >= sent:
        if node._claimants.get(claimant.peer.node) is claimant:
            del node._claimants[claimant.peer.node]  # the owner lives: the claimant stays scoped
        log.warning("%s claims node id %s, which a live connection (%s) owns: it is served "
                    "on its own behalf only", claimant.conn.remote, owner.peer.node[:8],
                    owner.conn.remote)
        return
    silent = clock.monotonic() - sent
    owner.conn.close(ConnectionLost(
        f"silent for {silent:.1f} s while {claimant.conn.remote} claimed its node id"))


def caller_of(node: Node, link: Link) -> str:
    """The id a call over ``link`` may act for: its peer's, if this link owns that id.

    A node calling itself has two links with its own id (the one it dialed, the
    one it accepted); both ends share one token, which an impostor cannot show.
    """
    peer = link.peer.node
    if node._links_by_node.get(peer) is link:
        return peer
    if link.peer.role == "direct":  # a side connection served on the loop (thread cap)
        main = main_link_of(node, link.peer)
        return caller_of(node, main) if main is not None else ""
    if peer == node.id and any(lk is not link and lk.peer.token == link.peer.token
                               for lk in node._links):
        return peer
    return ""


def main_link_of(node: Node, peer: PeerInfo) -> Link | None:
    """The live main link a direct connection proved it belongs to (its token), if any."""
    if not peer.link_token:
        return None
    for link in node._links:
        if not link.closed and link.peer.node == peer.node and link.peer.token == peer.link_token:
            return link
    return None
