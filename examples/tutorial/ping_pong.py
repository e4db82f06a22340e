"""Ping-pong over channels: two tasklets in one process, then two processes.

The Stackless tutorial's first channel program, on netlet. Two players hit a
ball back and forth: each receives it on its own channel, prints it, and
sends it on to the other's channel. The ``player`` function is the same in
every mode; only where the channels come from changes.

Run it::

    python ping_pong.py                      # one process, two tasklets
    python ping_pong.py --two-processes      # starts pong in a second process

or by hand, in two terminals::

    python ping_pong.py --role pong          # prints its address, e.g. tcp://127.0.0.1:40123
    python ping_pong.py --role ping --connect tcp://127.0.0.1:40123
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from typing import TextIO

import netlet

Channel = netlet.Channel | netlet.RemoteChannel


def player(name: str, inbox: Channel, outbox: Channel, rounds: int, serve: bool = False) -> None:
    """Receive the ball on ``inbox``, print it, hit it back on ``outbox``.

    A ball of 0 ends the game, as in the Stackless original's
    ``while ping_channel.receive():``. A send returns only once the other
    player has received the ball, so after sending the 0 both know the game
    is over, and the process that owns the channels may exit.
    """
    if serve:
        outbox.send(1)
    while ball := inbox.receive():
        print(f"{name} {ball}", flush=True)
        if ball >= rounds:
            outbox.send(0)
            return
        outbox.send(ball + 1)


def one_process(rounds: int) -> None:
    """Both players as tasklets, talking over two local channels."""
    ping_channel, pong_channel = netlet.channel(), netlet.channel()
    pong = netlet.spawn(player, "pong", pong_channel, ping_channel, rounds)
    ping = netlet.spawn(player, "ping", ping_channel, pong_channel, rounds, serve=True)
    ping.join()
    pong.join()


def pong_server(listen: str, rounds: int) -> None:
    """Own both channels, serve them by name, and play pong on them."""
    with netlet.Node(listen=listen) as node:
        ping_channel, pong_channel = netlet.channel(), netlet.channel()
        node.serve(ping_channel, "ping")
        node.serve(pong_channel, "pong")
        print(node.address, flush=True)
        player("pong", pong_channel, ping_channel, rounds)


def ping_client(address: str, rounds: int) -> None:
    """Use the other process's channels: the same player, remote channels."""
    with netlet.Node() as node:
        ping_channel = netlet.connect_channel(address, "ping", node=node)
        pong_channel = netlet.connect_channel(address, "pong", node=node)
        player("ping", ping_channel, pong_channel, rounds, serve=True)


def two_processes(rounds: int) -> int:
    """Start pong in a child process, then play ping against it."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--role", "pong", "--rounds", str(rounds)],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        address = child.stdout.readline().strip()  # pong's first line: its address
        echo = threading.Thread(target=_echo, args=(child.stdout, f"  [pid {child.pid}] "),
                                daemon=True)
        echo.start()  # show what pong prints, as it prints it
        ping_client(address, rounds)
        echo.join()
        return child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


def _echo(stream: TextIO, prefix: str) -> None:
    for line in stream:
        print(prefix + line, end="", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="hits before the game ends")
    parser.add_argument("--role", choices=["ping", "pong"],
                        help="play one side only (pong listens, ping connects)")
    parser.add_argument("--listen", default="tcp://127.0.0.1:0",
                        help="where pong listens (default: %(default)s, any free port)")
    parser.add_argument("--connect", metavar="ADDRESS", help="the pong process's address")
    parser.add_argument("--two-processes", action="store_true",
                        help="start pong in a child process and play ping against it")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM acts like Ctrl-C
    try:
        if args.role == "pong":
            pong_server(args.listen, args.rounds)
        elif args.role == "ping":
            if not args.connect:
                parser.error("--role ping needs --connect ADDRESS")
            ping_client(args.connect, args.rounds)
        elif args.two_processes:
            return two_processes(args.rounds)
        else:
            one_process(args.rounds)
    except KeyboardInterrupt:
        return 130
    except netlet.NetletConnectionError as e:  # pong is not there, or went away
        print(f"ping_pong.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
