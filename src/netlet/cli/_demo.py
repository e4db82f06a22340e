"""Part 1 of ``netlet demo`` (the tour ``make run`` shows): calls to an object in another process.

A second process serves an object; this process calls it in every style
(blocking, async, futures, oneway), shows a remote error with its traceback,
a timeout, a callback into this process, the latency of a call, and what a
caller sees when the server is killed mid-call. Each row is checked against
what netlet promises, so the tour fails loudly if a promise is broken.

The ``demo`` command itself lives in ``netlet.apps.tour``: the tour also runs
the reference apps, which sit above this layer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

import netlet

__all__ = ["CallFigures", "run_calls"]

_START_TIMEOUT = 15.0
"""Seconds the server process may take to print its address."""


@netlet.expose
class Account:
    """The object the demo serves: a tiny account that refuses overdrafts."""

    def __init__(self) -> None:
        self.balance = 0
        self.log: list[str] = []

    def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    def withdraw(self, amount: int) -> int:
        if amount > self.balance:
            raise ValueError(f"insufficient funds: balance {self.balance}, asked {amount}")
        self.balance -= amount
        return self.balance

    def note(self, text: str) -> None:
        self.log.append(text)

    def notes(self) -> list[str]:
        return list(self.log)

    def slow(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    def watch(self, watcher: Any) -> str:
        # The server calls back into the client's own object, over the same connection.
        return str(watcher.notify(f"balance is {self.balance}"))


@netlet.expose
class Watcher:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def notify(self, message: str) -> str:
        self.seen.append(message)
        return f"client heard: {message!r} on thread {threading.current_thread().name}"


def _serve() -> None:
    """The server process: serve an Account until killed, or until our parent goes away."""
    def watch_parent() -> None:  # stdin reaches EOF when the tour exits, however it exits
        try:
            while os.read(0, 1024):  # not sys.stdin: see netlet.apps.tour._child
                pass
        finally:
            os._exit(0)

    threading.Thread(target=watch_parent, name="demo-parent-watch", daemon=True).start()
    try:
        with netlet.Node(listen="tcp://127.0.0.1:0") as node:
            node.serve(Account(), "account")
            print(node.address, flush=True)
            node.wait()
    except KeyboardInterrupt:
        pass


@dataclass(frozen=True, slots=True)
class CallFigures:
    """What part 1 measured, for the tour's summary."""

    rows: int
    as_expected: int
    p50_us: float
    """Median round trip of a blocking call with no work in it."""
    futures_ms: float
    """1000 pipelined ``future`` calls, submitted and all answered."""
    surprises: tuple[str, ...]
    """Rows whose outcome was not the promised one."""


_Expect = type[BaseException] | Callable[[Any], bool]


def run_calls(console: Console, *, quick: bool = False,
              on_abort: Callable[[Callable[[], None]], None] | None = None) -> CallFigures:
    """Start the server process, call it in every style, show the table; kill the server.

    ``on_abort(fn)`` registers ``fn`` (kill the server) with a caller that may
    need to stop this part from another thread.
    """
    server = subprocess.Popen([sys.executable, "-m", "netlet.cli._demo"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if on_abort is not None:
        on_abort(server.kill)
    try:
        address = _read_address(server)
        console.print(f"server process {server.pid} serves [cyan]account[/] at {address}; "
                      f"this process (pid {os.getpid()}) calls it:")
        return _calls(console, address, server, quick)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        for pipe in (server.stdin, server.stdout):
            if pipe is not None:
                pipe.close()


def first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first line a child prints (stripped), or "" if none comes within ``timeout`` s.

    Read on a helper thread: a blocking readline has no timeout of its own.
    """
    stdout = proc.stdout
    assert stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stdout.readline().strip()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


def _read_address(server: subprocess.Popen[str]) -> str:
    """The first line the server prints, or an error after ``_START_TIMEOUT`` s."""
    line = first_line(server, _START_TIMEOUT)
    if not line:
        server.kill()
        raise RuntimeError(f"the demo server did not start within {_START_TIMEOUT:g} s")
    return line


def _calls(console: Console, address: str, server: subprocess.Popen[str],
           quick: bool) -> CallFigures:
    table = Table(show_lines=False)
    for col in ("style", "call", "result", "time"):
        table.add_column(col)
    surprises: list[str] = []

    def row(style: str, call: str, fn: Callable[[], Any], expect: _Expect) -> float:
        t0 = time.perf_counter()
        try:
            value: Any = fn()
        except Exception as e:  # the demo shows failures as results
            value = e
            result = f"[red]{type(e).__name__}[/]: {e}"
        else:
            result = repr(value)
        seconds = time.perf_counter() - t0
        if isinstance(expect, type):
            good = isinstance(value, expect)
        else:
            good = not isinstance(value, Exception) and expect(value)
        if not good:
            surprises.append(f"{call}: {result}")
        mark = "[green]✓[/]" if good else "[bold red]✗ unexpected[/]"
        table.add_row(style, call, f"{mark} {result}", f"{seconds * 1e3:.2f} ms")
        return seconds

    with netlet.Node() as node:
        acct = node.proxy(address, "account")
        row("blocking", "acct.deposit(100)", lambda: acct.deposit(100), lambda r: r == 100)

        async def aio() -> Any:
            async with netlet.open_node() as anode:
                return await anode.proxy(address, "account").deposit.aio(5)

        row("async", "await acct.deposit.aio(5)", lambda: asyncio.run(aio()),
            lambda r: r == 105)
        futures_s = row(
            "futures", "1000 x acct.deposit.future(1), pipelined",
            lambda: sum(f.result(30) > 0 for f in [acct.deposit.future(1) for _ in range(1000)]),
            lambda r: r == 1000)
        row("oneway", "acct.note.oneway('hello')", lambda: acct.note.oneway("hello"),
            lambda r: r is None)
        row("blocking", "acct.notes()", lambda: acct.notes.future().result(30),
            lambda r: r == ["hello"])
        row("remote error", "acct.withdraw(10**9)", lambda: acct.withdraw(10**9), ValueError)
        row("callback", "acct.watch(Watcher())", lambda: acct.watch(Watcher()),
            lambda r: "client heard" in r)
        row("not exposed", "acct.format_disk()", lambda: acct.format_disk(), netlet.NotExposed)
        # The object still finishes the slow call (threads cannot be interrupted); the
        # caller stops waiting and the next call queues behind it: one call at a time.
        row("timeout", "acct.with_options(timeout=0.2).slow(0.5)",
            lambda: acct.with_options(timeout=0.2).slow(0.5), netlet.CallTimeout)

        n = 500 if quick else 2000
        for _ in range(200):
            acct.deposit(0)
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            acct.deposit(0)
            lat.append(time.perf_counter() - t0)
        p50 = statistics.median(lat) * 1e6
        table.add_row("latency", f"{n} x acct.deposit(0)", f"p50 {p50:.0f} µs", "")

        def killed_mid_call() -> Any:
            killer = threading.Timer(0.3, lambda: server.send_signal(signal.SIGKILL))
            killer.start()
            try:
                return acct.with_options(timeout=30).slow(10)
            finally:
                killer.join()

        row("server killed", "acct.slow(10), SIGKILL after 0.3 s", killed_mid_call,
            netlet.ConnectionLost)
    console.print(table)
    console.print("Every failure above is a clear exception, never a hang.")
    rows = len(table.rows) - 1  # the latency row is a measurement, not a promise
    return CallFigures(rows, rows - len(surprises), p50, futures_s * 1e3, tuple(surprises))


if __name__ == "__main__":
    _serve()
