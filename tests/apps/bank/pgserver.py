"""A private PostgreSQL server for the bank's tests and bench B2.

``PgServer.start()`` runs ``initdb`` into a fresh temporary directory and
starts ``postgres`` on a free loopback port with the binaries of this machine's
PostgreSQL packages (``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses
to run as root, so when we are root the data directory is given to an
unprivileged user (``nobody``) and the server runs as that user (``setpriv``).
Connections need a password (SCRAM, a random one per server): other local
users cannot use it. ``new_db()`` hands out a fresh schema (as a URL whose
``search_path`` names it) per ledger, so tests never see each other's books.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests._support import free_port

__all__ = ["PgServer", "pg_bin"]


def pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` that has ``initdb``, or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    return Path(max(found, key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit()
                    else 0)).parent


class PgServer:
    """One PostgreSQL server in a temporary directory; ``stop()`` removes everything."""

    def __init__(self, *, durable: bool = False, max_connections: int = 400) -> None:
        bin_dir = pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/"
                               "initdb); `make test` installs it: apt-get install postgresql")
        self.bin = bin_dir
        self.durable, self.max_connections = durable, max_connections
        self.root = Path(tempfile.mkdtemp(prefix="netlet-pg-"))
        self.data = self.root / "data"
        self.password = secrets.token_hex(16)
        self.port = 0
        self._schemas = 0
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("nobody")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                        "--clear-groups", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://netlet:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        result = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120,
                                cwd=self.root, env={**os.environ, "LC_ALL": "C.UTF-8"})
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {result.stdout}{result.stderr}")

    def start(self) -> PgServer:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            os.chown(pwfile, pwd.getpwnam("nobody").pw_uid, -1)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "netlet",
                  "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        options = [
            "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={self.root}",
            f"-c max_connections={self.max_connections}", "-c shared_buffers=64MB",
        ]
        if not self.durable:  # tests kill the bank, never this server: skip its fsyncs
            options += ["-c fsync=off", "-c full_page_writes=off"]
        for _ in range(5):  # a free port may be taken before the server binds it
            self.port = free_port()
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self.root / "log"), "-w", "-t", "60", "-o",
                          " ".join([f"-p {self.port}", *options]), "start")
                return self
            except RuntimeError:
                continue
        raise RuntimeError(f"postgres did not start: {self.log()}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "log").read_text(errors="replace")[-2000:]
        return ""

    def new_db(self) -> str:
        """A URL for a new, empty ledger: a schema of its own, made by the first ledger."""
        self._schemas += 1
        name = f"t{os.getpid()}_{self._schemas}_{secrets.token_hex(3)}"
        return f"{self.url}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
