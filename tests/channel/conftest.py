"""Fixtures and helpers for the channel tests.

Fixtures
--------

``owner``
    One ``channel_owner.py`` process shared by the whole session (tests make
    fresh channels on it, so they never share state).
``start_owner``
    ``start_owner(*args) -> OwnerProcess``: a fresh owner process for this test
    (for tests that kill it); killed and reaped when the test ends.
``client``
    A ``netlet.Node`` in this process (its own loop thread), closed afterwards.
``make_channel``
    Parametrized ``local``/``remote``: ``make_channel(buffer=0)`` gives a
    ``netlet.Channel`` of this process, or a ``RemoteChannel`` (via
    ``netlet.connect_channel``) to a channel living in the ``owner`` process, so
    one test runs against both.

Helpers
-------

``in_thread(fn, *args)`` runs ``fn`` on a new thread and returns a
``concurrent.futures.Future``; ``wait_until(predicate)`` polls a condition that
has no event of its own, with a deadline; ``outcome(fn)`` is what ``fn()``
returned or the type of what it raised.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import netlet

__all__ = [
    "OWNER_SCRIPT",
    "STEP",
    "OwnerProcess",
    "future_outcome",
    "in_thread",
    "outcome",
    "wait_until",
]

OWNER_SCRIPT = Path(__file__).with_name("channel_owner.py")
STEP = 10.0
"""Seconds to wait for something that should happen at once (a failure, not a hang)."""


def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
    """Run ``fn(*args, **kwargs)`` on a new daemon thread; its outcome lands in the future."""
    fut: Future[Any] = Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:
            fut.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return fut


def wait_until(predicate: Callable[[], Any], timeout: float = STEP, what: str = "") -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what or predicate}")
        time.sleep(0.005)


def outcome(fn: Callable[[], Any]) -> Any:
    """What ``fn()`` returns, or the type of the exception it raises."""
    try:
        return fn()
    except Exception as e:
        return type(e)


def future_outcome(fut: Future[Any], timeout: float = STEP) -> Any:
    """A future's result, or the type of its exception."""
    try:
        return fut.result(timeout)
    except Exception as e:
        return type(e)


class _Lines:
    """The lines of a child's pipe, collected by a thread."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        try:
            for line in stream:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = STEP) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise RuntimeError(f"no line matching {pattern!r}; got {self.lines!r}")
                self._cond.wait(left)

    def join(self) -> None:
        self._thread.join(STEP)


class OwnerProcess:
    """``channel_owner.py`` running as a child process."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(OWNER_SCRIPT), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.stdout = _Lines(self.proc.stdout)
        self.stderr = _Lines(self.proc.stderr)
        try:
            self.address = self.stdout.wait_for(r"^tcp://\S+$").strip()
        except BaseException:
            self.stop()
            print("\n".join(self.stderr.lines), file=sys.stderr)
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def control(self, node: netlet.Node) -> netlet.Proxy:
        return node.proxy(self.address, "control", timeout=STEP)

    def worker(self, node: netlet.Node) -> netlet.Proxy:
        return node.proxy(self.address, "worker", timeout=STEP)

    def kill(self) -> None:
        """SIGKILL and reap: when this returns the kernel has closed its sockets."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        try:
            self.proc.wait(STEP)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STEP)
        self.stdout.join()
        self.stderr.join()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(scope="session")
def owner() -> Iterator[OwnerProcess]:
    proc = OwnerProcess()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def start_owner() -> Iterator[Callable[..., OwnerProcess]]:
    started: list[OwnerProcess] = []

    def start(*args: str) -> OwnerProcess:
        proc = OwnerProcess(*args)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def client() -> Iterator[netlet.Node]:
    node = netlet.Node()
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(params=["local", "remote"])
def where(request: pytest.FixtureRequest) -> str:
    """Where the channel lives: in this process, or in the ``owner`` process."""
    return str(request.param)


@pytest.fixture
def make_channel(where: str, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``make_channel(buffer=0)``: a local channel, or a remote one (see ``where``)."""
    if where == "local":
        return netlet.channel
    owner: OwnerProcess = request.getfixturevalue("owner")
    node: netlet.Node = request.getfixturevalue("client")
    control = owner.control(node)

    def make(buffer: int = 0) -> netlet.RemoteChannel:
        return netlet.connect_channel(owner.address, control.new_channel(buffer), node=node)

    return make
