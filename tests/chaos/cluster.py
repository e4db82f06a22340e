"""A netlet cluster on chaos hosts: a head, workers, and an observer on the bridge.

The observer is a :class:`netlet.Cluster` in the test process, dialling the
head across the bridge from the root namespace: a fault on a host's link never
cuts it off, so it can time what the head sees (:meth:`Observer.wait`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import netlet
from netlet.cluster import Cluster
from netlet.transport import TLSConfig
from tests.chaos.hosts import Host, Proc

__all__ = ["HEAD_PORT", "Observer", "start_head", "start_worker", "worker_nodes"]

HEAD_PORT = 7340  # one head per namespace: the port is the host's own


def start_head(host: Host, key_file: Path, *extra: str | Path) -> tuple[Proc, str]:
    """``netlet head`` listening on every address of ``host``; returns it and its address."""
    anywhere = f"tcp://[::]:{HEAD_PORT}" if ":" in host.ip else f"tcp://0.0.0.0:{HEAD_PORT}"
    head = host.netlet("head", "--listen", anywhere, "--key-file", key_file, *extra)
    line = head.stdout.wait_for(r"^tcp://", timeout=20)
    return head, line.string.strip()


def start_worker(host: Host, head: str, key_file: Path, processes: int = 1,
                 *extra: str) -> Proc:
    return host.netlet("worker", "--join", head, "--key-file", key_file, "-n",
                       str(processes), *extra)


def worker_nodes(status: dict[str, Any], pids: list[int]) -> list[dict[str, Any]]:
    """The live worker entries of ``status`` whose pid is one of ``pids``."""
    return [n for n in status["nodes"]
            if n["role"] == "worker" and n["alive"] and n["pid"] in pids]


class Observer:
    """The test's own view of the head, from the bridge (never behind a fault)."""

    def __init__(self, head: str, key_file: Path, tls: TLSConfig | None = None) -> None:
        self._node = netlet.Node(key_file=str(key_file), tls=tls, call_timeout=30) if tls \
            else None
        self.cluster = Cluster(head, key_file=str(key_file), node=self._node)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.cluster.status()
        return status

    def wait(self, what: str, ok: Callable[[dict[str, Any]], bool],
             timeout: float = 30.0, every: float = 0.1) -> float:
        """Poll the head's status until ``ok(status)``; returns the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        status: dict[str, Any] = {}
        while True:
            try:
                status = self.status()
                if ok(status):
                    return time.monotonic() - start
            except netlet.NetletError:
                pass  # the head is away (restarting): keep asking
            if time.monotonic() > deadline:
                pytest.fail(f"not seen within {timeout} s: {what}; last status: {status}")
            time.sleep(every)  # polling interval of a condition with a deadline

    def close(self) -> None:
        self.cluster.close()
        if self._node is not None:
            self._node.close()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
