"""How a worker process ends with whoever started it (its parent, or an embedded
cluster's stdin)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

__all__ = ["_exit_with_parent", "_watch_parent"]


def _watch_parent() -> None:
    """Embedded workers exit when their parent goes away (stdin reaches EOF).

    Ctrl-C in a terminal reaches the whole process group: an embedded worker
    leaves it to its parent, which decides when the workers stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        # The raw descriptor, not sys.stdin: a daemon thread blocked inside a
        # buffered reader aborts the interpreter at exit.
        try:
            while os.read(0, 1024):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=watch, name="netlet-parent-watch", daemon=True).start()


def _exit_with_parent() -> None:
    """Exit when the process that started us (``netlet worker``) dies, even by SIGKILL.

    On Linux the kernel sends SIGTERM at once (``PR_SET_PDEATHSIG``); everywhere a
    thread also polls the parent pid, which changes when we are reparented.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="netlet-parent-watch", daemon=True).start()
