"""The ``--help`` promises of ``netlet head``, ``worker`` and ``bank serve``, attacked.

* head: "Beyond loopback it needs --key-file (or --insecure ...)"; bank serve:
  "Beyond loopback without a key only --insecure serves"; worker: "refuse
  otherwise". Started beyond loopback with no key, each exits 1 with a
  message that says what to do, before it listens (the port stays free) and
  before it touches anything (the bank's ledger is not created).
* head and bank serve: "Stops on Ctrl-C or SIGTERM", exit 0 and no traceback,
  even when the signal comes the moment the server says it is ready.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests._support import STEP, free_port
from tests.security._spawn import NETLET, Servers, servers

__all__ = ["servers"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.timeout(60)


def _nobody_listens(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("command", ["head", "bank serve", "worker"])
def test_beyond_loopback_without_a_key_nothing_starts(servers: Servers, tmp_path: Path,
                                                     command: str) -> None:
    port = free_port("0.0.0.0")
    db = tmp_path / "bank.db"
    every: dict[str, list[str | Path]] = {
        "head": ["head", "--listen", f"tcp://0.0.0.0:{port}"],
        "bank serve": ["bank", "serve", "--listen", f"tcp://0.0.0.0:{port}", "--db", db],
        "worker": ["worker", "--join", f"tcp://192.0.2.1:{port}", "-n", "1"]}
    args = every[command]
    done = servers.run(*args, timeout=STEP * 3)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    if command == "worker":
        assert "--key-file" in done.stderr  # what to do
    else:
        assert "without a cluster key" in done.stderr
        assert "--key-file" in done.stderr  # what to do, in the command's own words
        assert "--insecure" in done.stderr
    assert _nobody_listens(port)
    assert not db.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", ["head", "bank serve"])
def test_a_signal_right_at_ready_stops_a_server_cleanly(tmp_path: Path, command: str,
                                                        sig: signal.Signals) -> None:
    """The signal arrives while the server is printing its address (its "ready" line).

    Its stdout is a pipe the test filled first, so the print blocks there: a server
    that installed its handlers only after saying it was ready dies of SIGTERM, or
    of a KeyboardInterrupt, instead of stopping cleanly.
    """
    args = {"head": ["head", "--listen", "tcp://127.0.0.1:0"],
            "bank serve": ["bank", "serve", "--listen", "tcp://127.0.0.1:0",
                           "--db", str(tmp_path / "bank.db")]}[command]
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"\n" * 65536)
    os.set_blocking(write_end, True)
    proc = subprocess.Popen([*NETLET, *args], stdin=subprocess.DEVNULL, stdout=write_end,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(write_end)
    try:
        deadline = time.monotonic() + STEP * 3
        while "pipe" not in Path(f"/proc/{proc.pid}/wchan").read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the server never blocked on its ready line"
            time.sleep(0.02)
        proc.send_signal(sig)
        with open(read_end, "rb") as pipe:  # let the print through
            pipe.read()
        assert proc.wait(STEP * 2) == 0
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STEP)
        if proc.stderr is not None:
            proc.stderr.close()



def _outward_ip() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        ip = str(s.getsockname()[0])
    return None if ip.startswith("127.") else ip


def test_an_insecure_head_serves_beyond_loopback_keyless_and_says_so(servers: Servers) -> None:
    """head --help: "--insecure  Listen beyond loopback WITHOUT a key (anyone reaching
    it can run code)". It must warn, and admit a keyless peer on a non-loopback address."""
    from netlet.node import Node

    ip = _outward_ip()
    if ip is None:
        pytest.skip("this machine has no address beyond loopback")
    head = servers.start("head", "--listen", "tcp://0.0.0.0:0", "--insecure")
    head.stderr.wait_for("INSECURE")
    assert head.address is not None
    assert head.address.startswith(f"tcp://{ip}:")
    stranger = Node()  # no key at all, from beyond loopback
    try:
        status = stranger.proxy(head.address, "netlet.head").status()
    finally:
        stranger.close()
    assert status["queued"] == 0
