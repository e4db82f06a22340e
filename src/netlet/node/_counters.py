"""The node's counters: plain integers bumped where the work happens.

A frame read, a frame sent, a call run: under several threads an increment may
occasionally be lost, never counted twice; fine for rates and dashboards, and
free of locks on the hot path. Calls served on direct connections
(``direct_calls``) are not counted. Kept apart from the snapshot records
(``_stats.py``), which a process needs only when someone asks for them.
"""

from __future__ import annotations

__all__ = ["NodeCounters"]


class NodeCounters:
    __slots__ = ("bytes_in", "bytes_out", "calls_in", "calls_out", "connections_total",
                 "errors", "frames_in", "frames_out")

    def __init__(self) -> None:
        self.calls_in = self.calls_out = self.errors = 0
        self.bytes_in = self.bytes_out = self.frames_in = self.frames_out = 0
        self.connections_total = 0
