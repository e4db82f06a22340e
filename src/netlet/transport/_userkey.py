"""Per-user keys: what a head, worker or bank on this machine uses when given no key.

A server that can run code or change state for its operator never runs
without a secret. Given no key on a local address (loopback TCP or a unix
socket) it uses the key file of that address in the user's private runtime
directory, creating it (mode 0600) if missing; local clients of the same
user find it there by themselves, and other users cannot read it, so their
connections fail the handshake. The directory is ``$XDG_RUNTIME_DIR/netlet``
when ``$XDG_RUNTIME_DIR`` is ours with mode 0700, else ``<tmp>/netlet-<uid>``,
which is created 0700 and refused if someone else owns it or its mode is wider.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from pathlib import Path

from netlet.errors import ConfigError
from netlet.transport._address import parse_address
from netlet.transport._config import MIN_KEY_BYTES, generate_key, write_key

__all__ = ["find_user_key", "is_local_address", "save_user_key", "server_user_key",
           "user_key_dir", "user_key_path"]

_NAME_MAX = 120


def _check_private_dir(path: Path) -> str | None:
    """Why ``path`` is not a private directory of ours, or None if it is."""
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"cannot inspect it ({e.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory (a symlink or a file)"
    if st.st_uid != os.getuid():
        return f"it belongs to uid {st.st_uid}, not to us (uid {os.getuid()})"
    if st.st_mode & 0o077:
        return f"its mode is {stat.S_IMODE(st.st_mode):04o}; it must be 0700"
    return None


def _private_dir(path: Path) -> Path:
    """``path`` as a 0700 directory of ours: created if missing, refused if not ours."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(f"cannot create the key directory {path}: {e.strerror}") from None
    why = _check_private_dir(path)
    if why is not None:
        raise ConfigError(f"refusing to keep keys in {path}: {why}. Remove it, or set "
                          "XDG_RUNTIME_DIR to a 0700 directory of yours, or pass a key file")
    return path


def user_key_dir() -> Path:
    """This user's private directory for per-address keys (created on first use)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and _check_private_dir(Path(runtime)) is None:
        return _private_dir(Path(runtime) / "netlet")
    import tempfile  # ~1.5 ms with shutil: only a process without a runtime dir pays it

    return _private_dir(Path(tempfile.gettempdir()) / f"netlet-{os.getuid()}")


def is_local_address(address: str) -> bool:
    """True for addresses only this machine reaches over a socket: loopback TCP, unix."""
    addr = parse_address(address)
    return addr.scheme == "unix" or (addr.scheme == "tcp" and addr.is_loopback)


def _key_name(address: str) -> str:
    addr = parse_address(address)
    if addr.scheme == "tcp":
        # 127.0.0.1, ::1 and localhost all mean this machine: one key per port.
        name = f"tcp-loopback-{addr.port}"
    else:
        name = f"{addr.scheme}-" + re.sub(r"[^A-Za-z0-9._-]", "_",
                                          os.path.abspath(addr.path).strip("/"))
    if len(name) > _NAME_MAX:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name[:_NAME_MAX - 17]}-{digest}"
    return name + ".key"


def user_key_path(address: str) -> Path:
    """Where the per-user key of the local ``address`` lives."""
    if not is_local_address(address):
        raise ConfigError(f"{address} is not a local address: per-user keys are for "
                          "loopback and unix sockets; give a key file (netlet keygen)")
    return user_key_dir() / _key_name(address)


def _read_private(path: Path) -> bytes | None:
    """The key in ``path`` (ours, 0600, not a symlink), None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(f"refusing the key file {path}: it is a symlink") from None
        raise ConfigError(f"cannot read the key file {path}: {e.strerror}") from None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise ConfigError(f"refusing the key file {path}: it must be a regular file of "
                              "ours with mode 0600; remove it")
        text = f.read(4096).strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{path} is not a netlet key file; remove it") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{path}: key too short; remove it")
    return key


def find_user_key(address: str) -> bytes | None:
    """The per-user key a local server at ``address`` wrote, or None (not local, none yet)."""
    if not is_local_address(address):
        return None
    return _read_private(user_key_path(address))


def server_user_key(listen: str) -> bytes:
    """The key a server about to listen on the local ``listen`` uses: the one already
    kept for that address (so a restarted server keeps it, and its clients with it),
    else a new one. Port 0 always gets a new one. Save it with ``save_user_key``."""
    if parse_address(listen).scheme == "tcp" and parse_address(listen).port == 0:
        user_key_dir()  # fail before listening if the directory is not usable
        return generate_key()
    return find_user_key(listen) or generate_key()


def save_user_key(address: str, key: bytes) -> Path:
    """Keep ``key`` as the per-user key of ``address`` (atomic replace, mode 0600)."""
    path = user_key_path(address)
    try:
        same = _read_private(path) == key
    except ConfigError:  # a bad leftover in our own directory: replace it
        same = False
    if not same:
        write_key(path, key, force=True)
    return path
