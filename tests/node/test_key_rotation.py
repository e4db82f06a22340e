"""A cluster key rotation: a node accepts its old keys beside its new one, and no other.

Real nodes on loopback. A server holding the new key and the old one admits
clients on either; a key it never had is refused. A client holding both
reaches a server not moved yet (it accepts the server's proof by any of its
keys and proves that one). Old keys are accepted, never offered: a client
holding only the new key cannot reach a server still on the old one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest

import netlet
from netlet.transport._handshake import key_id
from tests.node.server_app import Service

NEW, OLD, STRANGER = os.urandom(32), os.urandom(32), os.urandom(32)


def _server(node_factory: Callable[..., Any], key: bytes, *old: bytes) -> str:
    server = node_factory("tcp://127.0.0.1:0", key=key, old_keys=old)
    server.serve(Service(), "svc")
    address: str = server.address
    return address


def _add(node_factory: Callable[..., Any], address: str, key: bytes, *old: bytes) -> Any:
    return node_factory(key=key, old_keys=old).proxy(address, "svc", timeout=10).add(2, 3)


def test_a_server_in_a_rotation_admits_the_new_and_the_old_key_only(
        node_factory: Callable[..., Any]) -> None:
    address = _server(node_factory, NEW, OLD)
    assert _add(node_factory, address, NEW) == 5
    assert _add(node_factory, address, OLD) == 5
    with pytest.raises(netlet.AuthenticationError):
        _add(node_factory, address, STRANGER)


def test_a_client_holding_both_keys_reaches_a_server_not_moved_yet(
        node_factory: Callable[..., Any]) -> None:
    address = _server(node_factory, OLD)
    assert _add(node_factory, address, NEW, OLD) == 5
    with pytest.raises(netlet.AuthenticationError):  # old keys are never offered by default
        _add(node_factory, address, NEW)


def test_old_keys_need_the_new_key_and_the_key_id_is_the_documented_one() -> None:
    with pytest.raises(netlet.ConfigError, match="need the new key"):
        netlet.Node(old_keys=(OLD,))
    key = bytes(range(32))
    assert key_id(key) == hashlib.sha256(b"netlet key id\0" + key).digest()[:8]
    assert key_id(key).hex() == "6763d0ca10fd184f"  # docs/PROTOCOL.md 4.3
