"""A call's timeout while its request is still going out: a slow link is not a dead peer.

The timeout bounds the wait for a reply once the request is sent, and any
stretch in which the peer takes none of the request's bytes. So a request
that takes longer to send than the timeout, over a slow but moving link, gets
its reply (issue 15's 64 MiB over 1 MB/s); a peer that stops reading (frozen,
its buffers full) fails the call about ``timeout`` after it stopped, never
hangs it. Each holds for every call style: blocking (the direct path), future
and ``.aio`` (the link).

A rate-capped relay in this process stands for the slow link; SIGSTOP for the
frozen peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import netlet
from netlet.node._unsent import LOOK, Unsent
from tests.node.test_calls import Server

RATE = 8_000_000  # bytes per second through the relay, each way
SLOW = 16 << 20  # about 2 s through it: twice the calls' timeout
TIMEOUT = 1.0


class Relay:
    """Forwards each connection to ``upstream``, at most ``rate`` bytes/s each way.

    It reads the next chunk only once the last is written and paid for, so the
    sender is slowed by TCP, as by a real slow link.
    """

    def __init__(self, upstream: str, rate: int) -> None:
        host, _, port = upstream.removeprefix("tcp://").rpartition(":")
        self._upstream, self._rate = (host, int(port)), rate
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.address = ""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the relay did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.address = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._stop = asyncio.Event()
        self._ready.set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        async with server:
            await self._stop.wait()
        # Close everything on this loop before it closes: a stream left to the garbage
        # collector later warns "loop is closed" inside whichever test runs then.
        for w in self._writers:
            w.close()
        for t in self._handlers:
            t.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for w in self._writers:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await w.wait_closed()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(64 * 1024):
                writer.write(data)
                await writer.drain()
                await asyncio.sleep(len(data) / self._rate)
        writer.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(cw)
        ur, uw = await asyncio.open_connection(*self._upstream)
        self._writers.add(uw)
        for s in (cw, uw):  # small buffers: the cap, not the kernel, sets the pace
            sock = s.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        await asyncio.gather(self._pump(cr, uw), self._pump(ur, cw), return_exceptions=True)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(s.proc.pid, signal.SIGCONT)
        s.kill()


def _styles(svc: Any) -> dict[str, Callable[[bytes], int]]:
    """Call ``svc.length(data)`` blocking, as a future and with ``.aio``."""
    async def aio(data: bytes) -> int:
        return int(await svc.length.aio(data))

    return {
        "blocking": lambda data: int(svc.length(data)),
        "future": lambda data: int(svc.length.future(data).result(60)),
        "aio": lambda data: asyncio.run(aio(data)),
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("style", ["blocking", "future", "aio"])
def test_a_request_slower_to_send_than_the_timeout_gets_its_reply(
        server: Server, style: str) -> None:
    relay = Relay(server.address, RATE)
    try:
        with netlet.Node() as node:
            svc = node.proxy(relay.address, "svc", timeout=TIMEOUT)
            call = _styles(svc)[style]
            assert call(b"x") == 1  # connected (and, blocking, a direct connection made)
            start = time.monotonic()
            assert call(b"x" * SLOW) == SLOW
            took = time.monotonic() - start
            assert took > TIMEOUT, f"{took:.2f} s: the link was not slow enough to test this"
            assert call(b"xy") == 2  # the link (or direct connection) is still good
    finally:
        relay.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("style", ["blocking", "future", "aio"])
def test_a_large_request_to_a_frozen_peer_times_out_instead_of_hanging(
        server: Server, style: str) -> None:
    with netlet.Node() as node:
        svc = node.proxy(server.address, "svc", timeout=TIMEOUT)
        call = _styles(svc)[style]
        assert call(b"x") == 1
        os.kill(server.proc.pid, signal.SIGSTOP)  # takes no more bytes: its buffers fill
        start = time.monotonic()
        with pytest.raises(netlet.CallTimeout):
            call(b"x" * (64 << 20))
        assert time.monotonic() - start < 20, "the timeout came far too late"
        os.kill(server.proc.pid, signal.SIGCONT)


def test_the_deadline_rule_waits_while_bytes_move_and_fails_a_stall() -> None:
    """``Unsent`` alone: no sockets, the time given."""
    u = Unsent(end=1000, written=0, now=0.0)
    assert u.next_due(100, 2.0, 1.0) == 1.0 + LOOK  # moving: look again soon
    assert u.next_due(100, 2.0, 1.0 + LOOK) == 1.0 + 2 * LOOK  # no move yet, not for 2 s
    assert u.next_due(100, 2.0, 2.9) == 3.0  # the stall would reach 2 s at 3.0
    assert u.next_due(100, 2.0, 3.0) is None  # none taken for 2 s: the call fails
    u = Unsent(end=1000, written=0, now=0.0)
    assert u.next_due(999, 2.0, 5.0) == 5.0 + LOOK
    assert u.next_due(1000, 2.0, 5.1) == 7.1  # out: the reply gets its 2 s
    assert u.out
