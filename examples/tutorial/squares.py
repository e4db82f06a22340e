"""The task of chapter 8: a module every worker can import (start them beside it)."""

from __future__ import annotations

import os
import socket


def square(n: int) -> tuple[int, str, int]:
    """``n * n``, and where it was computed (host, worker pid)."""
    return n * n, socket.gethostname(), os.getpid()
