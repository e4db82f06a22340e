"""What web clients can make a dashboard hold: connections, time to send a request head,
live streams. uvicorn alone kept an idle or trickling connection for ever (found by
hand: 3,000 idle sockets held 3,000 descriptors of the head's process), so a local
user could starve a head of descriptors through its read-only loopback dashboard."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest

from netlet.web import Dashboard
from tests.web.conftest import Kit

pytestmark = pytest.mark.timeout(60)


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` s (reading what it sends)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _connect(board: Dashboard) -> socket.socket:
    return socket.create_connection(("127.0.0.1", board.port), timeout=10)


def test_a_connection_that_sends_no_request_head_in_time_is_closed(
        dashboard_for: Callable[..., Dashboard]) -> None:
    board = dashboard_for(header_timeout=1.0)
    with _connect(board) as idle, _connect(board) as trickle:
        trickle.sendall(b"GET /api/v1/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        for _ in range(30):  # a header byte every 0.2 s: slowloris; never a whole head
            try:
                trickle.sendall(b"X")
            except OSError:
                break
            time.sleep(0.2)  # the attacker's pace, not a synchronisation
        assert time.monotonic() - start < 6.0, "a trickling request head was kept open"
        assert _closed_by_peer(trickle, 5.0)
        assert _closed_by_peer(idle, 5.0)
    # A request that comes in time, and the next one on the same connection, are served.
    with httpx.Client(base_url=board.base_url, timeout=10) as web:
        assert web.get("/api/v1/overview").status_code == 200
        assert web.get("/metrics").status_code == 200


def test_connections_beyond_the_limit_are_closed_and_the_head_carries_on(
        kit: Kit, dashboard_for: Callable[..., Dashboard]) -> None:
    board = dashboard_for(max_connections=8)
    with ExitStack() as stack:
        held = [stack.enter_context(_connect(board)) for _ in range(8)]
        extra = stack.enter_context(_connect(board))
        assert _closed_by_peer(extra, 5.0), "a connection beyond the limit was kept"
        assert kit.cluster.submit("operator:add", 2, 3).result(10) == 5
        assert all(not _closed_by_peer(s, 0.05) for s in held[:2])  # within the limit: kept
    with httpx.Client(base_url=board.base_url, timeout=10) as web:  # room again once they go
        assert web.get("/api/v1/overview").status_code == 200


@pytest.fixture
def streams(dashboard_for: Callable[..., Dashboard]) -> Iterator[tuple[Dashboard, ExitStack]]:
    board = dashboard_for(max_streams=2)
    with ExitStack() as stack:
        yield board, stack


def test_live_streams_beyond_the_limit_get_503_and_their_slots_come_back(
        streams: tuple[Dashboard, ExitStack]) -> None:
    board, stack = streams
    web = stack.enter_context(httpx.Client(base_url=board.base_url, timeout=10))
    first = stack.enter_context(web.stream("GET", "/stream/overview"))
    second = stack.enter_context(web.stream("GET", "/stream/overview"))
    assert (first.status_code, second.status_code) == (200, 200)
    third = web.get("/stream/overview")
    assert third.status_code == 503
    assert "live views are open already" in third.text
    first.close()
    deadline = time.monotonic() + 10
    while True:  # the server sees the stream end at its next tick (interval 0.2 s)
        with web.stream("GET", "/stream/overview") as again:
            if again.status_code == 200:
                break
        assert time.monotonic() < deadline, "a closed stream never gave its slot back"
        time.sleep(0.1)  # poll interval of a loop with a deadline


@pytest.fixture
def bare_board() -> Iterator[Dashboard]:
    """A read-only loopback dashboard with no token and no head: what any local user reaches."""
    board = Dashboard(None, [], listen="127.0.0.1:0", header_timeout=1.0).start()
    yield board
    board.stop()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("request_head", [
    b"POST /api/v1/tasks/x/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n",
    b"GET /api/v1/apps HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n",
], ids=["refused-post", "get"])
def test_a_request_whose_body_trickles_is_closed(bare_board: Dashboard,
                                                 request_head: bytes) -> None:
    """A whole head, then a body byte every 0.2 s (slowloris on the body): the request must
    arrive whole within the same time as its head, answered or not. (uvicorn kept reading
    and dropping such a body for ever, each byte resetting its keep-alive timer, so 128 of
    these, no token needed, locked everyone out of a loopback dashboard.)"""
    with _connect(bare_board) as trickle:
        trickle.sendall(request_head)
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 6.0:
            try:
                trickle.sendall(b"x")
            except OSError:
                closed = True
                break
            if _closed_by_peer(trickle, 0.2):  # also the attacker's pace
                closed = True
                break
        assert closed, "a request whose body trickled was kept open"
    with httpx.Client(base_url=bare_board.base_url, timeout=10) as web:  # the control
        assert web.get("/api/v1/apps").status_code == 200


@pytest.mark.timeout(60)
def test_the_documented_bounds_are_the_defaults() -> None:
    """docs/dashboard.md: at most 128 connections and 32 live views with no options given."""
    board = Dashboard(None, [], listen="127.0.0.1:0").start()
    try:
        with ExitStack() as stack:
            streams = []
            for _ in range(32):
                s = stack.enter_context(_connect(board))
                s.sendall(b"GET /stream/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                streams.append(s)
            for s in streams:
                assert s.recv(12) == b"HTTP/1.1 200"
            with _connect(board) as extra:
                extra.sendall(b"GET /stream/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert extra.recv(12) == b"HTTP/1.1 503"
            idle = [stack.enter_context(_connect(board)) for _ in range(128 - 32)]
            assert not _closed_by_peer(idle[-1], 0.05)
            with _connect(board) as extra:
                assert _closed_by_peer(extra, 5.0), "a 129th connection was kept"
    finally:
        board.stop()


@pytest.mark.timeout(30)
def test_a_request_head_that_never_ends_is_refused_before_it_grows(bare_board: Dashboard) -> None:
    """A header line that goes on for ever: answered 400 once it passes h11's bound
    (16 KiB), long before the 8 MiB sent here (the rest sits in socket buffers)."""
    with _connect(bare_board) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: ")
        answer, sent = b"", 0
        while not answer and sent < 8 << 20:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                answer = sock.recv(4096)
            elif writable:
                sent += sock.send(b"a" * 65536)
        assert answer.startswith(b"HTTP/1.1 400"), f"{sent >> 10} KiB sent, answer {answer!r}"
