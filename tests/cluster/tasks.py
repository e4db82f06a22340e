"""Task functions and an actor class the cluster tests run on real workers.

They live in an importable module so they travel by import path
(``"tests.cluster.tasks:slow_square"``): the workers the tests start import
them, with the repository root on their ``PYTHONPATH``.

Functions that leave a trace append one line to a file (``O_APPEND`` writes of
a short line are atomic), so a test can count how often, and in which
process, a task ran.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import netlet

__all__ = [
    "Counter",
    "CustomError",
    "add",
    "die_and_record",
    "fail_and_record",
    "identity",
    "pid_after",
    "raise_error",
    "read_trace",
    "reciprocal",
    "record",
    "sleep_and_record",
    "slow_square",
    "square_and_record",
]


class CustomError(Exception):
    """An exception type of the tests' own (not a builtin)."""


def identity(x: object) -> object:
    return x


def add(x: int, y: int) -> int:
    return x + y


def slow_square(x: int, delay: float = 0.0) -> int:
    if delay:
        time.sleep(delay)
    return x * x


def reciprocal(x: float) -> float:
    """``1 / x``: ZeroDivisionError for 0."""
    return 1 / x


def raise_error(kind: str = "ValueError", message: str = "boom") -> None:
    exc_type = {"ValueError": ValueError, "KeyError": KeyError,
                "ZeroDivisionError": ZeroDivisionError, "CustomError": CustomError}[kind]
    raise exc_type(message)


def pid_after(delay: float = 0.0) -> int:
    """The PID of the process that ran the task, after ``delay`` seconds."""
    if delay:
        time.sleep(delay)
    return os.getpid()


# -- tasks that leave a trace ----------------------------------------------------------


def record(path: str, *words: object) -> None:
    """Append one line ``"<pid> <words...>"`` to ``path``."""
    line = " ".join([str(os.getpid()), *map(str, words)]) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_trace(path: str | Path) -> list[list[str]]:
    """The lines ``record`` wrote, split into words (an absent file is empty)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [line.split() for line in text.splitlines() if line]


def square_and_record(path: str, x: int, delay: float = 0.0) -> int:
    record(path, "ran", x)
    if delay:
        time.sleep(delay)
    return x * x


def fail_and_record(path: str, message: str) -> None:
    """Record the run, then raise ValueError(message)."""
    record(path, "ran")
    raise ValueError(message)


def die_and_record(path: str) -> None:
    """Record the run, then kill the worker process running it (SIGKILL, no goodbye)."""
    record(path, "ran")
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_and_record(path: str, delay: float, value: object) -> object:
    """Record ``started``, sleep, record ``finished``; return ``value``."""
    record(path, "started")
    time.sleep(delay)
    record(path, "finished")
    return value


# -- an actor ----------------------------------------------------------------------------


@netlet.expose
class Counter:
    """A counter placed on a worker with ``cluster.spawn``."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def increment(self, by: int = 1) -> int:
        self.value += by
        return self.value

    def get(self) -> int:
        return self.value

    def pid(self) -> int:
        return os.getpid()
