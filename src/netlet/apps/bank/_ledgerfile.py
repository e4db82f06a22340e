"""The ledger's file: one bank process at a time, and a clear word when it is not a ledger.

Two banks on one SQLite file would each keep their own settled state (fences,
PIN reservations) and break every promise, so a :class:`Ledger` holds an
exclusive ``flock`` on its file for its whole life, taken before anything is
written, and a second one is refused at once with the process that holds it
(from ``/proc/locks`` where there is one). SQLite's own locks are ``fcntl``
byte-range locks, which do not interact with ``flock`` on Linux.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass

from netlet.errors import ConfigError

__all__ = ["LedgerDamaged", "LedgerFile", "LedgerInUse", "NotALedger", "open_ledger_file"]

SIDE_FILES = ("-wal", "-shm", "-journal")
"""What SQLite keeps beside the file."""


class LedgerInUse(ConfigError):
    """Another process holds the ledger: one bank per ledger file."""


class NotALedger(ConfigError):
    """The file exists but is not a bank ledger (or is empty, without ``create``)."""


class LedgerDamaged(ConfigError):
    """The ledger fails its integrity checks: refuse it rather than lose or invent money."""


@dataclass
class LedgerFile:
    """An open, exclusively locked ledger file; ``created`` if this process made it."""

    path: str
    fd: int
    created: bool

    def release(self, *, remove: bool = False) -> None:
        """Drop the lock; with ``remove``, delete the file and SQLite's side files too."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if remove:
            for suffix in ("", *SIDE_FILES):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)


def open_ledger_file(path: str) -> LedgerFile:
    """Open (creating if missing) and lock ``path``; LedgerInUse if another process has it."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"the directory {directory!r} for the ledger {path!r} does not exist; "
                          "create it first, or give another --db")
    created = False
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                created = True
            except FileExistsError:  # made by another process just now
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except IsADirectoryError:
        raise ConfigError(f"{path!r} is a directory, not a ledger file") from None
    except OSError as exc:
        raise ConfigError(f"cannot open the ledger {path!r}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise LedgerInUse(f"the ledger {path!r} is in use by {holder}; stop that bank first, "
                          "or give this one another --db") from None
    except BaseException:
        os.close(fd)
        raise
    return LedgerFile(path, fd, created)


def _holder(fd: int) -> str:
    """Who holds a flock on ``fd``'s file: "process PID (its command line)" where Linux says."""
    inode = os.fstat(fd).st_ino
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = fields[4]
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    words = f.read().split(b"\0")
                command = " ".join(w.decode(errors="replace") for w in words if w)[:200]
            except OSError:
                command = ""
            return f"process {pid}" + (f" ({command})" if command else "")
    return "another process"
