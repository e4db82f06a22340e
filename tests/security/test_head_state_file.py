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
from tests.security._spawn import NOBODY_UID

NETLET = str(Path(sys.executable).parent / "netlet")

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
