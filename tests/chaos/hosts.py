"""Real hosts for the chaos suite: network namespaces on one bridge, and faults on their links.

A :class:`Network` is a Linux bridge in the test's own (root) namespace with a
private /24 (``10.213.N.0/24``, or ``fd13:213:0:N::/64`` for IPv6-only
networks). Each :class:`Host` is a network namespace joined to the bridge by a
veth pair, with its own address, loopback and routes. The test process itself
sits on the bridge (``.1``) as an observer: a fault of a host's link never
touches it.

Faults use iproute2 only (no iptables, nftables or netem needed):

* :meth:`Host.cut` / :meth:`Host.restore`: the host's bridge port is disabled
  (both directions dropped inside the "switch"; the host sees no carrier loss,
  as with a cable cut further along);
* :meth:`Host.drop_to`: everything the host sends to one peer is lost, the
  other direction still flows (a one-way drop): the host's neighbour entry for
  the peer points at a MAC address nobody has, so its frames are flooded by
  the bridge and dropped by every other host's NIC; the host's kernel sees
  nothing wrong;
* :meth:`Host.limit`: a token bucket (``tc tbf``) on both ends of the link
  caps its bandwidth;
* latency comes from :mod:`tests.chaos.relay`, a userspace TCP relay.

Processes started with :meth:`Host.spawn` run inside the namespace
(``ip netns exec``); :class:`Proc` can SIGKILL, SIGSTOP and SIGCONT them.

Everything is removed by :meth:`Network.close` (the ``network`` fixture calls
it whatever the test did): every process still in a namespace is SIGKILLed, the
namespaces, veths and the bridge are deleted. Names are unique per network
(the bridge ``nlcN`` is created atomically, N picked among free ones), so tests
can run in parallel; a network left by a killed test run (its owner pid, kept
in the bridge's alias, is gone) is removed when the next one is made.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STEP, LineReader

__all__ = ["NETLET", "ROOT", "WHY_NOT", "Host", "Network", "Proc", "require_hosts"]

ROOT = Path(__file__).resolve().parents[2]
NETLET = [sys.executable, "-c", "from netlet.cli import main; main(prog_name='netlet')"]
BOGUS_MAC = "02:00:5e:10:00:01"  # locally administered, never given to a veth here
_made = 0  # networks made by this process


def _why_not() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to make network namespaces (run as root, or set CI=true to insist)"
    for tool in ("ip", "bridge", "tc"):
        if shutil.which(tool) is None:
            return f"needs iproute2's `{tool}`"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"ip netns is not available: {probe.stderr.strip()}"
    return None


WHY_NOT = _why_not()


def require_hosts() -> None:
    """Skip the test with the reason, or fail it under ``CI=true`` (there it must run)."""
    if WHY_NOT is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the chaos hosts cannot be built: {WHY_NOT}")
    pytest.skip(f"chaos hosts not built: {WHY_NOT}")


def sh(*args: str, check: bool = True, timeout: float = STEP) -> subprocess.CompletedProcess[str]:
    """Run a command (iproute2), raising with its stderr on failure."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale() -> None:
    """Remove networks whose owner process is gone (a test run killed before its teardown)."""
    links = json.loads(sh("ip", "-j", "link", "show", "type", "bridge").stdout or "[]")
    for link in links:
        name, alias = link.get("ifname", ""), link.get("ifalias", "")
        m = re.fullmatch(r"netlet-chaos pid=(\d+)", alias)
        if re.fullmatch(r"nlc\d+", name) and m and not _pid_alive(int(m[1])):
            _delete_namespaces(f"{name}-")
            sh("ip", "link", "del", name, check=False)


