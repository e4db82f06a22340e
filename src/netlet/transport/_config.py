"""Transport settings: the cluster key, TLS, pickle consent, limits and timeouts."""

from __future__ import annotations

import os
import secrets
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from netlet.codec import Limits
from netlet.errors import ConfigError

__all__ = ["TLSConfig", "TransportConfig", "generate_key", "load_key", "write_key"]

MIN_KEY_BYTES = 16


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Certificates for TLS; with ``cafile`` both ends verify each other (mutual TLS)."""

    certfile: str
    keyfile: str
    cafile: str | None = None
    check_hostname: bool = False
    """Node certificates name nodes, not DNS hosts; the private CA is the trust anchor."""

    def __post_init__(self) -> None:
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
    insecure: bool = False
    """Allow listening beyond loopback without a key (logged loudly)."""
    allow_pickle: bool = False
    """Accept pickled values, and only from peers that authenticated with the key."""
    tls: TLSConfig | None = None
    limits: Limits = field(default_factory=Limits)
    handshake_timeout: float = 5.0
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.key is not None and len(self.key) < MIN_KEY_BYTES:
            raise ConfigError(f"a cluster key needs at least {MIN_KEY_BYTES} bytes")
        if self.handshake_timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError("timeouts must be positive")


def generate_key() -> bytes:
    return secrets.token_bytes(32)


def write_key(
    path: str | os.PathLike[str], key: bytes | None = None, *, force: bool = False
) -> bytes:
    """Write a key file readable only by its owner; refuse to overwrite unless ``force``."""
    key = key if key is not None else generate_key()
    p = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{p} exists; pass force to overwrite it") from None
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read a key file written by ``netlet keygen``."""
    try:
        text = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read key file {path}: {e.strerror}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{path} is not a netlet key file (expected hex)") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{path}: key too short")
    return key
