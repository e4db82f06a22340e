"""A message server: handler tasklets take messages from a channel and answer each one.

The Stackless tutorial's ``simpleMessageSocket`` on netlet. There, every
message opened a new socket, was a string ended by ``\\r\\n\\r\\n`` and got
a fixed "OK". Here a message is any value, it arrives on a channel the
server serves by name, and it carries its own reply channel: the handler
sends the answer (or the exception it raised) back on it. Clients keep one
connection however many messages they send (see ``send_message.py``).

Run it::

    python message_server.py                 # prints its address, e.g. tcp://127.0.0.1:40123
    python send_message.py tcp://127.0.0.1:40123 hello world

Stop it with Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
from collections.abc import Callable
from typing import Any

import netlet

Action = Callable[[Any], Any]
"""What the server does with one message; its return value is the reply."""

_numbers = itertools.count(1)


def default_action(message: Any) -> str:
    """Print the message and acknowledge it; refuse empty ones."""
    if message in ("", None):
        raise ValueError("empty message")
    number = next(_numbers)
    print(f"received #{number}: {message!r}", flush=True)
    return f"OK #{number}"


def handle(inbox: netlet.Channel, action: Action) -> None:
    """Answer messages from ``inbox`` until it is closed."""
    for message, reply in inbox:
        try:
            answer = action(message)
        except Exception as e:
            reply.send_exception(e)  # the sender's receive() raises it
        else:
            reply.send(answer)


def serve_messages(node: netlet.Node, action: Action = default_action, *,
                   name: str = "messages", handlers: int = 4) -> netlet.Channel:
    """Serve a channel called ``name`` on ``node``, answered by ``handlers`` tasklets.

    Close the returned channel to stop the handlers.
    """
    inbox = netlet.channel()
    node.serve(inbox, name)
    for _ in range(handlers):
        netlet.spawn(handle, inbox, action)
    return inbox


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="tcp://127.0.0.1:0",
                        help="address to listen on (default: %(default)s, any free port)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM acts like Ctrl-C
    try:
        with netlet.Node(listen=args.listen) as node:
            inbox = serve_messages(node)
            try:
                print(node.address, flush=True)
                node.wait()  # until Ctrl-C or SIGTERM
            finally:
                inbox.close()  # the handlers' loops end
    except KeyboardInterrupt:
        pass
    except netlet.ConfigError as e:  # e.g. listening beyond loopback, which needs a key
        parser.exit(2, f"message_server.py: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
