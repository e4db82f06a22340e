"""README and SECURITY.md: names starting with ``_`` are never callable. A peer tries anyway.

``test_exposure.py`` calls ``_private`` and dunders of a user class over a
link. This module tries the other ways in: a ``_`` name marked ``@expose``
(refused when the class is written), a marked public function stored under a
``_`` name, a class whose ``__getattr__`` answers every name, look-alike names
(a fullwidth low line, which Python folds to ``_`` in source but not in
``getattr``), the direct (blocking) role instead of a link, and netlet's own
exposed services: a served channel's endpoint, whose ``_`` methods would
requeue, lend or drop values, and every exposed class netlet ships.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

import netlet
from netlet.errors import ConfigError
from tests.conftest import RawClient

NodeFactory = Callable[..., netlet.Node]

CALLED: list[str] = []


@netlet.expose
def public_function(self: Any) -> str:
    CALLED.append("public_function")
    return "ran"


@netlet.expose
class Service:
    _alias = public_function  # marked, but stored under a private name
    __alias = public_function  # mangled to _Service__alias

    def __getattr__(self, name: str) -> Callable[..., str]:
        CALLED.append(f"__getattr__({name})")
        return lambda *a: "dynamic " + name

    def ok(self) -> str:
        return "ok"

    def _hidden(self) -> str:
        CALLED.append("_hidden")
        return "hidden"


PRIVATE_NAMES = ["_alias", "_Service__alias", "__alias", "_hidden", "__getattr__", "_anything",
                 "__init__", "__del__", "__class__", "__dict__", "__setattr__", "_",
                 "__", "\uff3fhidden", "_hidden ", " _hidden"]


def test_marking_a_private_name_is_refused_when_the_class_is_written() -> None:
    for name in ("_secret", "__secret", "__call__"):
        def method(self: Any) -> None:
            pass

        method.__name__ = name
        with pytest.raises(ConfigError, match="private or dunder"):
            netlet.expose(method)


def _raw_call(address: str, target: str, method: str, role: str = "link") -> tuple[int, Any]:
    with RawClient.connect(address) as raw:
        raw.handshake(role=role)
        raw.send_msg([1, 7, target, method, [], None])
        kind, cid, value = raw.recv_msg()
    assert cid == 7
    if kind == 3:  # ERROR: ext 11 = [type_name, args, message, traceback]
        value = msgpack.unpackb(value.data, raw=False)[0]
    return kind, value


@pytest.mark.parametrize("role", ["link", "direct"])
def test_private_names_are_refused_on_links_and_direct_connections(
        node_factory: NodeFactory, role: str) -> None:
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(Service(), "svc")
    assert server.address is not None
    CALLED.clear()
    for name in PRIVATE_NAMES:
        assert _raw_call(server.address, "svc", name, role) == (3, "netlet.errors.NotExposed"), name
    assert CALLED == []  # not even __getattr__ was asked
    assert _raw_call(server.address, "svc", "ok", role) == (2, "ok")  # the control


def test_a_served_channels_private_methods_are_refused(node_factory: NodeFactory) -> None:
    server = node_factory("tcp://127.0.0.1:0")
    ch: netlet.Channel = netlet.channel(buffer=4)
    server.serve(ch, "jobs")
    ch.send("kept")
    assert server.address is not None
    endpoint = server.served("jobs")
    privates = sorted(n for n, _ in inspect.getmembers(type(endpoint)) if n.startswith("_"))
    assert {"_peer_changed", "_lend", "_drop", "_take_back", "_wake"} <= set(privates)
    for name in privates:
        assert _raw_call(server.address, "jobs", name) == (3, "netlet.errors.NotExposed"), name
    assert ch.receive(timeout=5) == "kept"  # nothing was requeued, lent or dropped
    ch.send("again")
    assert ch.receive(timeout=5) == "again"


def _netlet_classes() -> list[type]:
    found: list[type] = []
    for info in pkgutil.walk_packages(netlet.__path__, "netlet."):
        if info.name.endswith("__main__") or ".cli" in info.name or ".tour" in info.name:
            continue  # command-line entry points: nothing exposed, importing runs them
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue  # an optional extra (numpy, cloudpickle) not installed
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if c.__module__ == module.__name__]
    return found


def test_no_class_netlet_ships_exposes_a_private_name() -> None:
    exposed = {c: netlet.node.exposed_methods(c) for c in _netlet_classes()}
    exposed = {c: m for c, m in exposed.items() if m}
    names = {c.__name__ for c in exposed}
    assert {"ChannelEndpoint", "Head"} <= names, names  # the sweep sees the services
    for cls, methods in exposed.items():
        assert not [m for m in methods if m.startswith("_")], cls
