"""Exponential backoff, written once: how long to wait before the next attempt."""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Delays ``first, first*factor, ...`` capped at ``cap``; ``reset()`` starts over.

    Only arithmetic: the caller waits through its clock (``clock.sleep(b.next())``),
    so a virtual clock replays a retry loop exactly.
    """

    __slots__ = ("cap", "current", "factor", "first")

    def __init__(self, first: float, cap: float, factor: float = 2.0) -> None:
        if first <= 0 or cap < first or factor < 1:
            raise ValueError("Backoff needs 0 < first <= cap and factor >= 1")
        self.first, self.cap, self.factor = first, cap, factor
        self.current = first

    def next(self) -> float:
        """The delay to wait now; the following one grows by ``factor`` up to ``cap``."""
        delay = self.current
        self.current = min(delay * self.factor, self.cap)
        return delay

    def reset(self) -> None:
        """After a success: the next failure waits ``first`` again."""
        self.current = self.first

    def __repr__(self) -> str:
        return f"Backoff(first={self.first}, cap={self.cap}, next={self.current})"
