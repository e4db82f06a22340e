"""Task output to the client that submitted the task (``log_to_driver``, as in Ray).

On the worker, a task that asked for it runs with ``sys.stdout`` and
``sys.stderr`` replaced by streams that send whole lines (through the head)
at most every 0.2 s, and the rest when the task ends; what a task prints past
:data:`MAX_TASK_OUTPUT` is dropped with one line saying so. On the client,
each line is written to its own ``sys.stdout``/``sys.stderr`` behind a prefix
naming the worker. Output written to the file descriptors directly (by C
code or child processes) is not captured: it stays on the worker's terminal.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable
from typing import Any

from netlet.clock import REAL_CLOCK, Clock
from netlet.cluster._member_messages import WorkerDesc

__all__ = ["MAX_TASK_OUTPUT", "Capture", "write_output"]

MAX_TASK_OUTPUT = 4 << 20
"""Characters of output one task may send back; the rest is dropped (with a note)."""
_PIECE = 60_000
"""Characters per entry sent (the head takes at most 64 Ki)."""
_EVERY = 0.2
"""Seconds between sends while a task prints."""

Send = Callable[[list[list[Any]]], None]
"""``send([[stream, text], ...])``: stream 1 is stdout, 2 is stderr."""


class _Stream(io.TextIOBase):
    def __init__(self, sink: _Sink, stream: int, real: Any) -> None:
        self._sink = sink
        self._stream = stream
        self.real = real
        """The stream this one stands in for (set by ``Capture.start``)."""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.real, "encoding", "utf-8"))

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._sink.add(self._stream, s)
        return len(s)

    def flush(self) -> None:
        self._sink.send(whole_lines=True)


class _Sink:
    def __init__(self, send: Send, clock: Clock) -> None:
        self._clock = clock  # when whole lines go out (every _EVERY seconds at most)
        self.reset(send)

    def reset(self, send: Send) -> None:
        self._send = send
        self._parts: list[list[Any]] = []
        self._held = 0
        self._sent = 0
        self._last = self._clock.monotonic()
        self._dropped = False

    def add(self, stream: int, text: str) -> None:
        if self._sent + self._held + len(text) > MAX_TASK_OUTPUT:
            if not self._dropped:
                self._dropped = True
                self._parts.append([2, f"[netlet: this task's output past {MAX_TASK_OUTPUT} "
                                       "characters is dropped]\n"])
            return
        if self._parts and self._parts[-1][0] == stream:
            self._parts[-1][1] += text
        else:
            self._parts.append([stream, text])
        self._held += len(text)
        if self._held >= _PIECE or (
                "\n" in text and self._clock.monotonic() - self._last >= _EVERY):
            self.send(whole_lines=True)

    def finish(self) -> None:
        """Send what is left, if anything (the task ended)."""
        if self._parts:
            self.send()

    def send(self, whole_lines: bool = False) -> None:
        parts, keep = self._parts, []
        if whole_lines and parts and "\n" not in parts[-1][1][-1:] and self._held < _PIECE:
            last = parts[-1]
            cut = last[1].rfind("\n") + 1
            keep = [[last[0], last[1][cut:]]] if cut < len(last[1]) else []
            parts = [*parts[:-1], [last[0], last[1][:cut]]] if cut else parts[:-1]
        self._parts = keep
        self._held = sum(len(p[1]) for p in keep)
        out = [[s, t[i:i + _PIECE]] for s, t in parts if t for i in range(0, len(t), _PIECE)]
        self._last = self._clock.monotonic()
        for i in range(0, len(out), 64):
            self._sent += sum(len(t) for _, t in out[i:i + 64])
            with contextlib.suppress(Exception):  # output is best effort; the task goes on
                self._send(out[i:i + 64])


class Capture:
    """Swaps ``sys.stdout``/``sys.stderr`` around one task at a time (made once: cheap).

    ``start(send)`` before the task, ``stop()`` after it (sends what is left).
    """

    def __init__(self, clock: Clock = REAL_CLOCK) -> None:
        self._sink = _Sink(lambda lines: None, clock)
        self._out = _Stream(self._sink, 1, None)
        self._err = _Stream(self._sink, 2, None)
        self._real: tuple[Any, Any] = (None, None)

    def start(self, send: Send) -> None:
        self._sink.reset(send)
        self._real = sys.stdout, sys.stderr
        self._out.real, self._err.real = self._real
        sys.stdout, sys.stderr = self._out, self._err

    def stop(self) -> None:
        sys.stdout, sys.stderr = self._real
        self._real = (None, None)
        self._sink.finish()


def write_output(prefix: str, worker: WorkerDesc, lines: list[tuple[int, str]]) -> None:
    """On the client: write ``[(stream, text), ...]`` behind ``prefix``."""
    try:
        head = prefix.format(worker=worker.name, host=worker.host, pid=worker.pid,
                             node=worker.node[:8])
    except (KeyError, IndexError, ValueError):
        head = prefix
    for stream, text in lines:
        target = sys.stderr if stream == 2 else sys.stdout
        if target is None:
            continue
        chunks = text.splitlines(keepends=True)
        target.write("".join(head + c for c in chunks) if head else text)
        with contextlib.suppress(Exception):
            target.flush()
