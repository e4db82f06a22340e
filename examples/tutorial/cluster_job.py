"""Run tasks on a cluster started with ``netlet head`` and ``netlet worker`` (chapter 8).

    netlet head --listen tcp://0.0.0.0:7108 --key-file cluster.key        # machine A
    netlet worker --join tcp://A:7108 --key-file cluster.key              # machine B
    python cluster_job.py tcp://A:7108 --key cluster.key                  # anywhere

Without an address, ``$NETLET_HEAD`` names the head (and ``$NETLET_KEY_FILE``
the key); with neither, ``netlet.Executor()`` starts its own embedded cluster.
"""

from __future__ import annotations

import argparse

from squares import square

import netlet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("head", nargs="?", help="the head's address [default: $NETLET_HEAD]")
    parser.add_argument("--key", help="the cluster key file [default: $NETLET_KEY_FILE]")
    parser.add_argument("--count", type=int, default=8, help="how many squares")
    args = parser.parse_args()
    try:
        run(args)
    except netlet.NetletError as e:  # no head there, no key for it, a wrong key...
        parser.exit(1, f"cluster_job.py: cannot use the cluster: {e}\n")


def run(args: argparse.Namespace) -> None:
    with netlet.Executor(args.head, key_file=args.key) as executor:
        for n, (value, host, pid) in enumerate(executor.map(square, range(args.count))):
            print(f"{n}^2 = {value} (on {host}, worker pid {pid})")


if __name__ == "__main__":
    main()
