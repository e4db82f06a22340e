"""The head's --state file against another local user: it holds every queued task's
arguments and every result, so only its owner may read it, and a file another user
owns (planted in a shared directory) is never used as the queue. Real head, real
client; about two seconds."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlet import Cluster
from tests.conftest import STEP
from tests.security._spawn import NOBODY_UID, as_nobody, nobody_available

NETLET = str(Path(sys.executable).parent / "netlet")
DAEMON_UID = 1  # a second user, who plants files for the head's user (nobody)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can enter (as a project directory usually is)."""
    d = Path(tempfile.mkdtemp(prefix="netlet-state-"))
    d.chmod(0o755)
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def _start_head(state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([NETLET, "head", "--listen", "tcp://127.0.0.1:0", "--state",
                             str(state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_the_state_file_is_readable_by_its_owner_only(shared_dir: Path) -> None:
    state = shared_dir / "head.db"
    head = _start_head(state)
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        assert address, head.stderr.read() if head.stderr else ""
        cluster = Cluster(address)
        try:
            cluster.submit("operator:add", "a secret argument", "!")  # no worker: stays queued
        finally:
            cluster.close()
    finally:
        head.terminate()
        head.communicate(timeout=STEP)
    files = [p for p in shared_dir.iterdir() if p.name.startswith("head.db")]
    assert state in files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, f"{p.name} is {oct(p.stat().st_mode)}"


@pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true",
                    reason="planting a file of another user needs root (chown)")
def test_a_state_file_planted_by_another_user_is_refused(shared_dir: Path) -> None:
    state = shared_dir / "head.db"
    state.touch(mode=0o666)
    os.chown(state, NOBODY_UID, NOBODY_UID)  # the attacker's, writable by them
    head = _start_head(state)
    try:
        _out, err = head.communicate(timeout=STEP)
    finally:
        if head.poll() is None:  # it took the file: stop it, then fail below
            head.kill()
            head.communicate(timeout=STEP)
    assert head.returncode == 1, err
    assert "Traceback" not in err
    assert f"uid {NOBODY_UID}" in err
    assert state.stat().st_size == 0  # not made into a queue


_OPEN_STATE = """\
import sys
from netlet.cluster._store import HeadStore
from netlet.errors import ConfigError
try:
    store = HeadStore(sys.argv[1])
    store._db.execute("CREATE TABLE secrets (x)")
    store._db.execute("INSERT INTO secrets VALUES ('a task argument')")
    print("opened", flush=True)
except ConfigError as e:
    print("refused:", e, flush=True)
"""


@pytest.mark.skipif(nobody_available() is not None, reason=str(nobody_available()))
def test_side_files_planted_by_another_user_are_refused(shared_dir: Path) -> None:
    """SQLite keeps the newest writes in head.db-wal (and its index in -shm), and uses
    such files as it finds them: planted world-writable by another user in a shared
    directory, they would hold every task's arguments for that user to read."""
    shared = shared_dir
    shared.chmod(0o1777)  # as /tmp is: the attacker can write in it, the head too
    planted = [shared / "head.db-wal", shared / "head.db-shm"]
    for p in planted:
        p.touch(mode=0o666)
        p.chmod(0o666)
        os.chown(p, DAEMON_UID, DAEMON_UID)  # the attacker's, not the head's (nobody)

    result = as_nobody(_OPEN_STATE, str(shared / "head.db"))

    assert result.stdout.startswith("refused:"), result.stdout + result.stderr
    assert f"uid {DAEMON_UID}" in result.stdout
    assert [p.stat().st_size for p in planted] == [0, 0]  # nothing written to them
