"""A peer calls what the user never marked: class-level callables and inherited methods.

Attack: ``@expose`` on a class used to expose every public callable reachable
on it: a function assigned in the class body (``handler = os.remove``), a
callable object stored as a class attribute, and every method inherited from a
base that was never exposed, library classes included (``UserDict.clear``).
Now only what the user marked is reachable: methods defined (with ``def``) in
the body of an ``@expose``-d class or of an ``@expose``-d base, and methods
marked ``@expose`` one by one. Private and dunder names never, and a call runs
the method of the class, not an instance attribute that shadows its name.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

import netlet
from netlet.errors import NotExposed
from tests.conftest import RawClient

NodeFactory = Callable[..., netlet.Node]

_CALLED: list[str] = []


def module_function(*args: Any) -> str:
    _CALLED.append("module_function")
    return "module function ran"


class _Runner:
    def __call__(self, *args: Any) -> str:
        _CALLED.append("runner")
        return "callable attribute ran"


class PlainBase:
    def inherited_danger(self) -> str:
        _CALLED.append("inherited_danger")
        return "inherited method ran"

    @netlet.expose
    def marked_in_plain_base(self) -> str:
        return "marked"


@netlet.expose
class ExposedBase:
    def from_exposed_base(self) -> str:
        return "base"


@netlet.expose
class Service(ExposedBase, PlainBase):
    handler = module_function
    runner = _Runner()
    alias = staticmethod(module_function)

    def __init__(self) -> None:
        self.ok = lambda: "instance attribute ran"  # shadows the method below

    def ok(self) -> str:
        return "method"

    @staticmethod
    def static_ok() -> str:
        return "static"

    @classmethod
    def class_ok(cls) -> str:
        return "class"

    async def async_ok(self) -> str:
        return "async"

    def _private(self) -> str:
        return "private"


@netlet.expose
class Box(collections.UserDict[str, int]):
    def size(self) -> int:
        return len(self.data)


class Undecorated(ExposedBase):
    def added_later(self) -> str:
        return "not marked"

    @netlet.expose
    def marked_here(self) -> str:
        return "marked here"


@pytest.fixture
def server(node_factory: NodeFactory) -> netlet.Node:
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(Service(), "svc")
    server.serve(Box({"a": 1}), "box")
    server.serve(Undecorated(), "und")
    return server


@pytest.fixture
def remote(server: netlet.Node, node_factory: NodeFactory) -> Callable[[str], Any]:
    client = node_factory()
    assert server.address is not None
    address = server.address

    def proxy(name: str) -> Any:
        return client.proxy(address, name, timeout=5)

    return proxy


def _raw_call(address: str, target: str, method: str) -> tuple[int, Any]:
    """A CALL sent by hand (a proxy refuses ``_`` names before they leave)."""
    with RawClient.connect(address) as raw:
        raw.handshake()
        raw.send_msg([1, 1, target, method, [], None])
        kind, cid, value = raw.recv_msg()
    assert cid == 1
    if kind == 3:  # ERROR: ext 11 = [type_name, args, message, traceback]
        value = msgpack.unpackb(value.data, raw=False)[0]
    return kind, value


@pytest.mark.parametrize(("target", "method"), [
    ("svc", "handler"), ("svc", "runner"), ("svc", "alias"), ("svc", "inherited_danger"),
    ("svc", "_private"), ("svc", "__init__"), ("svc", "__class__"), ("svc", "__reduce_ex__"),
    ("box", "clear"), ("box", "update"), ("box", "pop"), ("box", "setdefault"), ("box", "copy"),
    ("und", "added_later"),
])
def test_unmarked_callables_are_not_reachable(server: netlet.Node, target: str,
                                              method: str) -> None:
    _CALLED.clear()
    assert server.address is not None
    assert _raw_call(server.address, target, method) == (3, "netlet.errors.NotExposed")
    assert _CALLED == []


@pytest.mark.parametrize(("target", "method", "expected"), [
    ("svc", "ok", "method"), ("svc", "static_ok", "static"), ("svc", "class_ok", "class"),
    ("svc", "async_ok", "async"), ("svc", "from_exposed_base", "base"),
    ("svc", "marked_in_plain_base", "marked"), ("box", "size", 1),
    ("und", "from_exposed_base", "base"), ("und", "marked_here", "marked here"),
])
def test_what_the_user_marked_is_reachable(remote: Callable[[str], Any], target: str,
                                           method: str, expected: Any) -> None:
    assert getattr(remote(target), method)() == expected
    assert getattr(remote(target), method).future().result(5) == expected


def test_the_box_is_left_untouched(remote: Callable[[str], Any]) -> None:
    box = remote("box")
    with pytest.raises(NotExposed):
        box.clear()
    assert box.size() == 1


def test_exposed_surface_is_exactly_the_marked_methods() -> None:
    assert set(netlet.node.exposed_methods(Service)) == {
        "ok", "static_ok", "class_ok", "async_ok", "from_exposed_base", "marked_in_plain_base"}
    assert set(netlet.node.exposed_methods(Box)) == {"size"}
    assert set(netlet.node.exposed_methods(Undecorated)) == {"from_exposed_base", "marked_here"}
