"""Transport settings: the cluster key, TLS, pickle consent, limits and timeouts."""

from __future__ import annotations

import errno
import os
import secrets
import ssl
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from netlet.clock import REAL_CLOCK, Clock
from netlet.codec import Limits
from netlet.errors import ConfigError

__all__ = ["InsecureWarning", "TLSConfig", "TransportConfig", "generate_key", "load_key",
           "warn_insecure", "write_key"]

MIN_KEY_BYTES = 16


class InsecureWarning(UserWarning):
    """A node listens beyond loopback with no key (``insecure=True``): anyone may call it."""


def warn_insecure(message: str) -> None:
    """Say it where every application sees it, not only in a log nobody configured."""
    warnings.warn(message, InsecureWarning, stacklevel=3)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Certificates for TLS; both ends verify each other against ``cafile`` (mutual TLS).

    Without a CA nothing can be verified, so a ``TLSConfig`` needs ``cafile``
    unless ``verify=False`` says, explicitly, that any certificate will do.
    """

    certfile: str
    keyfile: str
    cafile: str | None = None
    check_hostname: bool = False
    """Node certificates name nodes, not DNS hosts; the private CA is the trust anchor."""
    verify: bool = True
    """False: accept any certificate on either side (encryption without authentication)."""

    def __post_init__(self) -> None:
        if self.verify and self.cafile is None:
            raise ConfigError(
                "a TLSConfig without cafile verifies no certificate on either side: give "
                "the CA from `netlet certs init` as cafile, or pass verify=False to accept "
                "any certificate (anyone could then pose as a peer)")
        if not self.verify and self.cafile is not None:
            raise ConfigError("verify=False ignores cafile: give one or the other")
        if self.check_hostname and self.cafile is None:
            raise ConfigError("check_hostname needs a cafile to check against")

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.cafile)
        ctx.load_cert_chain(self.certfile, self.keyfile)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.cafile else ssl.CERT_NONE
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        ctx.check_hostname = self.check_hostname and self.cafile is not None
        if self.cafile is None:
            ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """How connections are made and checked; shared by every connection of a node."""

    key: bytes | None = field(default=None, repr=False)
    """Cluster key: both ends prove they hold it before any other frame is decoded."""
    old_keys: tuple[bytes, ...] = field(default=(), repr=False)
    """Keys still accepted during a key rotation, never offered: a peer proving one of
    them gets in as with ``key`` (PROTOCOL.md 4.3). Empty outside a rotation."""
    insecure: bool = False
    """Allow listening beyond loopback without a key (logged loudly)."""
    allow_pickle: bool = False
    """Accept pickled values, and only from peers that authenticated with the key."""
    tls: TLSConfig | None = None
    limits: Limits = field(default_factory=Limits)
    handshake_timeout: float = 5.0
    connect_timeout: float = 5.0
    shared_memory: int = 0
    """Out-of-band buffers of at least this many bytes (``1 << 20`` is a good size) go
    through shared memory to a peer of the same user on the same host, proven by the
    key or by a unix socket (PROTOCOL.md 9.1); 0 (the default): never. Both ends must
    set it."""
    clock: Clock = field(default=REAL_CLOCK, repr=False, compare=False)
    """Where the connect and handshake timeouts and the accept backoff read the time (a
    node sets it to its own ``NodeConfig.clock``)."""

    def __post_init__(self) -> None:
        if self.key is not None and len(self.key) < MIN_KEY_BYTES:
            raise ConfigError(f"a cluster key needs at least {MIN_KEY_BYTES} bytes")
        if self.old_keys and self.key is None:
            raise ConfigError("old keys (a key rotation) need the new key as well")
        if any(len(k) < MIN_KEY_BYTES for k in self.old_keys):
            raise ConfigError(f"a cluster key needs at least {MIN_KEY_BYTES} bytes")
        if self.handshake_timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if self.shared_memory < 0:
            raise ConfigError("shared_memory must be 0 (off) or a size in bytes")


def generate_key() -> bytes:
    return secrets.token_bytes(32)


def _write_new(path: Path, key: bytes) -> None:
    """Create ``path`` (never there before, never through a symlink) holding ``key``, 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_key(
    path: str | os.PathLike[str], key: bytes | None = None, *, force: bool = False
) -> bytes:
    """Write a key file readable only by its owner; refuse to overwrite unless ``force``.

    With ``force`` an existing file (or symlink) is replaced atomically by a new
    0600 file written beside it and renamed over it: whatever mode the old file
    had, and wherever a symlink pointed, only the new file is ever written.
    """
    key = key if key is not None else generate_key()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"a cluster key needs at least {MIN_KEY_BYTES} bytes")
    p = Path(path)
    if not force:
        try:
            _write_new(p, key)
        except FileExistsError:
            raise ConfigError(f"{p} exists; pass force to overwrite it") from None
        return key
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(6)}.tmp")
    _write_new(tmp, key)
    try:
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return key


_MAX_KEY_FILE = 4096
"""Bytes of a key file read at most; keygen writes 65."""


def _open_regular(path: str, flags: int) -> int:
    """Open ``path`` without blocking, and only if it is a regular file."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read a key file written by ``netlet keygen``.

    Only a regular file is opened (a FIFO would block for ever, a device never
    end), and only its first few KiB are read: a file that long, or not hex
    text, is not one keygen wrote, and is refused rather than read whole.
    """
    try:
        with open(path, "rb", opener=_open_regular) as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise ConfigError(f"cannot read key file {path}: {e.strerror or e}") from None
    try:
        if len(data) > _MAX_KEY_FILE:
            raise ValueError("too long")
        key = bytes.fromhex(data.decode("ascii").strip())
    except ValueError:  # UnicodeDecodeError is one
        raise ConfigError(f"{path} is not a netlet key file (expected hex)") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{path}: key too short")
    return key
