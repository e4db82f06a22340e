"""Proxies: local stand-ins for remote objects, in every call style.

``proxy.m(x)`` blocks; ``await proxy.m.aio(x)`` awaits; ``proxy.m.future(x)``
returns a ``concurrent.futures.Future``; ``proxy.m.oneway(x)`` returns at once.
One proxy may be shared by any number of threads and tasks.
"""

from __future__ import annotations

import concurrent.futures
import enum
import math
import numbers
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from netlet.codec import RemoteRef
from netlet.node._calls import Route

if TYPE_CHECKING:
    from netlet.node._link import Link
    from netlet.node._node import Node

__all__ = ["DEFAULT_TIMEOUT", "Method", "Proxy", "Timeout"]


class _Default(enum.Enum):
    TIMEOUT = "the default timeout"

    def __repr__(self) -> str:
        return "DEFAULT_TIMEOUT"


DEFAULT_TIMEOUT: Final = _Default.TIMEOUT
"""``timeout=DEFAULT_TIMEOUT`` (what leaving it out means): the node's ``call_timeout``,
or in ``with_options`` the proxy's own. The one "not given" value of every timeout."""

Timeout: TypeAlias = "float | Literal[_Default.TIMEOUT] | None"
"""A call timeout: seconds, ``None`` (wait for ever), or ``DEFAULT_TIMEOUT``."""


def checked_timeout(timeout: object) -> float | None:
    """A call timeout as given, made safe: seconds, or None for none (``inf`` too).

    Checked here, in the caller's thread: a NaN or an infinity reaching the deadline
    sweep failed on a background thread, and the call never ended."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"a call timeout is a number of seconds or None, not {timeout!r}")
    seconds = float(timeout)
    if math.isnan(seconds):
        raise ValueError("a call timeout cannot be NaN: give seconds, or None for none")
    if math.isinf(seconds):
        return None if seconds > 0 else 0.0
    return seconds


class Proxy:
    """A handle to an object served by some node; calls go over the network.

    Any attribute not starting with ``_`` names a remote method, so the proxy's
    own state lives in its ``Route`` (which the node's ``Caller`` reads).
    """

    __slots__ = ("_methods", "_node", "_route")

    def __init__(self, node: Node, ref: RemoteRef, *, timeout: Timeout = DEFAULT_TIMEOUT,
                 link: Link | None = None, pinned: bool = False) -> None:
        self._node = node
        self._route = Route(node.caller, ref, link, pinned, checked_timeout(
            node.config.call_timeout if timeout is DEFAULT_TIMEOUT else timeout))
        self._methods: dict[str, Method] = {}

    def __getattr__(self, name: str) -> Method:
        if name.startswith("_"):
            raise AttributeError(name)
        m = self._methods.get(name)
        if m is None:
            m = self._methods[name] = Method(self._route, name)
        return m

    def __netlet_ref__(self) -> RemoteRef:
        return self._route.ref

    def with_options(self, *, timeout: Timeout = DEFAULT_TIMEOUT) -> Proxy:
        """A copy of this proxy with other call options (``timeout=None``: wait forever)."""
        r = self._route
        return Proxy(self._node, r.ref, link=r.link, pinned=r.pinned,
                     timeout=r.timeout if timeout is DEFAULT_TIMEOUT else timeout)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Proxy) and other._route.ref == self._route.ref

    def __hash__(self) -> int:
        return hash(self._route.ref)

    def __repr__(self) -> str:
        return f"<netlet.Proxy {self._route.describe()}>"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("proxies travel as netlet values, not pickles: pass them as arguments")


class Method:
    """One remote method; call it directly or pick another style."""

    __slots__ = ("_name", "_route")

    def __init__(self, route: Route, name: str) -> None:
        self._route = route
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        r = self._route
        return r.caller.blocking(r, self._name, args, kwargs or None)

    def aio(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Send the call now and return an awaitable for its result.

        Call it from async code; cancelling the awaitable asks the peer to stop.
        """
        r = self._route
        return r.caller.start_aio(r, self._name, args, kwargs or None)

    def future(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Start the call and return a future; ``cancel()`` asks the peer to stop it."""
        r = self._route
        return r.caller.future(r, self._name, args, kwargs or None)

    def oneway(self, *args: Any, **kwargs: Any) -> None:
        """Send the call and return at once; no result, errors are logged remotely."""
        r = self._route
        r.caller.oneway(r, self._name, args, kwargs or None)

    def __repr__(self) -> str:
        return f"<netlet method {self._name!r} of <netlet.Proxy {self._route.describe()}>>"
