"""Memory a peer can make a node hold is budgeted, and given back when it leaves.

Each test floods a real server subprocess over real sockets and reads its
resident memory from /proc: ``VmRSS`` before and after, and ``VmHWM`` (the
peak, reset through /proc/PID/clear_refs) during the flood.
"""

from __future__ import annotations

import gc
import json
import logging
import resource
import secrets
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests._support import wait_until
from tests.conftest import LOGGING_PRELUDE, STEP, RawClient, ServerProcess

MiB = 1024 * 1024
KEY = secrets.token_bytes(32)

SERVER = """
import json, resource, sys, threading, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
import netlet

release = threading.Event()
go = threading.Event()

@netlet.expose
class Svc:
    def echo(self, data):
        return data

    def make(self, n):
        return b"\x01" * n  # touched memory: bytes(n) pages would stay unmapped

    def hold(self, data):
        release.wait(60)
        return len(data)

    def wait_go(self):
        go.wait(60)

@netlet.expose(concurrent=True)
class Ctl:
    def release(self):
        release.set()

    async def freeze(self, seconds):
        go.set()  # Svc starts on its calls...
        time.sleep(seconds)  # ...while the loop thread stands still, as under heavy load

import dataclasses
options = json.loads(sys.argv[2])
known = {f.name for f in dataclasses.fields(netlet.NodeConfig)} | {"handshake_timeout", "tls"}
options = {k: v for k, v in options.items() if k in known}  # runs on older netlets too
node = netlet.Node("tcp://127.0.0.1:0", key=bytes.fromhex(sys.argv[1]), **options)
node.serve(Svc(), "svc")
node.serve(Ctl(), "ctl")
print(node.address, flush=True)
threading.Event().wait()
"""


