"""Addresses: ``tcp://host:port``, ``unix:///path`` and ``mem://name``."""

from __future__ import annotations

import ipaddress
import itertools
import socket
from dataclasses import dataclass, replace

from netlet.errors import ConfigError

__all__ = ["Address", "advertised_address", "parse_address"]

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


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def advertised_address(bound: str, advertise: str | None = None) -> str:
    """The address peers should dial to reach a listener bound at ``bound``.

    A listener on a wildcard host (``0.0.0.0``, ``::``) cannot hand that host
    out: a peer dialling ``0.0.0.0`` reaches itself. Such a listener advertises
    ``advertise`` if given, else this machine's outward address. ``advertise``
    is a host name or IP; the port is always the bound one.
    """
    addr = parse_address(bound)
    if addr.scheme != "tcp":
        return bound
    if advertise:
        return str(replace(addr, host=advertise.strip("[]")))
    if addr.host not in WILDCARD_HOSTS:
        return bound
    return str(replace(addr, host=outward_host(ipv6=addr.host == "::")))


def outward_host(*, ipv6: bool = False) -> str:
    """This machine's address as other machines reach it (no packet is sent).

    The address of the interface of the default route; without a default route,
    the first non-loopback address of this machine; else the host name if it
    resolves to a non-loopback address. Otherwise there is no telling, and a
    ConfigError asks for ``--advertise`` (a host name that /etc/hosts maps to
    127.0.0.1 would send every peer to itself).
    """
    probes = [(socket.AF_INET6, "2001:db8::1")] if ipv6 else []
    probes.append((socket.AF_INET, "192.0.2.1"))  # documentation ranges: never routed to
    for family, target in probes:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))
                host: str = probe.getsockname()[0]
                return host
        except OSError:
            continue
    local = _local_addresses()
    if local:
        return local[0]
    name = socket.gethostname()
    resolved: set[str] = set()
    try:
        resolved = {str(i[4][0]) for i in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
    except OSError:
        pass
    if resolved and not any(ipaddress.ip_address(a.split("%")[0]).is_loopback
                            for a in resolved):
        return name
    raise ConfigError(
        f"cannot tell which address other machines reach this one at: there is no default "
        f"route, no non-loopback address, and the host name {name!r} resolves to "
        f"{', '.join(sorted(resolved)) or 'nothing'}. Give it: --advertise HOST "
        "(advertise= in code), or listen on a specific address instead of 0.0.0.0")


def _local_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (Linux: the kernel's local routes)."""
    try:
        with open("/proc/net/fib_trie") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found: list[str] = []
    for prev, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL":
            ip = prev.strip().removeprefix("|-- ")
            if not ip.startswith("127.") and ip not in found:
                found.append(ip)
    return found
