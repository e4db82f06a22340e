"""Run a ``netlet`` command as a child of the tour that stops when the tour goes away.

The tour keeps the child's stdin open and never writes to it. When the tour
exits, however it exits (SIGKILL included), the pipe reaches EOF and the child
sends itself SIGTERM, which a serving command such as ``netlet bank serve``
handles like Ctrl-C: it commits what is queued and stops. So the tour never
leaves a server behind.

    python -m netlet.apps.tour._child bank serve --listen tcp://127.0.0.1:0 ...
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["main"]


def _watch_parent() -> None:
    # os.read, not sys.stdin: a daemon thread blocked inside the buffered reader
    # holds its lock, and the interpreter aborts when it finds it held at exit.
    try:
        while os.read(0, 1024):
            pass
    finally:
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> None:
    """Run ``netlet *argv`` until it ends, or until stdin reaches EOF."""
    threading.Thread(target=_watch_parent, name="tour-parent-watch", daemon=True).start()
    from netlet.cli import main as netlet

    netlet.main(args=argv, prog_name="netlet")


if __name__ == "__main__":
    main(sys.argv[1:])
