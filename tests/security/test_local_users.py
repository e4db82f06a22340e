"""Another user on the same machine: a keyless local head, worker or bank must refuse them.

The hole behind Ray's CVE-2023-48022: a head or worker on loopback with no
key ran ``submit("os:system", ...)`` for any process of any user, and a
worker's own listener took ``create("os:system", ...)`` directly. Now a
server that runs code or changes state for its operator (head, worker,
``bank serve``) never runs without a secret: given no key on a local address
it uses a per-user key file (0600, in a 0700 directory of that user) that
the same user's clients find by themselves, and another uid cannot read.

The attacker here really is another uid: ``nobody``, via ``setpriv``, with a
small netlet client script, against real servers over real sockets.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlet import Cluster
from netlet.errors import AuthenticationError, ConfigError
from netlet.transport import find_user_key, user_key_dir, user_key_path
from tests.conftest import STEP
from tests.security._spawn import NOBODY_UID, Servers, as_nobody, nobody_available, servers

__all__ = ["servers"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.timeout(120)

_WHY_NOT = nobody_available()
# Skipped only where it cannot run (not root, no setpriv); under CI=true it must run,
# so there a missing attacker fails the tests instead of hiding them.
needs_nobody = pytest.mark.skipif(_WHY_NOT is not None and os.environ.get("CI") != "true",
                                  reason=_WHY_NOT or "")

ATTACK_HEAD = """
import sys
from netlet import Cluster
addr, marker = sys.argv[1:3]
try:
    with Cluster(addr) as c:
        print("RAN", c.submit("os:system", "touch " + marker).result(30))
except Exception as e:
    print("REFUSED", type(e).__name__, e)
"""

ATTACK_WORKER = """
import sys
from netlet import Node
from netlet.codec import Codec, Limits
addr, marker = sys.argv[1:3]
body = Codec(Limits()).encode_value([["touch " + marker], None])
try:
    with Node(call_timeout=30) as n:
        print("RAN", n.proxy(addr, "netlet.worker").create("os:system", body, "x", {}))
except Exception as e:
    print("REFUSED", type(e).__name__, e)
"""

ATTACK_BANK = """
import sys
from netlet.apps.bank import BankClient
addr = sys.argv[1]
try:
    c = BankClient(addr, timeout=10, retry_for=0)
    print("RAN", c.call("accounts"))
except Exception as e:
    print("REFUSED", type(e).__name__, e)
"""

READ_KEY = """
import sys
try:
    open(sys.argv[1]).read()
    print("READ")
except OSError as e:
    print("DENIED", type(e).__name__)
