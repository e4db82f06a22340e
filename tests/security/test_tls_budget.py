"""Large frames over TLS are admitted against the node's memory total, as on plain TCP.

A peer that opens many TLS connections and starts a 16 MiB frame on each must not
make the node hold more than ``max_memory``: a frame that does not fit waits, its
connection unread, until memory comes back (the same rule as
``test_memory_budget.py::test_frames_in_progress_stay_within_the_total``).
"""

from __future__ import annotations

import secrets
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import LOGGING_PRELUDE, STEP, RawClient, ServerProcess
from tests.security.test_memory_budget import flood, peak, reset_peak, settled_rss

MiB = 1024 * 1024
KEY = secrets.token_bytes(32)

SERVER = """
import sys, threading
import netlet

@netlet.expose
class Svc:
    def echo(self, data):
        return data

ca, cert, key = sys.argv[2:5]
node = netlet.Node("tcp://127.0.0.1:0", key=bytes.fromhex(sys.argv[1]),
                   tls={"certfile": cert, "keyfile": key, "cafile": ca},
                   max_connection_memory=32 * 2**20, max_memory=64 * 2**20)
node.serve(Svc(), "svc")
print(node.address, flush=True)
threading.Event().wait()
"""


def _netlet(*args: str | Path) -> None:
    exe = Path(sys.executable).parent / "netlet"
    subprocess.run([str(exe), *map(str, args)], check=True, timeout=60, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    _netlet("certs", "init", "--dir", root)
    _netlet("certs", "node", "server", "--dir", root)
    _netlet("certs", "node", "client", "--dir", root)
    return root


def tls_client(address: str, pki: Path) -> RawClient:
    host = address.removeprefix("tcp://").rpartition(":")[0]
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    raw = RawClient.connect(address)
    raw.sock = ctx.wrap_socket(raw.sock, server_hostname=host)
    raw.sock.settimeout(STEP)
    return raw


@pytest.mark.timeout(120)
def test_tls_frames_in_progress_stay_within_the_total(
        server_process: Callable[..., ServerProcess], pki: Path) -> None:
    srv = server_process(LOGGING_PRELUDE + SERVER, KEY.hex(), pki / "ca.pem",
                         pki / "server.pem", pki / "server.key")
    with tls_client(srv.address, pki) as warm:  # lazily built parts are counted before
        warm.handshake(KEY)
        warm.send_msg([1, 1, "svc", "echo", [b"x"], None])
        assert warm.recv_msg()[:2] == [2, 1]
    before = settled_rss(srv.pid)
    reset_peak(srv.pid)
    clients: list[RawClient] = []
    part = secrets.token_bytes(12 * MiB)
    try:
        for _ in range(10):  # 10 x 12 MiB of 16 MiB frames that never end: 120 MiB offered
            c = tls_client(srv.address, pki)
            clients.append(c)
            c.handshake(KEY)
            flood(c, iter([struct.pack(">II", 16 * MiB, 0), part]), stall=1.5)
        time.sleep(1.0)  # let the server take in whatever it will (a bound, not a sync)
        grown = peak(srv.pid) - before
        print(f"10 unfinished 16 MiB frames over TLS: peak +{grown / MiB:.1f} MiB")
        assert grown < 64 * MiB + 16 * MiB, f"frames in progress held {grown / MiB:.0f} MiB"
    finally:
        for c in clients:
            c.close()
    with tls_client(srv.address, pki) as c:  # all given back: a big call is served again
        c.handshake(KEY)
        c.send_msg([1, 1, "svc", "echo", [b"z" * (20 * MiB)], None])
        assert c.recv_msg()[:2] == [2, 1]
