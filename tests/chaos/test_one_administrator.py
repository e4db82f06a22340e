"""Fallacy 6, "there is one administrator": hosts upgraded at different times.

One host runs a netlet that speaks another protocol version (the next
release, played by patching the version this process announces). A client
of today's netlet on another host calls it: both sides stop at the handshake
with a clear ``VersionMismatch``, naming the versions, at once (no hang, no
garbage decoded as a call).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from netlet.transport import PROTOCOL_VERSION
from tests.chaos.hosts import Network


@pytest.mark.timeout(60)
def test_two_protocol_versions_get_a_clear_version_mismatch_on_both_sides(
        network: Callable[..., Network], key_file: Path) -> None:
    net = network()
    new_host, old_host = net.add_host("new"), net.add_host("old")
    other = PROTOCOL_VERSION + 1
    server = new_host.spawn(sys.executable, "-m", "tests.chaos._peers", "serve", key_file,
                            "7400", str(other))
    address = server.stdout.wait_for(r"^tcp://", timeout=20).string.strip()
    client = old_host.spawn(sys.executable, "-m", "tests.chaos._peers", "call", key_file,
                            address, "0", "blocking")
    assert client.wait(30) == 0, client.output()
    m = client.stdout.wait_for(r"^handshake (\S+) (\S+) (.*)$", timeout=1)
    assert m[1] == "VersionMismatch", client.output()
    assert f"protocol {other}" in m[3], m[3]  # names the server's version
    assert float(m[2]) < 5.0  # at once, not after a timeout
    logged = server.stderr.wait_for(r"refused connection from .*", timeout=10)
    assert f"protocol {PROTOCOL_VERSION}" in logged.string, server.output()
    print(f"\nFIGURES one administrator: client got VersionMismatch in {m[2]} s: {m[3]!r}; "
          f"server logged {logged.string.split(': ', 1)[-1]!r}")
    assert server.alive()
