"""Backpressure in the scheduler: hold back one client's tasks, or everyone's.

The head holds a client whose results wait for it beyond its part of the
result budget (``Scheduler.hold``): its queued tasks stay queued but are not
handed out, while other clients' tasks go on. Each held task is set aside
the first time a hand-out reaches it (O(1)) and put back in front, in
order, on release: no hand-out scans the queue. ``pause`` stops every
hand-out (the head's last resort, when the whole budget is spent).
"""

from __future__ import annotations

from netlet.cluster._sched_lacks import SchedulerLacks
from netlet.cluster._sched_records import Action

__all__ = ["SchedulerHolds"]


class SchedulerHolds(SchedulerLacks):
    """``hold`` and ``pause`` (see the module docstring)."""

    def held(self, client: str) -> bool:
        """Are ``client``'s tasks held back?"""
        return self._queue.is_held(client)

    def hold(self, client: str, held: bool = True) -> list[Action]:
        """Hand out none of ``client``'s queued tasks (``held``), or again.

        Tasks it already has handed out run on (their results are what may
        still come for it); tasks it submits while held are queued and held.
        """
        out: list[Action] = []
        if held:
            self._queue.hold(client)
        elif self._queue.release(client):
            self._pushes += 1  # new work for workers blocked on what else is queued
            self._wake_full(out)
        return out

    def pause(self, paused: bool) -> list[Action]:
        """Stop (or resume) handing out tasks: backpressure from results nobody took yet."""
        out: list[Action] = []
        if paused != self._paused:
            self._paused = paused
            if not paused:
                self._wake_full(out)
        return out

    def _wake_full(self, out: list[Action]) -> None:
        """More may be handed out now: pulls held at a worker's share look again."""
        for node in list(self._full):
            del self._full[node]
            self._parked[node] = None
        self._parked.update(self._stuck)  # judged while nothing could be handed out
        self._stuck = {}
        self._forget_pushes()  # tasks came back without a push: blocked workers look again
        self._feed(out)
