"""A process's endpoint: connections, dispatch, proxies and calls in every style."""

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
from netlet.node._proxy import DEFAULT_TIMEOUT, Method, Proxy, Timeout
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
    "current_peer",
    "default_node",
    "expose",
    "exposed_methods",
    "is_exposed",
    "open_node",
    "register_ref_type",
    "register_serve_adapter",
]
