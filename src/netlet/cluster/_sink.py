"""What the head calls back on a client: finished tasks, started tasks, output, events.

The sink is served on the client's node and handed to the head; it only
forwards to the functions the ``Cluster`` gave it, so the head reaches no
more of the client than these calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from netlet.cluster._member_messages import MemberEvent, OutputLines
from netlet.cluster._messages import Delivery, Finished
from netlet.errors import ConfigError
from netlet.node import expose

__all__ = ["ResultSink", "Subscriber"]

log = logging.getLogger("netlet.cluster")

Subscriber = Callable[[str, str, str, dict[str, Any]], None]
"""``callback(kind, node, role, info)`` for membership events (``info``: the member's
``JoinInfo`` fields and ``detail``)."""


@expose(concurrent=True)
class ResultSink:
    """Receives finished tasks from the head (on the client's loop)."""

    def __init__(self, on_results: Callable[[Iterable[Finished]], None],
                 claim: Callable[[str], bool],
                 on_output: Callable[[OutputLines], None],
                 subscribers: list[Subscriber]) -> None:
        self._on_results = on_results
        self._claim = claim
        self._on_output = on_output
        self._subscribers = subscribers  # the cluster's list: it adds to it

    async def results(self, delivery: Delivery) -> None:
        if type(delivery) is not Delivery:  # refused whole, never half read
            raise ConfigError("results are a Delivery record (PROTOCOL.md 16.5)")
        self._on_results(delivery.rows())

    async def started(self, tids: list[str]) -> None:
        """Workers started these tasks: their futures are RUNNING."""
        for tid in tids:
            self._claim(tid)

    async def output(self, lines: OutputLines) -> None:
        """What our tasks printed on a worker."""
        if type(lines) is not OutputLines:
            raise TypeError(f"output takes an OutputLines record, not {type(lines).__name__}")
        self._on_output(lines)

    def print_output(self, lines: OutputLines) -> None:
        """The same, called by a head on this very node."""
        self._on_output(lines)

    def claim(self, tid: str) -> bool:
        """Called by a head on this very node, on its loop, once a worker started a task."""
        return self._claim(tid)

    async def event(self, event: MemberEvent) -> None:
        if type(event) is not MemberEvent:
            raise TypeError(f"event takes a MemberEvent record, not {type(event).__name__}")
        i = event.info
        info = {"name": i.name, "host": i.host, "pid": i.pid, "address": i.address,
                "cores": i.cores, "detail": event.detail}
        for callback in list(self._subscribers):
            try:
                callback(event.kind, event.node, event.role, info)
            except Exception:
                log.exception("membership callback failed")
