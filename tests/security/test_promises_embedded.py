"""README: "The embedded ``Executor()`` uses a fresh key of its own over a unix socket in a
private directory." Another local user tries to reach it.

The embedded head and its workers run code sent by value (pickle is on), so
the promise matters: another user of the machine (the ``nobody`` user here)
tries to list the directory and to connect to every socket in it, and gets
nothing. Our own raw client, which can reach the socket, is refused by the
handshake: the key is not one any file holds. Two executors hold different
keys.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from netlet.cluster import Cluster, Executor
from netlet.errors import AuthenticationError, HandshakeError
from netlet.transport import find_user_key
from tests.conftest import RawClient
from tests.security._spawn import as_nobody, nobody_available

pytestmark = pytest.mark.timeout(60)

_WHY_NOT = nobody_available()
# Skipped only where it cannot run (not root, no setpriv); under CI=true it must run.
needs_nobody = pytest.mark.skipif(_WHY_NOT is not None and os.environ.get("CI") != "true",
                                  reason=_WHY_NOT or "")

ATTACK = """
import os, socket, sys
directory, sockets = sys.argv[1], sys.argv[2:]
try:
    print("LISTED", os.listdir(directory))
except OSError as e:
    print("NOLIST", e.errno)
for path in sockets:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        print("CONNECTED", path)
    except OSError as e:
        print("REFUSED", e.errno)
    finally:
        s.close()
"""


def _embedded(ex: Executor) -> Path:
    embedded = ex._embedded
    assert embedded is not None
    return Path(embedded.address.removeprefix("unix://")).parent


@needs_nobody
def test_another_user_cannot_reach_the_embedded_executor() -> None:
    if _WHY_NOT is not None:
        pytest.fail(f"CI=true but the attacker cannot run: {_WHY_NOT}")
    with Executor(1) as ex:
        assert ex.submit(pow, 2, 10).result(30) == 1024
        directory = _embedded(ex)
        info = directory.stat()
        assert info.st_uid == os.getuid()
        assert stat.S_IMODE(info.st_mode) == 0o700
        sockets = sorted(str(p) for p in directory.iterdir() if p.is_socket())
        assert len(sockets) >= 2  # the head's and the worker's
        attack = as_nobody(ATTACK, str(directory), *sockets)
        lines = attack.stdout.split("\n")
        assert attack.returncode == 0, attack.stderr
        assert lines[0].startswith("NOLIST"), attack.stdout
        assert all(line.startswith("REFUSED") for line in lines[1:] if line), attack.stdout
        assert ex.submit(pow, 3, 3).result(30) == 27  # and it still serves us


def test_the_embedded_key_is_fresh_and_in_no_file() -> None:
    with Executor(1) as first, Executor(1) as second:
        a, b = first._embedded, second._embedded
        assert a is not None
        assert b is not None
        assert a.key != b.key
        assert find_user_key(a.address) is None  # no per-user key file stands for it
        with RawClient.connect(a.address) as raw:  # our own keyless client is refused
            raw.hello()
            reply = raw.recv_msg()
            assert reply == {"error": "auth", "message": "this node requires the cluster key"}
        with pytest.raises((AuthenticationError, HandshakeError)), \
                Cluster(a.address) as c:
            c.status()
