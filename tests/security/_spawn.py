"""Real ``netlet`` servers (head, worker, bank) in subprocesses, and attackers as another uid.

``Servers`` starts CLI commands and kills them all at the end of a test;
``as_nobody`` runs a small Python script as the ``nobody`` user (the local
attacker of the per-user key tests), with this interpreter and this source.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests._support import STEP, Proc

__all__ = ["NETLET", "NOBODY_UID", "Server", "Servers", "as_nobody", "nobody_available", "servers"]

NETLET = [sys.executable, "-c", "from netlet.cli import main; main(prog_name='netlet')"]
"""The netlet command, run by this interpreter (no console script needed)."""

SRC = Path(__file__).resolve().parents[2] / "src"
_AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _nobody_uid() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


NOBODY_UID = _nobody_uid()

_TREE: Path | None = None


def _nobody_tree() -> Path:
    """A world-readable copy of netlet and msgpack for the attacker to import.

    A clone in a private directory (``mktemp -d`` is 0700), and its venv, are
    out of another user's reach; the attacker is a separate user and gets its
    own copy of the code, as a real second user would have its own install.
    """
    global _TREE
    if _TREE is None:
        import msgpack

        tree = Path(tempfile.mkdtemp(prefix="netlet-attacker-code-"))
        for package in (SRC / "netlet", Path(msgpack.__file__).parent):
            shutil.copytree(package, tree / package.name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        for path in (tree, *tree.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        atexit.register(shutil.rmtree, tree, True)
        _TREE = tree
    return _TREE


Server = Proc
"""A ``netlet`` server started by ``Servers`` (its ``address`` once ready)."""


class Servers:
    """Starts ``netlet ...`` servers; each prints its address on stdout when ready."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def start(self, *args: str | Path, ready: str | None = r"^(tcp|unix)://\S+$") -> Server:
        server = Proc.spawn([*NETLET, *args], env={**os.environ, "COLUMNS": "250"},
                            name=str(args[0]))
        self.started.append(server)
        if ready is not None:
            server.wait_address(ready, STEP * 3)
        return server

    def run(self, *args: str | Path, stdin: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``netlet ARGS`` to completion."""
        return subprocess.run([*NETLET, *map(str, args)], input=stdin, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "COLUMNS": "250"},
                              check=False)

    def close(self) -> None:
        for server in self.started:
            server.signal(signal.SIGTERM)  # all of them first: they stop side by side
        for server in self.started:
            server.stop(signal.SIGTERM)


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        s.close()


def nobody_available() -> str | None:
    """Why scripts cannot run as ``nobody`` here (None if they can)."""
    if os.geteuid() != 0:
        return "needs root to switch to the nobody user"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux)"
    probe = as_nobody("import netlet, msgpack; print('ok')")
    if probe.stdout.strip() != "ok":
        return f"nobody cannot import netlet from {SRC}: {probe.stderr.strip()[-300:]}"
    return None


def as_nobody(script: str, *args: str, timeout: float = 60,
              extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with this interpreter as uid nobody (no groups, a clean environment).

    Its runtime directory is a fresh one of its own, removed afterwards, so its
    netlet clients leave nothing in the real temp directory.
    """
    path = str(_nobody_tree())
    runtime = tempfile.mkdtemp(prefix="netlet-nobody-")
    try:
        os.chown(runtime, NOBODY_UID, NOBODY_UID)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": path, "HOME": "/nonexistent",
               "PYTHONDONTWRITEBYTECODE": "1", "XDG_RUNTIME_DIR": runtime, **(extra_env or {})}
        # The interpreter itself, not the venv's link to it (the venv may be private).
        python = os.path.realpath(sys.executable)
        argv: Sequence[str] = [*_AS_NOBODY, python, "-c", script, *args]
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=env, cwd="/", check=False)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
