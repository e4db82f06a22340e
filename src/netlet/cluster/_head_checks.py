"""The head's checks of what a member sends, before anything changes (PROTOCOL.md 16).

Over the network a member acts only for the node its connection owns, and
every argument has the type the protocol names: anything else is refused with
the error the document gives, naming the argument.
"""

from __future__ import annotations

from typing import Any

from netlet.codec import short
from netlet.errors import ConfigError
from netlet.node import Proxy, current_peer

__all__: list[str] = []


def _as_itself(node: str) -> None:
    """Refuse a call from the network that names a member other than its caller."""
    caller = current_peer()
    if caller is not None and caller != node:
        raise PermissionError(
            f"this connection may act only for its own node, not {str(node)[:8]!r}: "
            "pass your own node id (a connection claiming an id another one owns has none)")


def _expect(method: str, arg: str, value: Any, cls: type) -> None:
    """Refuse an argument that is not the record the protocol names (PROTOCOL.md 16.5)."""
    if type(value) is not cls:
        raise ConfigError(f"{method}: {arg} is a {cls.__name__} record (PROTOCOL.md 16.5), "
                          f"not {type(value).__name__} {short(value)}")


def _expect_int(method: str, arg: str, value: Any) -> None:
    """Refuse an epoch or a count that is not an int (a bool is not one, PROTOCOL.md 6.4)."""
    if type(value) is not int:
        raise ConfigError(f"{method}: {arg} is an int, not {short(value)}")


def _expect_sink(method: str, sink: Any) -> None:
    """Over the network a sink is a REF (anything else leaves results nowhere to go); in
    the head's own process, an object with ``results``."""
    if not isinstance(sink, Proxy) and not callable(getattr(sink, "results", None)):
        raise ConfigError(f"{method}: sink is a reference (REF), not {short(sink)}")