def _delete_namespaces(prefix: str) -> None:
    for line in sh("ip", "netns", "list").stdout.splitlines():
        ns = line.split()[0] if line.strip() else ""
        if ns.startswith(prefix):
            _kill_namespace(ns)
            sh("ip", "netns", "del", ns, check=False)


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process in the namespace and wait until they are gone."""
    deadline = time.monotonic() + STEP
    while time.monotonic() < deadline:
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
        pids = [p for p in pids if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)  # polling for the kernel to reap them, with a deadline


class Proc:
    """A process on a host: its output read line by line, signals by pid."""

    def __init__(self, host: Host, args: list[str], popen: subprocess.Popen[str]) -> None:
        self.host, self.args, self.popen = host, args, popen
        self.stdout = LineReader(popen.stdout, f"{host.name} stdout of {args[-1]!r}")
        self.stderr = LineReader(popen.stderr, f"{host.name} stderr of {args[-1]!r}")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def children(self) -> list[int]:
        """Pids of this process's children (``netlet worker``'s worker processes)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def wait(self, timeout: float = STEP) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> int:
        """SIGKILL and reap; closes the pipes once they are read to the end."""
        self.signal(signal.SIGKILL)
        code = self.popen.wait(STEP)
        self.close_pipes()
        return code

    def close_pipes(self) -> None:
        for reader in (self.stdout, self.stderr):
            reader.join()
        for pipe in (self.popen.stdout, self.popen.stderr, self.popen.stdin):
            if pipe is not None:
                pipe.close()

    def output(self) -> str:
        return f"stdout:\n{self.stdout.text()}\nstderr:\n{self.stderr.text()}"


