"""Task functions of the chaos suite (workers import them from this checkout)."""

from __future__ import annotations

import sys
import time


def python_version_after(delay: float) -> str:
    """``"3.12"``: the Python version of the worker that ran the task, after ``delay`` s."""
    time.sleep(delay)
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def pid_after(delay: float) -> int:
    """The pid of the worker process that ran the task, after ``delay`` s."""
    import os

    time.sleep(delay)
    return os.getpid()
