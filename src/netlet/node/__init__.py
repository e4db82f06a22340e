"""A process's endpoint: connections, dispatch, proxies and calls in every style.

The statistics records (``NodeStatistics``, ``LinkStatistics``) are imported on
first use: a process that never asks for them does not pay for them at start.
"""

from typing import TYPE_CHECKING

from netlet.node._actor import current_peer
from netlet.node._expose import MethodInfo, expose, exposed_methods, is_exposed
from netlet.node._link import Link
from netlet.node._messages import Kind
from netlet.node._node import (
    Node,
    NodeConfig,
    NodeOptions,
    RefFactory,
    RefProvider,
    default_node,
    open_node,
    register_ref_type,
    register_serve_adapter,
)
from netlet.node._proxy import DEFAULT_TIMEOUT, Method, Proxy, Timeout, checked_timeout

if TYPE_CHECKING:
    from netlet.node._stats import LinkStatistics, NodeStatistics

__all__ = [
    "DEFAULT_TIMEOUT",
    "Kind",
    "Link",
    "LinkStatistics",
    "Method",
    "MethodInfo",
    "Node",
    "NodeConfig",
    "NodeOptions",
    "NodeStatistics",
    "Proxy",
    "RefFactory",
    "RefProvider",
    "Timeout",
    "checked_timeout",
    "current_peer",
    "default_node",
    "expose",
    "exposed_methods",
    "is_exposed",
    "open_node",
    "register_ref_type",
    "register_serve_adapter",
]


def __getattr__(name: str) -> object:
    """``NodeStatistics`` and ``LinkStatistics``, imported on first use."""
    if name in ("LinkStatistics", "NodeStatistics"):
        from netlet.node import _stats

        return getattr(_stats, name)
    raise AttributeError(f"module 'netlet.node' has no attribute {name!r}")