class Host:
    """A network namespace on the bridge: its address, processes and link faults."""

    def __init__(self, net: Network, name: str, index: int) -> None:
        self.net, self.name = net, name
        self.ns = f"{net.bridge}-{name}"
        self.port = f"{net.bridge}p{index}"  # the bridge's end of the veth pair
        self.ip = net.address(index + 2)
        self.procs: list[Proc] = []
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.port, "type", "veth", "peer", "name", "eth0",
           "netns", self.ns)
        sh("ip", "link", "set", self.port, "master", net.bridge, "up")
        self.ipcmd("link", "set", "lo", "up")
        flags = ["nodad"] if net.family == 6 else []
        self.ipcmd("addr", "add", f"{self.ip}/{net.prefix}", "dev", "eth0", *flags)
        self.ipcmd("link", "set", "eth0", "up")
        if net.family == 6:
            self.ipcmd("-6", "route", "add", "default", "via", net.address(1))
        else:
            self.ipcmd("route", "add", "default", "via", net.address(1))
        link = json.loads(self.ipcmd("-j", "link", "show", "eth0").stdout)
        self.mac: str = link[0]["address"]

    def ipcmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.ns, *args)

    def url(self, port: int) -> str:
        return f"tcp://[{self.ip}]:{port}" if ":" in self.ip else f"tcp://{self.ip}:{port}"

    # -- processes ----------------------------------------------------------------------

    def spawn(self, *args: str | Path, env: dict[str, str] | None = None,
              cwd: Path | None = None, stdin: bool = False) -> Proc:
        """Start ``args`` inside this host's namespace."""
        argv = [str(a) for a in args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200",
                    "PYTHONPATH": str(ROOT), **(env or {})}
        popen = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv], env=full_env, cwd=cwd or ROOT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc = Proc(self, argv, popen)
        self.procs.append(proc)
        return proc

    def netlet(self, *args: str | Path, **options: Any) -> Proc:
        """``netlet ARGS`` on this host (this interpreter, this checkout)."""
        return self.spawn(*NETLET, *args, **options)

    def python(self, code: str, *args: str | Path, **options: Any) -> Proc:
        return self.spawn(sys.executable, "-c", code, *args, **options)

    def run(self, *args: str | Path, timeout: float = 60.0, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``args`` to completion inside the namespace; output captured as text."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
        return subprocess.run(["ip", "netns", "exec", self.ns, *map(str, args)], input=input,
                              capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT, check=False)

    # -- faults -------------------------------------------------------------------------

    def cut(self) -> None:
        """Disable the host's port on the bridge: nothing in or out, no carrier change."""
        sh("bridge", "link", "set", "dev", self.port, "state", "0")

    def restore(self) -> None:
        sh("bridge", "link", "set", "dev", self.port, "state", "3")

    def readdress(self, index: int) -> str:
        """Move the host to the subnet's ``index``-th address (as DHCP might): the old one
        is gone at once, connections bound to it with it."""
        new = self.net.address(index)
        flags = ["nodad"] if self.net.family == 6 else []
        if self.net.family == 4:  # else deleting the primary address takes the new one too
            sh("ip", "netns", "exec", self.ns, "sysctl", "-qw",
               "net.ipv4.conf.eth0.promote_secondaries=1")
        self.ipcmd("addr", "add", f"{new}/{self.net.prefix}", "dev", "eth0", *flags)
        self.ipcmd("addr", "del", f"{self.ip}/{self.net.prefix}", "dev", "eth0")
        self.ipcmd("route", "replace", "default", "via", self.net.address(1))
        self.ip = new
        return new

    def drop_to(self, other: Host) -> None:
        """Lose every packet this host sends to ``other``; ``other``'s packets still arrive."""
        self.ipcmd("neigh", "replace", other.ip, "lladdr", BOGUS_MAC, "dev", "eth0",
                   "nud", "permanent")

    def heal_to(self, other: Host) -> None:
        self.ipcmd("neigh", "replace", other.ip, "lladdr", other.mac, "dev", "eth0",
                   "nud", "reachable")

    def limit(self, bytes_per_second: int) -> None:
        """Cap the link at ``bytes_per_second`` each way (a token bucket on both veth ends)."""
        rate = f"{bytes_per_second * 8}bit"
        burst = str(max(bytes_per_second // 50, 16 * 1024))  # 20 ms of traffic
        sh("tc", "qdisc", "replace", "dev", self.port, "root", "tbf", "rate", rate,
           "burst", burst, "latency", "200ms")
        sh("ip", "netns", "exec", self.ns, "tc", "qdisc", "replace", "dev", "eth0", "root",
           "tbf", "rate", rate, "burst", burst, "latency", "200ms")

    def close(self) -> None:
        _kill_namespace(self.ns)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(STEP)
            proc.close_pipes()
        # Deleting the veth now (not with the namespace, which the kernel does later)
        # frees its name for the next network at once.
        sh("ip", "link", "del", self.port, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


class Network:
    """A bridge with a private subnet, and the hosts on it (see the module's docstring)."""

    def __init__(self, family: int = 4) -> None:
        self.family = family
        self.prefix = 64 if family == 6 else 24
        self.hosts: list[Host] = []
        _remove_stale()
        global _made
        _made += 1
        start = (os.getpid() * 7 + _made * 13) % 250  # not the one just freed
        for i in range(250):
            n = (start + i) % 250
            made = sh("ip", "link", "add", f"nlc{n}", "type", "bridge", check=False)
            if made.returncode == 0:
                self.n, self.bridge = n, f"nlc{n}"
                break
        else:
            raise RuntimeError("no free chaos network (nlc0..nlc249 all exist)")
        try:
            sh("ip", "link", "set", self.bridge, "alias", f"netlet-chaos pid={os.getpid()}")
            flags = ["nodad"] if family == 6 else []
            sh("ip", "addr", "add", f"{self.address(1)}/{self.prefix}", "dev", self.bridge,
               *flags)
            sh("ip", "link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def address(self, i: int) -> str:
        """The ``i``-th address of the subnet (1: the observer, the test process)."""
        return f"fd13:213:0:{self.n:x}::{i:x}" if self.family == 6 else f"10.213.{self.n}.{i}"

    @property
    def observer_ip(self) -> str:
        return self.address(1)

    def add_host(self, name: str) -> Host:
        host = Host(self, name, len(self.hosts))
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            try:
                host.close()
            except Exception as e:
                print(f"chaos: could not remove {host.ns}: {e}", file=sys.stderr)
        _delete_namespaces(f"{self.bridge}-")
        sh("ip", "link", "del", self.bridge, check=False)
