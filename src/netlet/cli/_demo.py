"""``netlet demo``: the tour that ``make run`` shows, on embedded defaults.

A second process serves an object; this process calls it in every style
(blocking, async, futures, oneway), shows a remote error with its traceback,
a timeout, a callback into this process, the latency of a call, and what a
caller sees when the server is killed mid-call.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

import netlet

__all__ = ["demo"]


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
    with netlet.Node(listen="tcp://127.0.0.1:0") as node:
        node.serve(Account(), "account")
        print(node.address, flush=True)
        node.wait()


@click.command()
@click.option("--serve", is_flag=True, hidden=True, help="Run the demo's server side.")
def demo(serve: bool) -> None:
    """Show netlet calling an object in another process, in every style.

    Starts a server process on 127.0.0.1 serving a small Account object, calls
    it from this process in every call style, and prints what happened.
    """
    if serve:
        _serve()
        return
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.rule("[bold]netlet demo: one object, another process, every call style")
    server = subprocess.Popen([sys.executable, "-m", "netlet.cli._demo", "--serve"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        address = server.stdout.readline().strip()
        if not address:
            raise click.ClickException("the demo server did not start")
        console.print(f"server process {server.pid} serves [cyan]account[/] at {address}\n")
        _tour(console, address, server)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


def _tour(console: Console, address: str, server: subprocess.Popen[str]) -> None:
    table = Table(title="what happened", show_lines=False)
    for col in ("style", "call", "result", "time"):
        table.add_column(col)

    def row(style: str, call: str, fn: Any) -> None:
        t0 = time.perf_counter()
        try:
            result = repr(fn())
        except Exception as e:  # the demo shows failures as results
            result = f"[red]{type(e).__name__}[/]: {e}"
        table.add_row(style, call, result, f"{(time.perf_counter() - t0) * 1e3:.2f} ms")

    with netlet.Node() as node:
        acct = node.proxy(address, "account")
        row("blocking", "acct.deposit(100)", lambda: acct.deposit(100))

        async def aio() -> Any:
            async with netlet.open_node() as anode:
                return await anode.proxy(address, "account").deposit.aio(5)

        row("async", "await acct.deposit.aio(5)", lambda: asyncio.run(aio()))
        row("futures", "1000 x acct.deposit.future(1), pipelined",
            lambda: sum(f.result() > 0 for f in [acct.deposit.future(1) for _ in range(1000)]))
        row("oneway", "acct.note.oneway('hello')", lambda: acct.note.oneway("hello"))
        row("blocking", "acct.notes()", lambda: acct.notes.future().result())
        row("remote error", "acct.withdraw(10**9)", lambda: acct.withdraw(10**9))
        row("callback", "acct.watch(Watcher())", lambda: acct.watch(Watcher()))
        row("not exposed", "acct.format_disk()", lambda: acct.format_disk())
        # The object still finishes the slow call (threads cannot be interrupted); the
        # caller stops waiting and the next call queues behind it: one call at a time.
        row("timeout", "acct.with_options(timeout=0.2).slow(0.5)",
            lambda: acct.with_options(timeout=0.2).slow(0.5))

        for _ in range(200):
            acct.deposit(0)
        lat = []
        for _ in range(2000):
            t0 = time.perf_counter()
            acct.deposit(0)
            lat.append(time.perf_counter() - t0)
        p50 = statistics.median(lat) * 1e6
        table.add_row("latency", "2000 x acct.deposit(0)", f"p50 {p50:.0f} µs", "")

        def killed_mid_call() -> Any:
            killer = threading.Timer(0.3, lambda: server.send_signal(signal.SIGKILL))
            killer.start()
            try:
                return acct.with_options(timeout=30).slow(10)
            finally:
                killer.join()

        row("server killed", "acct.slow(10), SIGKILL after 0.3 s", killed_mid_call)
    console.print(table)
    console.print(
        "\nEvery failure above is a clear exception, never a hang. Try it across machines:\n"
        "  netlet keygen cluster.key   # then start nodes with key_file='cluster.key'\n"
        "See README.md and docs/PROTOCOL.md."
    )


if __name__ == "__main__":
    demo()
