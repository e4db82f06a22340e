"""The node's public seams: what other layers use instead of its private state.

One dispatcher answers calls on links and on direct connections, so a refusal
(or an outcome that cannot travel) reads the same whichever path a call took;
``peer``/``peer_of`` say what the owner of an id, or the link a proxy would
take, proved in its handshake. Under a second in all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import netlet
from netlet import expose
from netlet.errors import EncodeError, NoSuchObject, NotExposed


class Echo:
    @expose
    def echo(self, x: Any) -> Any:
        return x

    @expose
    def lump(self) -> object:
        return object()  # no codec carries it

    def hidden(self) -> None:  # not exposed
        pass



def _refusal(call: Callable[[], Any]) -> str:
    with pytest.raises((NoSuchObject, NotExposed, EncodeError)) as info:
        call()
    return f"{type(info.value).__name__}: {info.value}"


@pytest.mark.timeout(30)
def test_a_refusal_reads_the_same_on_a_direct_connection_and_on_the_link(
        node_factory: Callable[..., netlet.Node]) -> None:
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(Echo(), "svc")
    client = node_factory()
    address = server.address or ""
    good = client.proxy(address, "svc")
    assert good.echo(1) == 1  # blocking: the direct path
    assert client.caller.direct_pools() == 1
    loop = client.get_loop()

    def over_link(proxy: Any, method: str) -> Callable[[], Any]:
        async def call() -> Any:
            return await getattr(proxy, method).aio()
        return lambda: asyncio.run_coroutine_threadsafe(call(), loop).result(10)

    missing = client.proxy(address, "nobody")
    expected = ("NoSuchObject: no object named 'nobody'", "NotExposed: Echo.hidden is not",
                "EncodeError: ")
    for (proxy, method), start in zip(((missing, "echo"), (good, "hidden"), (good, "lump")),
                                      expected, strict=True):
        direct = _refusal(lambda p=proxy, m=method: getattr(p, m)())
        assert direct == _refusal(over_link(proxy, method))
        assert direct.startswith(start), direct


@pytest.mark.timeout(30)
def test_peer_and_peer_of_tell_what_the_owning_link_proved(
        node_factory: Callable[..., netlet.Node]) -> None:
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(Echo(), "svc")
    client = node_factory()
    proxy = client.proxy(server.address or "", "svc")
    assert client.peer_of(proxy.__netlet_ref__()) is None  # nothing dialed yet
    assert proxy.echo("hi") == "hi"
    seen = client.peer_of(proxy.__netlet_ref__())
    assert seen is not None
    assert seen.node == server.id
    assert server.peer(client.id) is not None
    assert server.peer(client.id).node == client.id  # type: ignore[union-attr]
    assert server.peer("0" * 32) is None
