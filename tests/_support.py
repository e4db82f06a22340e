"""Helpers every part of the suite shares: a child process, its output, polling, ports.

One definition each, imported by the conftests and the tests (which used to
carry four process wrappers, three ``wait_until`` and four ``free_port`` of
their own):

:data:`STEP`
    Default seconds to wait for any one thing that should happen at once (well
    inside pytest-timeout): a failure, not a hang.
:func:`wait_until`
    Poll a condition that no event announces until it returns something
    truthy (which it returns), or fail the test after ``timeout`` seconds. It
    polls every 5 ms at first, backing off to every 50 ms.
:func:`free_port`
    A loopback TCP port nobody listens on right now.
:class:`LineReader`, :func:`wait_for_line`
    The lines of a child's pipe, read by a thread, waited for by pattern.
:class:`Proc`
    A child process with its output read line by line; ``Proc.spawn(argv)``
    starts one, ``wait_address()`` waits for the address it prints, ``stop()``
    and ``kill()`` end it (and what it started), reap it and close its pipes.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = [
    "ADDRESS_LINE",
    "STEP",
    "LineReader",
    "Proc",
    "free_port",
    "wait_for_line",
    "wait_until",
]

T = TypeVar("T")
P = TypeVar("P", bound="Proc")
_SIGKILL = signal.SIGKILL  # (inside Proc, ``signal`` names its method)

STEP = 10.0
"""Default seconds to wait for any one thing (well inside pytest-timeout)."""

ADDRESS_LINE = r"^(?:tcp|unix|mem)://\S+$"
"""The line a server prints once it listens: its address."""


def wait_until(condition: Callable[[], T], timeout: float = STEP, what: str = "",
               interval: float | None = None) -> T:
    """Poll ``condition()`` until it returns something truthy, and return that; fail the
    test after ``timeout`` seconds. Polls every ``interval`` seconds, or by default every
    5 ms at first, then less often (up to 50 ms)."""
    deadline = time.monotonic() + timeout
    pause = 0.005 if interval is None else interval
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what or condition}")
        time.sleep(pause)
        if interval is None:
            pause = min(0.05, pause * 1.5)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now on ``host`` (another may take it later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LineReader:
    """The lines of a text stream, read by a background thread as they come."""

    def __init__(self, stream: Any, name: str = "stream") -> None:
        self.name = name
        self.lines: list[str] = []
        self.eof = False
        self._stream = stream
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"reader-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self._stream:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        except (OSError, ValueError):  # the stream was closed under us
            pass
        finally:
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def mark(self) -> int:
        """How many lines were read so far: pass to ``wait_for(since=...)``."""
        with self._cond:
            return len(self.lines)

    def text(self, since: int = 0) -> str:
        """Everything read so far (from line ``since`` on), as one string."""
        with self._cond:
            return "\n".join(self.lines[since:])

    def find(self, pattern: str | re.Pattern[str], since: int = 0) -> re.Match[str] | None:
        """The first line (from line ``since`` on) that matches, without waiting."""
        rx = re.compile(pattern)
        with self._cond:
            for line in self.lines[since:]:
                m = rx.search(line)
                if m is not None:
                    return m
        return None

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = STEP,
                 since: int = 0) -> re.Match[str]:
        """The first line (from line ``since`` on) matching ``pattern``; fails on timeout or EOF."""
        return self.wait_for_index(pattern, timeout, since)[1]

    def wait_for_index(self, pattern: str | re.Pattern[str], timeout: float = STEP,
                       since: int = 0) -> tuple[int, re.Match[str]]:
        """Like ``wait_for``, also giving the matching line's index."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = since
        with self._cond:
            while True:
                for i in range(seen, len(self.lines)):
                    m = rx.search(self.lines[i])
                    if m is not None:
                        return i, m
                seen = max(seen, len(self.lines))
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    why = "ended" if self.eof else f"had nothing after {timeout} s"
                    tail = "\n".join(self.lines[-60:])
                    pytest.fail(f"{self.name} {why} matching {rx.pattern!r}; it said:\n{tail}")
                self._cond.wait(left)

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


