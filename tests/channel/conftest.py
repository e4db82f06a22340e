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
``concurrent.futures.Future``; ``outcome(fn)`` is what ``fn()`` returned or the
type of what it raised; ``wait_until`` and ``STEP`` come from
:mod:`tests._support`. ``OwnerProcess.start(*args)`` is ``channel_owner.py`` as
a :class:`tests._support.Proc` (``kill()`` SIGKILLs and reaps it).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import netlet
from tests._support import STEP, Proc, wait_until

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


class OwnerProcess(Proc):
    """``channel_owner.py`` running as a child process."""

    @classmethod
    def start(cls, *args: str) -> OwnerProcess:
        return cls.spawn([sys.executable, OWNER_SCRIPT, *args]).wait_address(r"^tcp://\S+$")

    def control(self, node: netlet.Node) -> netlet.Proxy:
        return node.proxy(self.address, "control", timeout=STEP)

    def worker(self, node: netlet.Node) -> netlet.Proxy:
        return node.proxy(self.address, "worker", timeout=STEP)


@pytest.fixture(scope="session")
def owner() -> Iterator[OwnerProcess]:
    proc = OwnerProcess.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def start_owner() -> Iterator[Callable[..., OwnerProcess]]:
    started: list[OwnerProcess] = []

    def start(*args: str) -> OwnerProcess:
        proc = OwnerProcess.start(*args)
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
