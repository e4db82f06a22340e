"""``Cluster``'s name service, actors and membership: thin calls on the head.

A mixin of :class:`netlet.cluster._client.Cluster` (as ``_head_names`` is of the
head's), kept apart so the module that submits tasks stays readable.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from netlet.cluster._member_messages import Names
from netlet.cluster._sink import ResultSink, Subscriber
from netlet.codec import Codec, RemoteRef, short
from netlet.errors import ConfigError, ProtocolError
from netlet.node import Node, Proxy

__all__ = ["ClusterNamesMixin"]


class ClusterNamesMixin:
    """``register``, ``lookup``, ``actor``, ``names``, ``unregister``, ``spawn``,
    ``subscribe`` and ``status``, for ``Cluster``."""

    node: Node
    _head: Proxy
    _codec: Codec
    _ids: itertools.count[int]
    _subscribers: list[Subscriber]
    _sink: ResultSink

    def _ref(self, fn: Callable[..., Any] | str) -> tuple[str, bytes | None]:
        raise NotImplementedError

    def register(self, name: str, obj: Any) -> RemoteRef:
        """Publish an object (exposed, a proxy or a channel) under a cluster-wide name."""
        ref = obj.__netlet_ref__() if hasattr(obj, "__netlet_ref__") else self.node.serve(obj)
        self._head.register(name, ref, self.node.id)
        return ref

    def lookup(self, name: str) -> Any:
        """The object registered as ``name`` (a proxy or channel), or None."""
        ref = self._head.lookup(name)
        return None if ref is None else self.node.from_ref(ref.__netlet_ref__())

    def actor(self, name: str) -> Proxy:
        proxy = self.lookup(name)
        if not isinstance(proxy, Proxy):
            raise ConfigError(f"no object is registered as {name!r}")
        return proxy

    def names(self) -> dict[str, list[str]]:
        """``{name: [kind, address, owner node]}`` of every registered name."""
        answer = self._head.names()
        if type(answer) is not Names:
            raise ProtocolError(f"names is answered with a Names record, not {short(answer)}")
        return {e.name: [e.kind, e.address, e.node] for e in answer.entries}

    def unregister(self, name: str) -> bool:
        return bool(self._head.unregister(name))

    def spawn(self, cls: type | str, *args: Any, name: str | None = None,
              restart: str | None = None, **kwargs: Any) -> Proxy:
        """Create an exposed object on a worker, named cluster-wide; returns a proxy.

        ``restart="on-failure"`` recreates it (with the same arguments) on another
        worker when its worker dies; the name moves with it (look it up again).
        """
        fn_id, payload = self._ref(cls)
        fns = {fn_id: payload} if payload is not None else {}
        body = self._codec.encode_value([list(args), kwargs or None])
        name = name or f"actor-{next(self._ids)}-{self.node.id[:6]}"
        ref = self._head.spawn(fn_id, body, name, restart, fns, self.node.id)
        return self.node.proxy_for(ref.__netlet_ref__())

    def subscribe(self, callback: Callable[[str, str, str, dict[str, Any]], None]) -> None:
        """``callback(kind, node, role, info)`` on every join and leave (``info``: what the
        member said of itself, ``name``, ``host``, ``pid``, ``address``, ``cores``, and
        ``detail``, why it left)."""
        self._subscribers.append(callback)
        if len(self._subscribers) == 1:
            self._head.subscribe(self._sink)

    def status(self) -> dict[str, Any]:
        return dict(self._head.status())
