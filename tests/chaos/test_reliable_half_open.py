"""Fallacy 1 again, the half-open connection: one direction of a link drops everything.

A client on one host waits on a long call to a node on another; then every
packet in one direction is lost (the other still flows, so neither kernel sees
a reset or an error). netlet's keepalive must notice (docs/PROTOCOL.md §5.6), and the call fails
with ``ConnectionLost``:

* a call waited on through the main link (here a ``future`` call): the peer,
  silent for 3 x ``keepalive`` (6 s), is disconnected by the node's watchdog,
  which checks every 0.5 s: at most 6.5 s after the last frame that got
  through;
* a blocking call (its own direct connection): the caller pings the peer after
  ``keepalive`` seconds (2 s) without the answer and gives up once that ping
  went unanswered for 3 x ``keepalive``, waiting in slices of ``keepalive``:
  8 s after the call was sent, plus the time to notice.

Once the path heals, the next
call connects again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.hosts import Network

KEEPALIVE = 2.0
BOUNDS = {"future": 3 * KEEPALIVE + 0.5, "blocking": 4 * KEEPALIVE}  # docs/PROTOCOL.md §5.6
SLACK = 1.5  # a loaded 2-core machine runs the watchdog late, never early


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("lost", "how"), [("replies", "blocking"), ("requests", "future")])
def test_keepalive_finds_a_half_open_connection_within_its_bound(
        network: Callable[..., Network], key_file: Path, lost: str, how: str) -> None:
    bound = BOUNDS[how]
    net = network()
    server_host, client_host = net.add_host("srv"), net.add_host("cli")
    server = server_host.spawn(sys.executable, "-m", "tests.chaos._peers", "serve", key_file,
                               "7400")
    address = server.stdout.wait_for(r"^tcp://", timeout=20).string.strip()
    client = client_host.spawn(sys.executable, "-m", "tests.chaos._peers", "call", key_file,
                               address, "60", how, stdin=True)
    client.stdout.wait_for(r"^calling", timeout=20)
    if lost == "replies":
        server_host.drop_to(client_host)
    else:
        client_host.drop_to(server_host)
    dropped_at = time.monotonic()
    m = client.stdout.wait_for(r"^(lost|done) (\S+) ?(\S*)", timeout=bound + SLACK + 5)
    assert m[1] == "lost", client.output()
    assert m[2] == "ConnectionLost", client.output()
    detected = float(m[3]) - dropped_at  # CLOCK_MONOTONIC is one clock for every namespace
    assert detected <= bound + SLACK, f"keepalive took {detected:.1f} s; {client.output()}"
    server_host.heal_to(client_host)
    client_host.heal_to(server_host)
    assert client.popen.stdin is not None
    client.popen.stdin.write("again\n")
    client.popen.stdin.flush()
    code = client.wait(40)
    again = client.stdout.find(r"^again (\S+) (\S+)")
    assert code == 0, client.output()
    assert again is not None, client.output()
    print(f"\nFIGURES half-open/{lost} lost, {how} call: ConnectionLost {detected:.2f} s "
          f"after the drop (bound {bound} s); next call after healing took {again[2]} s")
