"""SECURITY.md: loopback, the default listen address, "no other host can connect".

Another host is a network namespace joined to this one by a veth pair (a
real link with its own addresses and routes). From there the attacker dials
this host's address on the port of a node, head, worker or bank listening on
loopback, and also routes ``127.0.0.1`` itself over the link (a neighbour on
the same segment sending packets addressed to our loopback). Neither
connects. The control, a node listening on ``0.0.0.0`` (with a key), is
reached from the namespace through the same link, so the link works and the
probe would see a node that listened too widely.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import netlet
from netlet.transport import generate_key
from tests.conftest import STEP
from tests.security._spawn import Servers, servers

__all__ = ["servers"]  # the fixture, re-exported for pytest

NodeFactory = Callable[..., netlet.Node]

pytestmark = pytest.mark.timeout(60)


def _why_no_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root to make a network namespace"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip netns)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"ip netns is not available: {probe.stderr.strip()}"
    return None


_WHY_NOT = _why_no_netns()
# Skipped only where it cannot run; under CI=true it must run (a failure, not a skip).
needs_netns = pytest.mark.skipif(_WHY_NOT is not None and os.environ.get("CI") != "true",
                                 reason=_WHY_NOT or "")

_PROBE = """
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    socket.create_connection((host, port), timeout=timeout).close()
    print("connected")
except TimeoutError:
    print("timeout")
except OSError as e:
    print("refused", e.errno)
"""


@dataclass
class OtherHost:
    """A network namespace on a veth link: ``host_ip`` is us, seen from there."""

    name: str
    host_ip: str

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, "ip", *args], check=True,
                       capture_output=True, timeout=STEP)

    def dial(self, host: str, port: int, timeout: float = 2.0) -> str:
        """``connected``, ``refused ERRNO`` or ``timeout``: a TCP connect from the other host."""
        done = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", _PROBE,
                               host, str(port), str(timeout)],
                              capture_output=True, text=True, timeout=STEP, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@pytest.fixture
def other_host() -> Iterator[OtherHost]:
    if _WHY_NOT is not None:
        pytest.fail(f"CI=true but the other host cannot be made: {_WHY_NOT}")
    n = os.getpid() % 250
    name, veth, peer = f"netlet-audit-{os.getpid()}", f"nla{os.getpid()}h", f"nla{os.getpid()}n"
    host_ip, ns_ip = f"10.251.{n}.1", f"10.251.{n}.2"

    def sh(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=STEP)

    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "add", veth[:15], "type", "veth", "peer", "name", peer[:15])
        sh("ip", "link", "set", peer[:15], "netns", name)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", veth[:15])
        sh("ip", "link", "set", veth[:15], "up")
        other = OtherHost(name, host_ip)
        other.ip("addr", "add", f"{ns_ip}/30", "dev", peer[:15])
        other.ip("link", "set", peer[:15], "up")
        other.ip("link", "set", "lo", "up")
        yield other
    finally:
        subprocess.run(["ip", "link", "del", veth[:15]], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _port(address: str | None) -> int:
    assert address is not None
    return int(address.rsplit(":", 1)[1])


@needs_netns
def test_the_link_reaches_a_wildcard_listener_control(other_host: OtherHost,
                                                      node_factory: NodeFactory) -> None:
    wide = node_factory("tcp://0.0.0.0:0", key=generate_key())
    assert other_host.dial(other_host.host_ip, _port(wide.address)) == "connected"


@needs_netns
@pytest.mark.parametrize("listen", ["tcp://127.0.0.1:0", "tcp://localhost:0"])
def test_a_node_on_loopback_is_unreachable_from_another_host(
        other_host: OtherHost, node_factory: NodeFactory, listen: str) -> None:
    node = node_factory(listen)
    port = _port(node.address)
    assert other_host.dial(other_host.host_ip, port).startswith("refused")
    # A neighbour routing 127.0.0.1 over the link: the packets reach us, addressed to
    # our loopback; the kernel drops them as martians (route_localnet is off).
    other_host.ip("route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local")
    other_host.ip("route", "add", "127.0.0.1/32", "via", other_host.host_ip)
    assert other_host.dial("127.0.0.1", port) != "connected"
    socket.create_connection(("127.0.0.1", port), timeout=STEP).close()  # here it listens


def _listening_ports(pids: set[int]) -> dict[int, str]:
    """Port -> local address of every TCP listener owned by one of ``pids``."""
    out = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True,
                         timeout=STEP).stdout
    found: dict[int, str] = {}
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            local = line.split()[3]
            host, _, port = local.rpartition(":")
            found[int(port)] = host
    return found


def _tree(pid: int) -> set[int]:
    """``pid`` and its descendants (the worker command and the worker processes it runs)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True,
                         check=True, timeout=STEP).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    pids, todo = {pid}, [pid]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in pids:
                pids.add(kid)
                todo.append(kid)
    return pids


@needs_netns
def test_local_head_worker_and_bank_listen_on_loopback_only(
        other_host: OtherHost, servers: Servers, tmp_path: Path) -> None:
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0")
    worker = servers.start("worker", "--join", head.address, "-n", "1", ready=None)
    bank = servers.start("bank", "serve", "--listen", "tcp://127.0.0.1:0",
                         "--db", f"{tmp_path}/bank.db")
    # Poll until a worker process listens too (it serves objects placed on it).
    deadline = time.monotonic() + STEP * 3
    while not _listening_ports(_tree(worker.proc.pid) - {worker.proc.pid}):
        assert time.monotonic() < deadline, "the worker never listened"
        time.sleep(0.05)
    ports = _listening_ports({head.proc.pid, bank.proc.pid} | _tree(worker.proc.pid))
    assert {_port(head.address), _port(bank.address)} <= set(ports)
    assert set(ports.values()) == {"127.0.0.1"}, ports
    for port in ports:
        assert other_host.dial(other_host.host_ip, port).startswith("refused"), port


def test_the_default_listen_addresses_are_loopback() -> None:
    from netlet.apps.bank._cli import serve
    from netlet.cli._cluster import head

    for cmd in (head, serve):
        listen = next(p.default for p in cmd.params if p.name == "listen")
        assert isinstance(listen, str)
        assert listen.startswith("tcp://127.0.0.1:"), (cmd.name, listen)