"""


@pytest.fixture
def marker() -> Iterator[Path]:
    """A path the attack would create (as the worker's user) if its code ran."""
    path = Path(tempfile.mkdtemp(prefix="netlet-pwn-")) / "pwned"
    yield path
    path.unlink(missing_ok=True)
    path.parent.rmdir()


def _worker_address(head: str) -> str:
    """The worker's listening address, from the head (as the head's own user)."""
    with Cluster(head) as cluster:
        for _ in range(int(STEP * 20)):
            nodes = [n for n in cluster.status()["nodes"] if n["role"] == "worker" and n["alive"]]
            if nodes:
                return str(nodes[0]["address"])
            cluster.node._closed.wait(0.05)
    raise AssertionError("no worker joined the head")


@needs_nobody
def test_another_user_cannot_run_code_through_a_keyless_local_head(
        servers: Servers, marker: Path) -> None:
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0")
    servers.start("worker", "--join", head.address, "-n", "1", ready=None)
    with Cluster(head.address) as mine:  # the same user needs no key: it finds it
        assert mine.submit("os:getpid").result(STEP * 3) > 0
    out = as_nobody(ATTACK_HEAD, head.address, str(marker))
    assert "REFUSED AuthenticationError" in out.stdout, (out.stdout, out.stderr)
    assert not marker.exists()


@needs_nobody
def test_another_user_cannot_place_code_on_a_worker_directly(
        servers: Servers, marker: Path) -> None:
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0")
    servers.start("worker", "--join", head.address, "-n", "1", ready=None)
    worker = _worker_address(head.address)
    assert worker.startswith("tcp://127.0.0.1:")
    out = as_nobody(ATTACK_WORKER, worker, str(marker))
    assert "REFUSED AuthenticationError" in out.stdout, (out.stdout, out.stderr)
    assert not marker.exists()


@needs_nobody
def test_another_user_cannot_make_operator_calls_on_a_local_bank(
        servers: Servers, tmp_path: Path) -> None:
    bank = servers.start("bank", "serve", "--listen", "tcp://127.0.0.1:0",
                         "--db", tmp_path / "bank.db")
    mine = servers.run("bank", "open", "alice", "--bank", bank.address, "--pin-stdin",
                       stdin="4321\n")
    assert mine.returncode == 0, mine.stderr  # its own user: no key to pass
    out = as_nobody(ATTACK_BANK, bank.address)
    # Refused in the handshake (the bank client reports it as NotAdmitted): no key.
    assert out.stdout.startswith("REFUSED "), (out.stdout, out.stderr)
    assert "requires the cluster key" in out.stdout, (out.stdout, out.stderr)
    listed = servers.run("bank", "list", "--bank", bank.address)
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout


@needs_nobody
def test_another_user_cannot_make_operator_calls_on_a_bank_on_a_unix_socket(
        servers: Servers, tmp_path: Path) -> None:
    """README: a bank on a unix socket without --key-file holds its per-user key too. The
    socket is left open to everyone here, so only the key stands in the way."""
    public = Path(tempfile.mkdtemp(prefix="netlet-unix-bank-"))
    try:
        public.chmod(0o755)
        sock = public / "bank.sock"
        bank = servers.start("bank", "serve", "--listen", f"unix://{sock}",
                             "--db", tmp_path / "bank.db")
        sock.chmod(0o777)  # anyone may connect: the handshake must refuse them
        assert stat.S_IMODE(user_key_path(bank.address).stat().st_mode) == 0o600
        mine = servers.run("bank", "open", "alice", "--bank", bank.address, "--pin-stdin",
                           stdin="4321\n")
        assert mine.returncode == 0, mine.stderr  # its own user finds the key
        out = as_nobody(ATTACK_BANK, bank.address)
        assert out.stdout.startswith("REFUSED "), (out.stdout, out.stderr)
        assert "requires the cluster key" in out.stdout, (out.stdout, out.stderr)
        listed = servers.run("bank", "list", "--bank", bank.address)
        assert listed.returncode == 0, listed.stderr
        assert "alice" in listed.stdout
    finally:
        servers.close()
        for leftover in public.iterdir():
            leftover.unlink()
        public.rmdir()


@needs_nobody
def test_the_per_user_key_file_is_unreadable_by_another_user(servers: Servers) -> None:
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0")
    path = user_key_path(head.address)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert str(path) in head.stderr.wait_for(r"per-user key").string
    out = as_nobody(READ_KEY, str(path))
    assert out.stdout.strip() == "DENIED PermissionError", (out.stdout, out.stderr)


def test_a_worker_with_no_key_for_its_head_refuses_to_start(servers: Servers) -> None:
    # The per-user key of a head that never ran here does not exist: no keyless worker.
    gone = servers.run("worker", "--join", "tcp://127.0.0.1:1", "-n", "1", timeout=STEP * 3)
    assert gone.returncode != 0
    assert "no cluster key for the head" in gone.stderr
    beyond = servers.run("worker", "--join", "tcp://192.0.2.1:7340", timeout=STEP * 3)
    assert beyond.returncode != 0
    assert "--key-file" in beyond.stderr


def test_a_restarted_head_keeps_its_key_so_its_workers_rejoin(servers: Servers) -> None:
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0")
    key = user_key_path(head.address).read_bytes()
    head.proc.terminate()
    head.proc.wait(STEP)
    again = servers.start("head", "--listen", head.address)
    assert user_key_path(again.address).read_bytes() == key


# -- the runtime directory: refuse one another user could have prepared ---------------


@pytest.fixture
def no_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No usable XDG_RUNTIME_DIR: keys go to <TMPDIR>/netlet-UID (TMPDIR made private here)."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    return tmp_path / f"netlet-{os.getuid()}"


def test_the_fallback_directory_is_created_private(no_xdg: Path) -> None:
    assert user_key_dir() == no_xdg
    assert stat.S_IMODE(no_xdg.stat().st_mode) == 0o700


def test_a_fallback_directory_with_a_wider_mode_is_refused(no_xdg: Path, servers: Servers,
                                                            tmp_path: Path) -> None:
    no_xdg.mkdir(mode=0o700)
    no_xdg.chmod(0o777)  # what another user could have pre-created in /tmp
    with pytest.raises(ConfigError, match="mode is 0777"):
        user_key_dir()
    env_head = servers.run("head", "--listen", "tcp://127.0.0.1:0", timeout=STEP * 3)
    assert env_head.returncode != 0
    assert "refusing to keep keys" in env_head.stderr
    assert list(no_xdg.iterdir()) == []  # no key was written into it


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_a_fallback_directory_owned_by_another_user_is_refused(no_xdg: Path) -> None:
    no_xdg.mkdir(mode=0o700)
    os.chown(no_xdg, NOBODY_UID, NOBODY_UID)
    with pytest.raises(ConfigError, match=f"belongs to uid {NOBODY_UID}"):
        user_key_dir()


def test_a_symlink_in_place_of_the_fallback_directory_is_refused(no_xdg: Path,
                                                                 tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    no_xdg.symlink_to(target)
    with pytest.raises(ConfigError, match="not a directory"):
        user_key_dir()


def test_an_unsafe_xdg_runtime_dir_is_not_used(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path, no_xdg: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    assert user_key_dir() == no_xdg  # the fallback, never the group/world-readable one


def test_a_key_file_readable_by_others_is_refused() -> None:
    path = user_key_path("tcp://127.0.0.1:1")
    path.write_text("00" * 32)
    try:
        path.chmod(0o644)
        with pytest.raises(ConfigError, match="mode 0600"):
            find_user_key("tcp://127.0.0.1:1")
    finally:
        path.unlink()


def test_status_reaches_a_local_head_without_a_key(servers: Servers) -> None:
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0")
    shown = servers.run("status", "--head", head.address, "--json")
    assert shown.returncode == 0, shown.stderr
    assert '"queued": 0' in shown.stdout


def test_a_head_with_a_key_file_refuses_a_keyless_local_client(
        servers: Servers, tmp_path: Path) -> None:
    """Given --key-file, no per-user key is written, and a client without the key fails."""
    key_file = tmp_path / "k"
    assert servers.run("keygen", key_file).returncode == 0
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0", "--key-file", key_file)
    assert not user_key_path(head.address).exists()
    with pytest.raises(AuthenticationError, match="cluster key"):
        Cluster(head.address).close()
