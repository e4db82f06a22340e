"""A prime node: joins a prime server whenever it likes and checks the numbers it is given.

The Stackless tutorial's ``prime-node.py`` listened on a port of its own and
sent ``JOIN|ip|port`` to the server. Here the node needs no port: it calls
the server's ``join`` with an exposed ``Checker`` object, and the server
calls that object back over the same connection for as long as there is
work, so it works from behind a firewall too. ``join`` returns when the
search is over.

    python prime_server.py --end 100000          # prints its address
    python prime_node.py tcp://127.0.0.1:40123   # as many as you like, on any machine
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import sys

import netlet


def is_prime(n: int) -> bool:
    """Trial division by odd numbers up to the square root (the seed went to n/2)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


@netlet.expose
class Checker:
    """What the server calls on this node: one chunk at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.chunks = 0

    def count_primes(self, lo: int, hi: int) -> int:
        """How many primes lie in ``lo..hi`` (both included)."""
        self.chunks += 1
        count = sum(1 for n in range(lo, hi + 1) if is_prime(n))
        print(f"{self.name}: {lo}..{hi} has {count} primes", flush=True)
        return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", help="the prime server's address")
    parser.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}",
                        help="how the server calls this node (default: host-pid)")
    parser.add_argument("--key", metavar="FILE", help="cluster key file, when the server uses one")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM acts like Ctrl-C
    checker = Checker(args.name)
    try:
        with netlet.Node(key_file=args.key) as node:
            # join() lasts as long as the search, so no call timeout. Keepalive
            # still turns a server that died or froze into ConnectionLost
            # within seconds (on the main connection a future travels on, as on
            # a blocking call's side connection).
            server = node.proxy(args.server, "primes", timeout=None)
            server.join.future(args.name, checker).result()
    except KeyboardInterrupt:
        return 130  # our chunk in progress goes to another node
    except netlet.PeerUnreachable as e:
        print(f"{args.name}: no prime server there (is the search over?): {e}", file=sys.stderr)
        return 1
    except netlet.NetletConnectionError as e:
        if checker.chunks == 0:  # it went away before giving us any work: we came late
            print(f"{args.name}: no prime server there (is the search over?): {e}",
                  file=sys.stderr)
        else:
            print(f"{args.name}: lost the server: {e}", file=sys.stderr)
        return 1
    except netlet.ConfigError as e:  # a bad key file
        parser.exit(2, f"prime_node.py: error: {e}\n")
    print(f"{args.name}: the search is over; this node checked {checker.chunks} chunks",
          flush=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