def _status(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def rss(pid: int) -> int:
    return _status(pid, "VmRSS")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def peak(pid: int) -> int:
    return _status(pid, "VmHWM")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def settled_rss(pid: int, timeout: float = 5.0) -> int:
    """RSS once it stops moving (two readings 0.3 s apart within 1 MiB)."""
    deadline = time.monotonic() + timeout
    last = rss(pid)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = rss(pid)
        if abs(now - last) < MiB:
            return now
        last = now
    return last


@pytest.fixture
def raise_nofile() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start(server_process: Callable[..., ServerProcess], tls: Path | None = None,
          **options: object) -> ServerProcess:
    """A server with ``options``; over TLS with the certificates in ``tls`` if given."""
    if tls is not None:
        options["tls"] = {"certfile": str(tls / "server.pem"), "keyfile": str(tls / "server.key"),
                          "cafile": str(tls / "ca.pem")}
    srv = server_process(LOGGING_PRELUDE + SERVER, KEY.hex(), json.dumps(options))
    # Warm the server up: one real client call, so lazily built parts are counted.
    with connect(srv, tls) as c:
        c.handshake(KEY)
        c.send_msg([1, 1, "svc", "echo", [b"x"], None])
        assert c.recv_msg()[0] == 2
    return srv


def connect(srv: ServerProcess, tls: Path | None = None) -> RawClient:
    """A raw client of ``srv``: over TLS (as node ``client`` of the CA in ``tls``) if given."""
    c = RawClient.connect(srv.address)
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(str(tls / "ca.pem"))
        ctx.load_cert_chain(str(tls / "client.pem"), str(tls / "client.key"))
        c.sock = ctx.wrap_socket(c.sock)
    return c


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a ``server`` and a ``client`` node, made by ``netlet certs``."""
    where = tmp_path_factory.mktemp("certs")
    exe = str(Path(sys.executable).parent / "netlet")
    for args in (["init"], ["node", "server"], ["node", "client"]):
        subprocess.run([exe, "certs", *args, "--dir", str(where)], check=True, timeout=60,
                       capture_output=True)
    return where


def _frame(msg: object) -> bytes:
    body = msgpack.packb(msg)
    return struct.pack(">II", len(body), 0) + body


def _frame_call(cid: int, method: str, *args: object) -> bytes:
    return _frame([1, cid, "svc", method, list(args), None])


def flood(client: RawClient, frames: Iterator[bytes], stall: float = 2.0) -> int:
    """Send frames until the server stops reading (a send stalls ``stall`` s) or they run
    out; returns how many were sent whole."""
    client.sock.settimeout(stall)
    sent = 0
    try:
        for data in frames:
            client.sock.sendall(data)
            sent += 1
    except (TimeoutError, ConnectionError):
        pass
    finally:
        client.sock.settimeout(STEP)
    return sent


# -- before authentication -------------------------------------------------------------


@pytest.mark.timeout(120)
def test_unauthenticated_connections_cost_little_and_give_it_back(
        server_process: Callable[..., ServerProcess], raise_nofile: None) -> None:
    n = 3000
    srv = start(server_process, max_connections=n + 100, handshake_timeout=60.0)
    base_fds = open_fds(srv.pid)
    before = settled_rss(srv.pid)
    host, port = srv.address.removeprefix("tcp://").rsplit(":", 1)
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.connect((host, int(port)))
        wait_until(lambda: open_fds(srv.pid) >= base_fds + n - 10, 30,
                   f"the server to accept all (it has {open_fds(srv.pid) - base_fds} more fds)")
        during = settled_rss(srv.pid)
        assert srv.alive()
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: open_fds(srv.pid) <= base_fds + 5, 30, "the server to close them")
    after = settled_rss(srv.pid)
    cost = during - before
    print(f"{n} silent connections: +{cost / MiB:.1f} MiB; after close "
          f"{(after - before) / MiB:+.1f} MiB")
    assert cost < 50 * MiB, f"{n} unauthenticated connections cost {cost / MiB:.0f} MiB"
    assert after - before < 20 * MiB, f"{(after - before) / MiB:.0f} MiB stayed after close"


# -- a header alone ------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("role", ["link", "direct"])
def test_a_header_alone_does_not_allocate_the_frame(
        server_process: Callable[..., ServerProcess], role: str) -> None:
    srv = start(server_process)
    before = settled_rss(srv.pid)
    reset_peak(srv.pid)
    clients = []
    try:
        for _ in range(4):
            c = RawClient.connect(srv.address)
            clients.append(c)
            c.handshake(KEY, role=role)
            c.send_raw(struct.pack(">II", 64 * MiB, 0))  # 64 MiB announced, none sent
            c.send_raw(b"\x96" + b"\x01" * 1000)  # and a little of it
        for c in clients:
            assert c.still_open()
        time.sleep(1.0)  # give the server time to allocate, if it would
        grown = peak(srv.pid) - before
        print(f"4 x 64 MiB headers ({role}): peak +{grown / MiB:.1f} MiB")
        assert grown < 24 * MiB, f"headers alone made the server take {grown / MiB:.0f} MiB"
    finally:
        for c in clients:
            c.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("role", ["link", "direct"])
def test_frames_in_progress_stay_within_the_total(
        server_process: Callable[..., ServerProcess], role: str) -> None:
    srv = start(server_process, max_connection_memory=32 * MiB, max_memory=64 * MiB)
    before = settled_rss(srv.pid)
    reset_peak(srv.pid)
    clients: list[RawClient] = []
    part = secrets.token_bytes(12 * MiB)
    try:
        for _ in range(8):  # 8 x 12 MiB of 16 MiB frames that never end
            c = RawClient.connect(srv.address)
            clients.append(c)
            c.handshake(KEY, role=role)
            flood(c, iter([struct.pack(">II", 16 * MiB, 0), part]), stall=1.5)
        time.sleep(1.0)  # let the server take in whatever it will
        grown = peak(srv.pid) - before
        print(f"8 unfinished 16 MiB frames ({role}): peak +{grown / MiB:.1f} MiB")
        assert grown < 64 * MiB + 16 * MiB, f"frames in progress held {grown / MiB:.0f} MiB"
    finally:
        for c in clients:
            c.close()
    with RawClient.connect(srv.address) as c:  # all given back: served again
        c.handshake(KEY)
        c.send_msg([1, 1, "svc", "echo", [b"z" * (20 * MiB)], None])
        assert c.recv_msg()[:2] == [2, 1]


# -- after authentication: what running calls and unread replies hold -------------------


BUDGET = {"max_connection_memory": 32 * MiB, "max_memory": 64 * MiB}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["pending", "oneway"])
def test_queued_calls_stay_within_the_budget(
        server_process: Callable[..., ServerProcess], kind: str) -> None:
    srv = start(server_process, **BUDGET)
    before = settled_rss(srv.pid)
    reset_peak(srv.pid)
    blob = secrets.token_bytes(MiB)
    with RawClient.connect(srv.address) as c:
        c.handshake(KEY)
        frames = (_frame_call(0 if kind == "oneway" else i, "hold", blob) for i in range(1, 401))
        sent = flood(c, frames)
        grown = peak(srv.pid) - before
        print(f"{kind}: {sent} x 1 MiB calls sent before the server stopped reading; "
              f"peak +{grown / MiB:.1f} MiB")
        assert sent < 200, "the server kept reading past its budget"
        assert grown < 32 * MiB + 40 * MiB, f"calls held {grown / MiB:.0f} MiB"
        with RawClient.connect(srv.address) as ctl:  # the others are still served
            ctl.handshake(KEY)
            ctl.send_msg([1, 1, "ctl", "release", [], None])
            assert ctl.recv_msg()[:2] == [2, 1]
        if kind == "pending":  # slowed down, not dropped: every call it sent is answered
            got: set[tuple[Any, ...]] = set()
            while len(got) < sent:
                msg = c.recv_msg()
                if msg[0] != 5:  # the server PINGs a peer it stopped reading (§5.6)
                    got.add(tuple(msg[:3]))
            assert got == {(2, i, MiB) for i in range(1, sent + 1)}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_unread_replies_stay_within_the_budget(
        server_process: Callable[..., ServerProcess], certs: Path, transport: str) -> None:
    tls = certs if transport == "tls" else None
    srv = start(server_process, tls, **BUDGET)
    before = settled_rss(srv.pid)
    reset_peak(srv.pid)
    with connect(srv, tls) as c:
        c.handshake(KEY)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        frames = (_frame_call(i, "make", MiB) for i in range(1, 801))
        sent = flood(c, frames)
        # The server makes a 1 MiB reply per call; we read none of them.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and srv.alive():
            time.sleep(0.2)
        grown = peak(srv.pid) - before
        print(f"unread replies ({transport}): {sent} calls sent; peak +{grown / MiB:.1f} MiB")
        assert grown < 2 * 32 * MiB + 40 * MiB, f"unread replies held {grown / MiB:.0f} MiB"
        assert c.closed_by_peer(STEP), "a peer that never reads its replies stays connected"
    # Dropped past twice its limit; or, if the server had held its later calls (they came
    # after it was over its limit), for not reading what was queued for it.
    srv.stderr.wait_for(r"does not read its replies|has not read the \d+ bytes we queued")
    assert srv.alive()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_replies_made_while_the_loop_lags_stay_within_the_budget(
        server_process: Callable[..., ServerProcess], certs: Path, transport: str) -> None:
    """Under CPU load the loop thread can fall behind the threads that make replies.
    The rule that drops a peer over its reply budget must hold on the thread that
    queues the reply, not when the loop gets round to closing: here the loop stands
    still for 3 s (an async method blocks it) while the actor thread makes 200
    replies of 1 MiB that the peer never reads. Over TLS a reply made off the loop
    waits for the loop to write it, so it must count from the moment it is sent."""
    tls = certs if transport == "tls" else None
    srv = start(server_process, tls, **BUDGET)
    before = settled_rss(srv.pid)
    reset_peak(srv.pid)
    with connect(srv, tls) as c:
        c.handshake(KEY)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        calls = [_frame_call(1, "wait_go")]  # Svc waits until the loop is held up
        calls += [_frame_call(i, "make", MiB) for i in range(2, 202)]
        calls.append(_frame([1, 202, "ctl", "freeze", [3.0], None]))
        c.send_raw(b"".join(calls))
        srv.stderr.wait_for(r"does not read its replies")
        assert c.closed_by_peer(STEP), "a peer that never reads its replies stays connected"
        grown = peak(srv.pid) - before
        print(f"unread replies, loop held up ({transport}): peak +{grown / MiB:.1f} MiB")
        assert grown < 2 * 32 * MiB + 40 * MiB, f"unread replies held {grown / MiB:.0f} MiB"
    assert srv.alive()


@pytest.mark.timeout(120)
def test_a_peer_behind_on_its_replies_has_its_calls_held_until_it_reads(
        server_process: Callable[..., ServerProcess]) -> None:
    """Calls from a peer that has more replies unread than its limit are not run (each
    would make more), but kept and run once it reads: a slow reader is slowed down,
    not dropped for reaching twice its limit."""
    srv = start(server_process, **BUDGET)
    before = settled_rss(srv.pid)
    reset_peak(srv.pid)
    mark = srv.stderr.mark()
    with RawClient.connect(srv.address) as c:
        c.handshake(KEY)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        # 40 MiB of replies: over the limit (32 MiB), under twice it.
        c.send_raw(b"".join(_frame_call(i, "make", MiB) for i in range(1, 41)))
        n = 40
        deadline = time.monotonic() + STEP
        while not srv.stderr.find(r"holding calls from", since=mark):
            assert n < 56, f"{n - 40} more calls were run, with {n} MiB of replies unread"
            assert time.monotonic() < deadline, "the server neither held nor ran the calls"
            n += 1  # one more call at a time, until the server holds them
            c.send_raw(_frame_call(n, "make", MiB))
            time.sleep(0.1)
        for i in range(n + 1, n + 41):  # 40 more: run, they would pass twice the limit
            c.send_raw(_frame_call(i, "make", MiB))
        n += 40
        assert c.still_open()
        got: set[int] = set()
        while len(got) < n:  # now read: every call is answered, in full
            msg = c.recv_msg()
            if msg[0] != 5:
                assert msg[0] == 2, msg
                got.add(msg[1])
        assert got == set(range(1, n + 1))
        grown = peak(srv.pid) - before
        print(f"a slow reader: {n} calls answered; peak +{grown / MiB:.1f} MiB")
    assert not srv.stderr.find(r"does not read its replies", since=mark)


@pytest.mark.timeout(90)
def test_a_peer_we_stopped_reading_that_reads_nothing_is_closed(
        server_process: Callable[..., ServerProcess]) -> None:
    """Backpressure must not become a wait for ever: the server stopped reading us (its
    calls are all busy) and we read none of its replies: it closes with a reason."""
    srv = start(server_process, max_inflight=4)
    with RawClient.connect(srv.address) as c:
        c.handshake(KEY)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        for i in range(1, 17):  # 16 MiB of replies for us, then calls that do not end
            c.send_raw(_frame_call(i, "make", MiB))
        for i in range(17, 25):
            c.send_raw(_frame_call(i, "hold", b"x"))
        mark = srv.stderr.mark()
        started = time.monotonic()
        srv.stderr.wait_for(r"has not read the \d+ bytes we queued", timeout=30, since=mark)
        waited = time.monotonic() - started
        print(f"a stalled peer was closed after {waited:.1f} s")
        assert c.closed_by_peer(STEP)
    with RawClient.connect(srv.address) as ctl:
        ctl.handshake(KEY)
        ctl.send_msg([1, 1, "ctl", "release", [], None])
        assert ctl.recv_msg()[:2] == [2, 1]


# -- closing gives everything back, without the cyclic collector ---------------------------


@pytest.mark.timeout(60)
def test_closed_connections_leave_no_cycles(node_factory: Callable[..., Any]) -> None:
    import netlet

    @netlet.expose
    class Echo:
        def echo(self, data: bytes) -> bytes:
            return data

    server = node_factory("tcp://127.0.0.1:0")
    server.serve(Echo(), "echo")
    gc.collect()
    gc.disable()
    # pytest keeps the log records, and with them the errors they name: log none.
    netlet_log = logging.getLogger("netlet")
    level = netlet_log.level
    netlet_log.setLevel(logging.CRITICAL)
    try:
        for role in ("link", "direct", "link"):
            with RawClient.connect(server.address) as c:
                c.handshake(role=role)
                for i, size in enumerate((10, 300_000, 5 * MiB), 1):
                    c.send_msg([1, i, "echo", "echo", [b"x" * size], None])
                    assert c.recv_msg()[:2] == [2, i]
                c.send_raw(struct.pack(">II", 200_000, 0) + b"\x01" * 1000)  # cut mid-frame
        with RawClient.connect(server.address) as c:
            c.send_raw(b"\x00\x00")  # cut in the handshake
        with RawClient.connect(server.address):
            pass  # closed before its first byte
        wait_until(lambda: not server.links and not server.links.serving_direct()
                   and not server._listener._handshakes, STEP,
                   "the server to drop its connections")
        budget = getattr(server, "budget", None)
        wait_until(lambda: budget is None or budget.used == 0, STEP,
                   "the budget to be given back")
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = [o for o in gc.garbage if type(o).__module__.startswith("netlet")]
        gc.garbage.clear()
    finally:
        netlet_log.setLevel(level)
        gc.set_debug(0)
        gc.enable()
    assert not ours, f"closed connections left reference cycles: {ours[:10]}"


@pytest.mark.timeout(60)
def test_a_direct_reply_the_peer_does_not_read_is_charged(
        node_factory: Callable[..., Any]) -> None:
    """The direct path sends one reply at a time, blocking until the peer takes it:
    while it waits, the reply counts in the node's total like a queued one."""
    import netlet

    @netlet.expose
    class Maker:
        def make(self, n: int) -> bytes:
            return b"\x01" * n

    server = node_factory("tcp://127.0.0.1:0", **BUDGET)
    server.serve(Maker(), "maker")
    with RawClient.connect(server.address) as c:
        c.handshake(role="direct")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.send_msg([1, 1, "maker", "make", [16 * MiB], None])
        wait_until(lambda: server.budget.used >= 8 * MiB, STEP,
                   f"the unread reply to be charged (budget.used {server.budget.used})")
    wait_until(lambda: server.budget.used == 0, STEP, "the budget to be given back")


@pytest.mark.timeout(60)
def test_a_direct_peer_that_does_not_read_its_reply_is_dropped(
        server_process: Callable[..., ServerProcess]) -> None:
    """A direct connection's thread sends the reply itself: a peer that never takes it
    would hold that thread and the reply for ever. It is closed, with a reason."""
    srv = start(server_process, **BUDGET)
    with RawClient.connect(srv.address) as c:
        c.handshake(KEY, role="direct")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        mark = srv.stderr.mark()
        c.send_raw(_frame_call(1, "make", 16 * MiB))
        srv.stderr.wait_for(r"has not read its reply \(\d+ bytes\) for \d+ s", timeout=30,
                            since=mark)
        assert c.closed_by_peer(STEP)
    with RawClient.connect(srv.address) as c:  # and the server goes on serving
        c.handshake(KEY, role="direct")
        c.send_msg([1, 1, "svc", "echo", [b"x"], None])
        assert c.recv_msg()[:2] == [2, 1]


@pytest.mark.timeout(60)
def test_a_bytes_argument_on_the_direct_path_is_charged(
        node_factory: Callable[..., Any]) -> None:
    """A large ``bytes`` argument of a direct call is received straight into the bytes
    object the method gets: it counts in the node's total until the call ends, like
    any other frame (it used to be held uncounted)."""
    import netlet

    release = threading.Event()

    @netlet.expose
    class Holder:
        def hold(self, data: bytes) -> int:
            release.wait(30)
            return len(data)

    server = node_factory("tcp://127.0.0.1:0", **BUDGET)
    server.serve(Holder(), "holder")
    with RawClient.connect(server.address) as c:
        c.handshake(role="direct")
        body = msgpack.packb([1, 1, "holder", "hold", [msgpack.ExtType(13, msgpack.packb(0))],
                              None])
        try:
            c.send_frame(body, secrets.token_bytes(16 * MiB))
            wait_until(lambda: server.budget.used >= 16 * MiB, STEP,
                       f"the argument to be charged (budget.used {server.budget.used})")
        finally:
            release.set()
        assert c.recv_msg()[:3] == [2, 1, 16 * MiB]
    wait_until(lambda: server.budget.used == 0, STEP, "the budget to be given back")
