"""Stopping a command on SIGINT or SIGTERM, without a deadlock in the handler.

A Python signal handler runs on the main thread between two bytecodes, perhaps
while that thread holds the very lock ``Event.set`` needs: inside ``Event.wait``,
between taking the event's condition and waiting on it, or just after a timed
wait took it back. ``lambda *_: stop.set()`` then waits on itself for ever (a
``netlet status --watch`` once ignored Ctrl-C this way). So the handler hands the
``set`` to a short-lived thread, which takes the lock once the main thread lets
it go.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["set_on_signal", "stop_on_signals"]


def set_on_signal(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A signal handler that sets ``stop`` from another thread (see the module docstring)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=stop.set, name="netlet-signal", daemon=True).start()

    return handler


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """An event set by SIGINT or SIGTERM (install it before the command says it is ready)."""
    stop = threading.Event() if stop is None else stop
    handler = set_on_signal(stop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop
