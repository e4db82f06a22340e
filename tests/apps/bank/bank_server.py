"""Helpers for the bank's process tests: the netlet command, and a bank that can be killed.

:class:`BankProcess` runs ``netlet bank serve`` in a child process on a fixed
port and ledger, so it can be SIGKILLed and started again where clients expect
it. Each start waits for the address line the command prints once it listens
(no sleeps). Use it as a context manager: the process is gone afterwards,
whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests._support import STEP, LineReader, free_port

__all__ = ["NETLET", "BankProcess", "free_port", "netlet"]

NETLET = [sys.executable, "-c", "from netlet.cli import main; main(prog_name='netlet')"]
"""The netlet command, run by this interpreter (no console script needed)."""

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def netlet(*args: str | Path, stdin: str | None = None,
           timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``netlet ARGS`` to completion; stdout and stderr captured as text."""
    return subprocess.run([*NETLET, *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=ENV)


class BankProcess:
    """``netlet bank serve`` on ``tcp://127.0.0.1:PORT`` with ledger ``db`` (a file or a
    PostgreSQL URL)."""

    def __init__(self, db: Path | str, *options: str, port: int | None = None) -> None:
        self.db = db
        self._chosen = port is None  # a free port we picked: another may take it first
        self.port = port or free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.options = options
        self.proc: subprocess.Popen[str] | None = None
        self.stderr: LineReader | None = None
        self._stdout: LineReader | None = None
        self.starts = 0

    def start(self) -> BankProcess:
        """Start the bank; once more on a new port if the free port we picked was taken
        in between (tests run in parallel), never when the test chose the port."""
        for attempt in range(3):
            if self._start_once(last=attempt == 2 or not self._chosen):
                self.starts += 1
                return self
            self.port = free_port()
            self.address = f"tcp://127.0.0.1:{self.port}"
        raise AssertionError("unreachable")

    def _start_once(self, *, last: bool) -> bool:
        assert self.proc is None, "already running"
        cmd = [*NETLET, "bank", "serve", "--listen", self.address, "--db", str(self.db),
               *self.options]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=ENV)
        self.proc = proc
        self.stderr = stderr = LineReader(proc.stderr, "bank stderr")
        stdout = self._stdout = LineReader(proc.stdout, "bank stdout")
        try:
            stdout.wait_for(r"^tcp://", timeout=STEP)
        except BaseException:
            self.kill()
            if not last and "in use" in stderr.text():
                return False
            print(f"bank stderr:\n{stderr.text()[-3000:]}", file=sys.stderr)
            raise
        return True

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Stop the bank (SIGKILL: no chance to finish anything) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            code = proc.wait(STEP)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(STEP)
        for reader in (self._stdout, self.stderr):
            if reader is not None:
                reader.join()  # the pipe is at EOF now that the process is gone
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> BankProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()