def wait_for_line(proc: subprocess.Popen[str], pattern: str | re.Pattern[str],
                  timeout: float = STEP) -> re.Match[str]:
    """Wait for a line on ``proc``'s stdout (``stdout=PIPE, text=True``) matching ``pattern``.

    The first call attaches a :class:`LineReader` to the process; later calls
    look only at lines after the previous match.
    """
    reader: LineReader | None = getattr(proc, "_netlet_stdout", None)
    if reader is None:
        assert proc.stdout is not None, "start the process with stdout=subprocess.PIPE"
        reader = LineReader(proc.stdout, f"stdout of pid {proc.pid}")
        proc._netlet_stdout = reader  # type: ignore[attr-defined]
        proc._netlet_pos = 0  # type: ignore[attr-defined]
    since: int = proc._netlet_pos  # type: ignore[attr-defined]
    index, m = reader.wait_for_index(pattern, timeout, since)
    proc._netlet_pos = index + 1  # type: ignore[attr-defined]
    return m


class Proc:
    """A child process with its output read line by line in the background."""

    def __init__(self, proc: subprocess.Popen[str], stdout: LineReader, stderr: LineReader,
                 address: str = "") -> None:
        self.proc = proc
        self.stdout = stdout
        self.stderr = stderr
        self.address = address

    @classmethod
    def spawn(cls: type[P], argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None,
              cwd: Path | str | None = None, stdin_text: str | None = None,
              name: str = "") -> P:
        """Start ``argv`` with piped text output (and ``stdin_text`` on stdin, then EOF).

        The child runs with ``PYTHONUNBUFFERED=1`` (on top of ``env``, default this
        process's environment), so what it prints arrives line by line.
        """
        child_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env, cwd=cwd)
        label = name or Path(str(argv[0])).name
        p = cls(proc, LineReader(proc.stdout, f"stdout of {label} {proc.pid}"),
                LineReader(proc.stderr, f"stderr of {label} {proc.pid}"))
        if stdin_text is not None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(stdin_text)
                proc.stdin.close()
        return p

    def wait_address(self: P, ready: str = ADDRESS_LINE, timeout: float = STEP) -> P:
        """Wait for the line matching ``ready`` (its address) and keep it as ``address``.

        If it never comes, the process is stopped and its stderr shown.
        """
        try:
            self.address = self.stdout.wait_for(ready, timeout).group(0).strip()
        except BaseException:
            self.stop()
            print(self.stderr.text(), file=sys.stderr)
            raise
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def wait(self, timeout: float = STEP) -> int:
        """Its exit status (fails the test if it is still running after ``timeout`` s)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGABRT)  # with PYTHONFAULTHANDLER: every thread's stack
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            self.stderr.join()
            pytest.fail(f"pid {self.pid} still runs after {timeout} s; stderr (with the "
                        f"stacks of its threads once aborted):\n{self.stderr.text()}")

    def descendants(self) -> list[int]:
        """PIDs of its children, their children... (Linux ``/proc``)."""
        found: list[int] = []
        todo = [self.pid]
        while todo:
            pid = todo.pop()
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    kids = [int(k) for k in children.read_text().split()]
                    found += kids
                    todo += kids
        return found

    def stop(self, sig: int = _SIGKILL) -> int:
        """Send ``sig`` (SIGKILL by default), SIGKILL it if it outlives ``STEP`` s, reap
        it and close its pipes; its exit status."""
        self.signal(sig)
        try:
            code = self.proc.wait(STEP)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(STEP)
        self._close_pipes()
        return code

    def kill(self) -> int:
        """SIGKILL it and whatever it started (a stopped process dies too); reap; close pipes."""
        if self.proc.poll() is None:
            for pid in self.descendants():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return self.stop(signal.SIGKILL)

    def _close_pipes(self) -> None:
        self.stdout.join()
        self.stderr.join()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

