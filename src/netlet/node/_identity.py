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
from collections.abc import Callable, Coroutine, Set
from typing import TYPE_CHECKING, Any

from netlet.clock import Clock
from netlet.errors import ConnectionLost, EncodeError
from netlet.node._messages import PING
from netlet.transport import PeerInfo

if TYPE_CHECKING:
    from netlet.node._link import Link

__all__ = ["Identity"]

log = logging.getLogger("netlet.node")


class Identity:
    """Owners of node ids among the node's links, and the links waiting to take one over.

    The link table tells it of every main link that opens (``register``) and
    closes (``forget``); calls ask it whom a link may act for (``caller_of``).
    """

    def __init__(self, node_id: str, keepalive: float | None, clock: Clock,
                 links: Set[Link], spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self._me = node_id
        self._keepalive = keepalive
        self._clock = clock
        self._links = links  # the link table's live set (read only)
        self._spawn = spawn
        self._owners: dict[str, Link] = {}  # id -> the link that owns it
        self._claimants: dict[str, Link] = {}  # id -> a later link waiting to own it

    def owner(self, node_id: str) -> Link | None:
        """The link that owns ``node_id`` (routes to it, acts for it), or None."""
        return self._owners.get(node_id)

    def register(self, link: Link) -> None:
        """A new main link: it owns its id unless a live link already does."""
        peer = link.peer.node
        owner = self._owners.get(peer)
        if owner is None or owner.closed:
            self._owners[peer] = link
            return
        keepalive = self._keepalive
        if peer == self._me or keepalive is None:
            return
        self._claimants[peer] = link
        self._spawn(self._probe(owner, link, keepalive))

    def forget(self, link: Link) -> None:
        """A main link closed: its id goes to a claimant still waiting, else to nobody."""
        peer = link.peer.node
        if self._claimants.get(peer) is link:
            del self._claimants[peer]
        if self._owners.get(peer) is not link:
            return
        del self._owners[peer]
        claimant = self._claimants.pop(peer, None)
        if claimant is not None and not claimant.closed:
            self._owners[peer] = claimant

    async def _probe(self, owner: Link, claimant: Link, keepalive: float) -> None:
        """Ping the owner of an id another link claims; close it if it stays silent."""
        clock = self._clock
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
            return  # forget already did what there was to do
        if owner.last_heard >= sent:
            if self._claimants.get(claimant.peer.node) is claimant:
                del self._claimants[claimant.peer.node]  # the owner lives: it stays scoped
            log.warning("%s claims node id %s, which a live connection (%s) owns: it is "
                        "served on its own behalf only", claimant.conn.remote,
                        owner.peer.node[:8], owner.conn.remote)
            return
        silent = clock.monotonic() - sent
        owner.conn.close(ConnectionLost(
            f"silent for {silent:.1f} s while {claimant.conn.remote} claimed its node id"))

    def caller_of(self, link: Link) -> str:
        """The id a call over ``link`` may act for: its peer's, if this link owns that id.

        A node calling itself has two links with its own id (the one it dialed, the
        one it accepted); both ends share one token, which an impostor cannot show.
        """
        peer = link.peer.node
        if self._owners.get(peer) is link:
            return peer
        if link.peer.role == "direct":  # a side connection served on the loop (thread cap)
            main = self.main_link_of(link.peer)
            return self.caller_of(main) if main is not None else ""
        if peer == self._me and any(lk is not link and lk.peer.token == link.peer.token
                                    for lk in self._links):
            return peer
        return ""

    def main_link_of(self, peer: PeerInfo) -> Link | None:
        """The live main link a direct connection proved it belongs to (its token), if any."""
        if not peer.link_token:
            return None
        for link in self._links:
            if (not link.closed and link.peer.node == peer.node
                    and link.peer.token == peer.link_token):
                return link
        return None
