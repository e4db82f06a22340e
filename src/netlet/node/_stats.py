"""The frozen snapshots of a node's counters (``Node.statistics()``, ``link_statistics()``).

The counters themselves (``NodeCounters``, in ``_counters.py``) are plain
integers bumped where the work happens; these records are built only when
someone asks, so they are imported then too (not at every process start).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LinkStatistics", "NodeStatistics"]


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    node: str
    address: str
    calls_in: int
    """Calls peers made here (started)."""
    calls_out: int
    """Calls this node made to peers."""
    errors: int
    """Calls made here that ended with an error (refused ones included)."""
    bytes_in: int
    bytes_out: int
    frames_in: int
    frames_out: int
    connections: int
    """Links open now."""
    connections_total: int
    """Links ever opened (accepted or dialed)."""
    handshake_failures: int
    """Connections refused in the handshake (a wrong key, garbage, a TLS failure)."""


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """One connection's snapshot (``Node.link_statistics()``): O(1) to take.

    Like the node's counters, it leaves out the side connections blocking
    calls borrow (``direct_calls``): their frames are not counted here.
    """
    peer: str
    """The peer node's id."""
    remote: str
    """The peer's address as the transport sees it."""
    bytes_in: int
    bytes_out: int
    frames_in: int
    frames_out: int
    calls_out: int
    """Calls made to the peer, awaiting their reply."""
    calls_in: int
    """Calls the peer made here, running or held, not answered yet (oneways included)."""
    queued_bytes: int
    """Bytes sent, not yet taken by the kernel (the peer reads slowly: backpressure)."""
    heard_ago: float
    """Seconds since a frame came from the peer (on the node's clock)."""
    closed: bool
