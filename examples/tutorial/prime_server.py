"""A prime server: nodes join whenever they like and pull chunks of numbers to check.

The Stackless tutorial's ``prime-server.py``, fixed. There, the server sent
each number to the nodes in turn (a slow node held everyone up), spun in a
loop when no node was there, and forgot the numbers a dead node had been
given. Here the chunks wait in a channel, and each node's ``join`` call
pulls the next chunk only when that node is free, so a fast node takes
more; with no node, nothing runs; a chunk whose node dies goes back into
the channel for another node; and each chunk's answer is counted once.

    python prime_server.py --end 100000          # prints its address
    python prime_node.py tcp://127.0.0.1:40123   # start nodes, stop them, start more
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections import Counter

import netlet

Chunk = tuple[int, int]
"""A range of numbers, ``lo..hi`` with both ends included."""

_print_lock = threading.Lock()


def say(line: str) -> None:
    """Print one whole line: two threads print here, and print() writes the text and
    its newline separately, so without the lock their lines could interleave."""
    with _print_lock:
        print(line, flush=True)


@netlet.expose(concurrent=True)  # the join() calls of all nodes run at the same time
class PrimeServer:
    def __init__(self, todo: netlet.Channel, answers: netlet.Channel) -> None:
        self._todo = todo
        self._answers = answers
        self.first_join: float | None = None

    async def join(self, name: str, checker: netlet.Proxy) -> None:
        """Feed chunks to the node behind ``checker`` until the search is over.

        An ``async`` method runs on the node's event loop, so a thousand
        joined nodes cost a thousand coroutines, not a thousand threads.
        """
        say(f"JOIN {name}")
        self.first_join = self.first_join or time.monotonic()
        checker = checker.with_options(timeout=None)  # a chunk takes what it takes
        async for lo, hi in self._todo:  # the next chunk once this node is free; ends on close
            try:
                count = await checker.count_primes.aio(lo, hi)
            except (netlet.NetletConnectionError, asyncio.CancelledError):
                # The node died while checking (ConnectionLost), or hung up so
                # that netlet cancelled this join() call it had made.
                say(f"LOST {name}: {lo}..{hi} goes back for another node")
                self._todo.send.nowait((lo, hi))  # back in line: its buffer slot is free
                raise
            self._answers.send.nowait(((lo, hi), count, name))  # buffered: never waits


def chunks(start: int, end: int, size: int) -> list[Chunk]:
    return [(lo, min(lo + size - 1, end)) for lo in range(start, end + 1, size)]


def search(server: PrimeServer, todo: netlet.Channel, answers: netlet.Channel,
           work: list[Chunk]) -> int:
    """Put the chunks in line and count the answers: each chunk once."""
    for chunk in work:
        todo.send(chunk)  # the buffer has room for all of them: returns at once
    found: dict[Chunk, int] = {}
    by_node: Counter[str] = Counter()
    while len(found) < len(work):
        chunk, count, name = answers.receive()
        if chunk not in found:
            found[chunk] = count
            by_node[name] += 1
        rate = sum(found.values()) / (time.monotonic() - (server.first_join or 0))
        say(f"{chunk[0]}..{chunk[1]}: {count} primes from {name} "
            f"({len(found)}/{len(work)} chunks, {rate:.0f} primes/s)")
    todo.close()  # every node's join() returns: the search is over
    shares = ", ".join(f"{name} {n}" for name, n in by_node.most_common())
    say(f"chunks by node: {shares}")
    return sum(found.values())


def wait_for_nodes_to_leave(node: netlet.Node, timeout: float) -> None:
    """Wait until every node hung up, so each got its answer before we close."""
    gone = threading.Event()
    node.on_peer_change(lambda _peer, _up: None if node.connected_peers() else gone.set())
    if node.connected_peers():
        gone.wait(timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=1, help="first number (default: 1)")
    parser.add_argument("--end", type=int, default=100_000, help="last number (default: 100000)")
    parser.add_argument("--chunk", type=int, default=2_000,
                        help="numbers per chunk (default: %(default)s)")
    parser.add_argument("--listen", default="tcp://127.0.0.1:0",
                        help="address to listen on (default: %(default)s, any free port)")
    parser.add_argument("--key", metavar="FILE",
                        help="cluster key file from 'netlet keygen' (to listen beyond loopback)")
    args = parser.parse_args()
    if args.chunk < 1 or args.end < args.start:
        parser.error("need --chunk >= 1 and --end >= --start")
    work = chunks(args.start, args.end, args.chunk)
    todo, answers = netlet.channel(buffer=len(work)), netlet.channel(buffer=len(work))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM acts like Ctrl-C
    server = PrimeServer(todo, answers)
    try:
        with netlet.Node(listen=args.listen, key_file=args.key) as node:
            node.serve(server, "primes")
            say(f"{node.address}")
            total = search(server, todo, answers, work)
            seconds = time.monotonic() - (server.first_join or 0)
            say(f"DONE: {total} primes in {args.start}..{args.end} "
                f"({seconds:.2f} s since the first node joined)")
            wait_for_nodes_to_leave(node, timeout=5)
    except KeyboardInterrupt:
        return 130  # stopped before the search was over
    except netlet.ConfigError as e:  # no key to listen beyond loopback, a bad key file...
        parser.exit(2, f"prime_server.py: error: {e}\n")
    finally:
        todo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
