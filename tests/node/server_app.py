"""A served object for the node tests, run as a real process: `python server_app.py [key-file]`.

Prints the node's address on its first stdout line, then serves until killed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import netlet


@netlet.expose
class Service:
    def __init__(self) -> None:
        self.log: list[Any] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def echo(self, value: Any) -> Any:
        return value

    def add(self, a: int, b: int = 0) -> int:
        return a + b

    async def echo_aio(self, value: Any) -> Any:
        await asyncio.sleep(0)
        return value

    def fail(self, kind: str) -> None:
        if kind == "value":
            raise ValueError("bad value", 42)
        if kind == "key":
            raise KeyError("missing")
        raise RuntimeError("custom failure")

    def sleep(self, seconds: float) -> float:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(seconds)
        with self._lock:
            self.active -= 1
        return seconds

    def max_concurrency(self) -> int:
        return self.max_active

    def record(self, item: Any) -> None:
        self.log.append(item)

    def records(self) -> list[Any]:
        return list(self.log)

    def call_back(self, target: Any, value: Any) -> Any:
        # A blocking call made from inside a served method, to the caller's own object.
        return target.receive(value)

    def length(self, data: bytes) -> int:
        return len(data)

    def _private(self) -> str:
        return "never"


@netlet.expose
class Probe:
    """A second object: answers while ``Service`` is busy (each object runs on its own)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def active(self) -> int:
        return self.service.active


def main() -> None:
    key_file = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None
    port = sys.argv[2] if len(sys.argv) > 2 else "0"
    node = netlet.Node(listen=f"tcp://127.0.0.1:{port}", key_file=key_file)
    service = Service()
    node.serve(service, "svc")
    node.serve(Probe(service), "probe")
    print(node.address, flush=True)
    node.wait()


if __name__ == "__main__":
    main()
