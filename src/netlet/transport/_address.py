"""Addresses: ``tcp://host:port``, ``unix:///path`` and ``mem://name``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netlet.errors import ConfigError

__all__ = ["Address", "parse_address"]

SCHEMES = ("tcp", "unix", "mem")


@dataclass(frozen=True, slots=True)
class Address:
    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"tcp://{host}:{self.port}"
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return f"mem://{self.path}"

    @property
    def is_loopback(self) -> bool:
        """True when only this machine can reach it."""
        if self.scheme != "tcp":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: assume it reaches beyond this machine


def parse_address(text: str) -> Address:
    """Parse an address; a bare ``host:port`` means TCP."""
    if not isinstance(text, str) or not text:
        raise ConfigError(f"not an address: {text!r}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown scheme {scheme!r} in {text!r} (use tcp://, unix:// or mem://)")
    if scheme == "unix":
        if not rest:
            raise ConfigError(f"unix address needs a path: {text!r}")
        return Address("unix", path=rest)
    if scheme == "mem":
        if not rest:
            raise ConfigError(f"mem address needs a name: {text!r}")
        return Address("mem", path=rest)
    host, colon, port_text = rest.rpartition(":")
    if not colon or not port_text.isdigit():
        raise ConfigError(f"tcp address needs host:port: {text!r}")
    host = host.strip("[]")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port out of range in {text!r}")
    return Address("tcp", host=host or "127.0.0.1", port=port)
