"""A listener that closes gives back every socket it accepted, even one it had no time to serve.

Found by the promise audit: a connection accepted in the same loop step as
``Listener.close()`` had its serving task cancelled before the task ever ran,
so the code that closes the socket on failure never ran either: the socket
was left to the garbage collector (a ``ResourceWarning``, and a descriptor
held until then). Here the accept and the close are made to happen in one
step on purpose, with real sockets.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

from netlet.transport import Connection, PeerInfo, TransportConfig, listen
from tests.conftest import arun

pytestmark = pytest.mark.timeout(30)


def test_a_connection_accepted_as_the_listener_closes_is_closed() -> None:
    async def main() -> None:
        def on_connection(conn: Connection, info: PeerInfo) -> None:
            conn.close()

        listener = await listen("tcp://127.0.0.1:0", TransportConfig(), "n" * 32, on_connection)
        clients = [socket.create_connection(("127.0.0.1", listener.bound.port))
                   for _ in range(5)]
        try:
            listener._on_accept()  # accept them all now: their tasks are queued, not started
            assert len(listener._handshakes) == 5
            await listener.close()  # ... and cancelled before their first step
        finally:
            for client in clients:
                client.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        arun(main())
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []


def test_the_event_loop_is_the_one_closing_accepted_sockets() -> None:
    """The control: with a served step in between, the same sockets were always closed."""
    async def main() -> None:
        listener = await listen("tcp://127.0.0.1:0", TransportConfig(), "n" * 32,
                                lambda conn, info: conn.close())
        client = socket.create_connection(("127.0.0.1", listener.bound.port))
        try:
            listener._on_accept()
            await asyncio.sleep(0)  # the task starts and owns the socket
            await listener.close()
        finally:
            client.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        arun(main())
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
