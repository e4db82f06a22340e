"""Running out of file descriptors, connections or threads does not take a node down.

A server subprocess with a low descriptor limit is flooded with connections:
its accept loop must back off (low CPU, few log lines) and serve a legitimate
client once the flood is gone. The connection cap and the cap on direct-call
threads are checked the same way, from /proc/PID.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests._support import wait_until
from tests.conftest import LOGGING_PRELUDE, STEP, RawClient, ServerProcess

SERVER = LOGGING_PRELUDE + """
import dataclasses, json, resource, sys, threading
import netlet

options = json.loads(sys.argv[1])
nofile = options.pop("nofile", None)
known = {f.name for f in dataclasses.fields(netlet.NodeConfig)} | {"handshake_timeout"}
options = {k: v for k, v in options.items() if k in known}  # runs on older netlets too

@netlet.expose(concurrent=True)
class Echo:
    def echo(self, data):
        return data

node = netlet.Node("tcp://127.0.0.1:0", **options)
node.serve(Echo(), "echo")
if nofile:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
print(node.address, flush=True)
threading.Event().wait()
"""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def start(server_process: Callable[..., ServerProcess], **options: Any) -> ServerProcess:
    return server_process(SERVER, json.dumps(options))


@contextmanager
def flood(address: str, n: int) -> Iterator[list[socket.socket]]:
    """``n`` silent connections, closed on exit (connect completes from the backlog)."""
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(STEP)
            s.connect((host, int(port)))
        yield socks
    finally:
        for s in socks:
            s.close()


def echo_call(address: str, timeout: float = STEP) -> Any:
    with RawClient.connect(address, timeout) as c:
        c.handshake()
        c.send_msg([1, 1, "echo", "echo", ["hello"], None])
        return c.recv_msg()


@pytest.mark.timeout(90)
def test_out_of_descriptors_backs_off_and_recovers(
        server_process: Callable[..., ServerProcess]) -> None:
    srv = start(server_process, nofile=64, handshake_timeout=30.0)
    assert echo_call(srv.address)[:3] == [2, 1, "hello"]
    with flood(srv.address, 150):
        srv.stderr.wait_for(r"accept on .* failed")  # the server did run out
        mark = srv.stderr.mark()
        cpu0, t0 = cpu_seconds(srv.pid), time.monotonic()
        time.sleep(3.0)  # the measurement window: the server is left alone
        cpu, wall = cpu_seconds(srv.pid) - cpu0, time.monotonic() - t0
        lines = len(srv.stderr.lines) - mark
        print(f"out of descriptors: {cpu:.2f} s CPU in {wall:.1f} s, {lines} log lines")
        assert cpu < 0.3 * wall, f"the accept loop spun: {cpu:.2f} s of CPU in {wall:.1f} s"
        assert lines < 20, f"{lines} log lines in {wall:.1f} s:\n{srv.stderr.text(mark)[-2000:]}"
    # The flood is gone: a legitimate client is served again.
    deadline = time.monotonic() + 20
    while True:
        try:
            reply = echo_call(srv.address, 5.0)
            break
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
    assert reply[:3] == [2, 1, "hello"]
    assert srv.alive()


@pytest.mark.timeout(60)
def test_connections_past_the_cap_are_refused_with_a_reason(
        server_process: Callable[..., ServerProcess]) -> None:
    srv = start(server_process, max_connections=20, handshake_timeout=30.0)
    with flood(srv.address, 20):
        with RawClient.connect(srv.address) as c:
            c.hello()
            reply = c.recv_frame_or_eof()
            assert reply is not None, "closed without a reason"
            msg = msgpack.unpackb(reply[0])
            assert msg["error"] == "busy", msg
            assert "limit" in msg["message"], msg
            assert c.closed_by_peer()
        srv.stderr.wait_for(r"refused connection .*max_connections")
    wait_until(lambda: _served(srv.address), STEP, "the server to serve again")


def _served(address: str) -> bool:
    try:
        return bool(echo_call(address, 2.0)[:3] == [2, 1, "hello"])
    except (OSError, AssertionError):
        return False


@pytest.mark.timeout(60)
def test_a_client_past_the_cap_falls_back_to_its_main_link(
        server_process: Callable[..., ServerProcess], node_factory: Callable[..., Any]) -> None:
    # Room for the client's main link, not for a direct connection beside it.
    srv = start(server_process, max_connections=5, handshake_timeout=30.0)
    with flood(srv.address, 4):
        client = node_factory()
        p = client.proxy(srv.address, "echo")
        assert p.echo("over the main link") == "over the main link"
        srv.stderr.wait_for(r"refused connection .*max_connections")


@pytest.mark.timeout(60)
def test_direct_threads_are_capped(server_process: Callable[..., ServerProcess]) -> None:
    cap = 8
    srv = start(server_process, max_direct_threads=cap)
    assert echo_call(srv.address)[:3] == [2, 1, "hello"]
    base = threads(srv.pid)
    clients = []
    try:
        for _ in range(40):
            c = RawClient.connect(srv.address)
            clients.append(c)
            c.handshake(role="direct")
        for i, c in enumerate(clients):  # every one is served, within the cap or not
            c.send_msg([1, 7, "echo", "echo", [i], None])
            assert c.recv_msg()[:3] == [2, 7, i]
        n = threads(srv.pid)
        print(f"40 direct connections: {n - base} more threads (cap {cap})")
        # Past the cap, calls run on the loop's link and so on the object's thread pool:
        # sequential calls mostly reuse one pool thread, but on a loaded machine a reply
        # can beat the pool thread back to idle and the pool starts another (a few).
        # Uncapped, 40 connections would hold 40 threads.
        assert n - base <= cap + 6, f"{n - base} threads for 40 direct connections"
    finally:
        for c in clients:
            c.close()
