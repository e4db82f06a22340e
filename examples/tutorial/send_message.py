"""Send messages to a message server and print its replies.

``send_message(address, message)`` is the tutorial's ``sendMessage``, done
properly: the message is any value (not a ``|``-separated string), the
connection to each server is made once and reused, and the call returns the
server's reply (or raises the error the server's handler raised).

Run it against ``message_server.py``::

    python send_message.py tcp://127.0.0.1:40123 hello world
    python send_message.py --json tcp://127.0.0.1:40123 '{"to": "bank", "amount": 10}'
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import netlet


def send_message(address: str, message: Any, *, timeout: float = 10.0) -> Any:
    """Send ``message`` to the server at ``address`` and return its reply.

    The inbox handle costs nothing to make: every channel at ``address``
    shares the process's one connection to it.
    """
    inbox = netlet.connect_channel(address, "messages")
    reply = netlet.channel()  # ours; the server answers on it
    try:
        inbox.send((message, reply), timeout=timeout)
        return reply.receive(timeout=timeout)
    finally:
        # A channel sent in a message stays served by this process until it is
        # unserved; a late answer now fails on the server instead of piling up.
        if reply.exported_as is not None:
            netlet.default_node().unserve(reply.exported_as)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the server's address (its first line of output)")
    parser.add_argument("messages", nargs="+", metavar="MESSAGE", help="messages to send")
    parser.add_argument("--json", action="store_true",
                        help="parse each MESSAGE as JSON (send numbers, lists, dicts)")
    args = parser.parse_args()
    try:
        messages = [json.loads(m) for m in args.messages] if args.json else args.messages
    except json.JSONDecodeError as e:
        parser.error(f"not JSON: {e}")
    for message in messages:
        try:
            reply = send_message(args.address, message)
        except netlet.NetletConnectionError as e:
            print(f"cannot reach {args.address}: {e}", file=sys.stderr)
            return 1
        except Exception as e:
            print(f"{message!r} -> error: {type(e).__name__}: {e}")
            return 1
        print(f"{message!r} -> {reply!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
