"""A man in the middle rewrites the hellos: the HMAC proofs cover every byte of both.

Attack: without TLS, a relay between a real client node and a real server node
changes a field of the client's hello (or of the server's answer) and passes
the rest through. Before the proofs covered the transcript, setting ``pickle``
in the client's hello made a server with ``allow_pickle=True`` agree to pickle
with a client that never asked, so a frame the relay slipped in after the
handshake was unpickled. Now each proof is an HMAC over SHA-256 of both hello
bodies exactly as they travelled: any changed byte fails the handshake, and
nothing is decoded.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

import netlet
from netlet.errors import HandshakeError
from tests.security._relay import Relay

KEY = bytes(range(32))

NodeFactory = Callable[..., netlet.Node]

_UNPICKLED: list[str] = []


def _mark(tag: str) -> str:
    _UNPICKLED.append(tag)
    return tag


class _Payload:
    """Unpickling it runs ``_mark``: proof that a pickle from the wire was loaded."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_mark, ("unpickled",))


@netlet.expose
class Calc:
    def add(self, a: int, b: int) -> int:
        return a + b

    def echo(self, value: Any) -> Any:
        return value


def _server(node_factory: NodeFactory) -> netlet.Node:
    server = node_factory("tcp://127.0.0.1:0", key=KEY, allow_pickle=True)
    server.serve(Calc(), "calc")
    return server


def _rewrite_first(field: str, value: Any) -> Callable[[int, bytes], bytes]:
    """Change (or add) one field of the first frame in that direction; keep the rest."""
    def rewrite(index: int, body: bytes) -> bytes:
        if index != 0:
            return body
        hello = msgpack.unpackb(body, raw=False)
        hello[field] = value
        return msgpack.packb(hello)
    return rewrite


def _reorder_first(index: int, body: bytes) -> bytes:
    """The same fields and values in another order: different bytes, same meaning."""
    if index != 0:
        return body
    hello = msgpack.unpackb(body, raw=False)
    return msgpack.packb(dict(reversed(list(hello.items()))))


CLIENT_HELLO_REWRITES = {
    "pickle": ("pickle", True),
    "role": ("role", "direct"),
    "node": ("node", "f" * 32),
    "address": ("address", "tcp://10.9.9.9:7000"),
    "nonce": ("nonce", b"\x00" * 32),
    "unknown-key": ("note", "added by the relay"),
    "version": ("netlet", 2),
    "auth": ("auth", None),
}

SERVER_HELLO_REWRITES = {
    "pickle": ("pickle", True),
    "node": ("node", "e" * 32),
    "address": ("address", "tcp://10.9.9.9:7000"),
    "nonce": ("nonce", b"\x00" * 32),
    "unknown-key": ("note", "added by the relay"),
}


def test_an_untouched_relay_is_transparent(node_factory: NodeFactory) -> None:
    """The control: the relay itself does not break the handshake or calls."""
    server = _server(node_factory)
    client = node_factory(key=KEY)
    with Relay(server.address) as relay:
        calc = client.proxy(relay.address, "calc", timeout=5)
        assert calc.add(2, 3) == 5
        assert calc.echo.future("async path").result(5) == "async path"
        assert relay.errors == []


@pytest.mark.parametrize("name", sorted(CLIENT_HELLO_REWRITES))
def test_a_rewritten_client_hello_fails_the_handshake(node_factory: NodeFactory,
                                                      name: str) -> None:
    server = _server(node_factory)
    client = node_factory(key=KEY)
    field, value = CLIENT_HELLO_REWRITES[name]
    with Relay(server.address, rewrite_up=_rewrite_first(field, value)) as relay:
        with pytest.raises(HandshakeError):
            client.proxy(relay.address, "calc", timeout=5).add(1, 2)
        assert relay.errors == []
    assert server.connected_peers() == set()


@pytest.mark.parametrize("name", sorted(SERVER_HELLO_REWRITES))
def test_a_rewritten_server_hello_fails_the_handshake(node_factory: NodeFactory,
                                                      name: str) -> None:
    server = _server(node_factory)
    client = node_factory(key=KEY)  # asks no pickle: the server answers false
    field, value = SERVER_HELLO_REWRITES[name]
    with Relay(server.address, rewrite_down=_rewrite_first(field, value)) as relay:
        with pytest.raises(HandshakeError):
            client.proxy(relay.address, "calc", timeout=5).add(1, 2)
        assert relay.errors == []
    assert server.connected_peers() == set()


def test_a_reencoded_hello_with_the_same_meaning_fails(node_factory: NodeFactory) -> None:
    """The proofs cover bytes, not values: re-encoding the same map is a change too."""
    server = _server(node_factory)
    client = node_factory(key=KEY)
    with Relay(server.address, rewrite_up=_reorder_first) as relay, \
            pytest.raises(HandshakeError):
        client.proxy(relay.address, "calc", timeout=5).add(1, 2)
    assert server.connected_peers() == set()


def test_forcing_pickle_on_does_not_get_an_injected_pickle_loaded(
        node_factory: NodeFactory) -> None:
    """The attack in full: flip the client's pickle flag, then slip a pickled CALL in."""
    _UNPICKLED.clear()
    server = _server(node_factory)
    client = node_factory(key=KEY)  # it never asks for pickle
    evil = msgpack.packb([1, 99, "calc", "echo",
                          [msgpack.ExtType(15, pickle.dumps(_Payload()))], None])

    def inject(index: int) -> list[bytes]:
        return [evil] if index == 2 else []  # after the hello and the proof

    with Relay(server.address, rewrite_up=_rewrite_first("pickle", True),
               inject_up=inject) as relay, pytest.raises(HandshakeError):
        client.proxy(relay.address, "calc", timeout=5).add(1, 2)
    assert _UNPICKLED == []
    assert server.connected_peers() == set()
