"""Where a worker listens: the address its head can reach it on."""

from __future__ import annotations

import socket
import uuid

__all__ = ["host_of", "listen_address"]


def listen_address(head: str) -> str:
    """Listen where the head can reach us: loopback for a local head, else our LAN side."""
    if head.startswith(("unix://", "mem://")):
        return f"unix:///tmp/netlet-worker-{uuid.uuid4().hex[:12]}.sock"
    host = host_of(head)
    if host in ("127.0.0.1", "localhost", "::1"):
        return "tcp://127.0.0.1:0"
    # The head's own address family: an IPv6-only head is probed over IPv6.
    family, _, _, _, target = socket.getaddrinfo(host, 9, type=socket.SOCK_DGRAM)[0]
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect(target)  # no packet is sent; this only picks the route
        ip = probe.getsockname()[0]
        return f"tcp://[{ip}]:0" if family == socket.AF_INET6 else f"tcp://{ip}:0"
    finally:
        probe.close()


def host_of(address: str) -> str:
    return address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
