"""A real netlet server for the foreign-client test, run as a subprocess.

    python protocol_server.py [--key-file PATH]

Listens on a free loopback port, serves a ``Calc`` under the name ``calc``, a
channel with a buffer of 4 under the name ``box`` and, with a key, a cluster
head under ``netlet.head`` (PROTOCOL.md 16),
prints its address (``tcp://127.0.0.1:PORT``) as the first line on stdout and
runs until it is killed. The test reads that line to know the server is ready.
"""

from __future__ import annotations

import argparse
from typing import Any

import netlet
from netlet.cluster import Head

__all__ = ["Calc", "main"]


@netlet.expose
class Calc:
    """Served as "calc": one call at a time, in arrival order."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def echo(self, x: Any) -> Any:
        return x

    def fail(self, text: str) -> None:
        raise ValueError(text, 42)

    def record(self, x: Any) -> None:
        """Meant for oneway calls: remembers ``x``; ``recorded`` reads it back."""
        self.seen.append(x)

    def recorded(self) -> list[Any]:
        return self.seen

    def call_back(self, target: Any, x: Any) -> Any:
        """Calls ``target.double(x)`` (an object the caller serves) and adds one."""
        return target.double(x) + 1

    def _hidden(self) -> str:
        return "never reachable"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key-file", default=None)
    args = parser.parse_args()
    with netlet.Node(listen="tcp://127.0.0.1:0", key_file=args.key_file) as node:
        node.serve(Calc(), "calc")
        node.serve(netlet.channel(4), "box")
        if args.key_file is not None:
            head = Head(node)
            node.serve(head, "netlet.head")
            head.start()
        print(node.address, flush=True)
        node.wait()


if __name__ == "__main__":
    main()
