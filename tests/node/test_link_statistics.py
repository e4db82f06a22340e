"""Per-connection statistics (``Node.link_statistics()``), over a real socket.

Each link counts its own frames and bytes in and out, and says how many
calls it has in flight each way and how many bytes wait to be sent. Like
the node's counters, they leave out the side connections blocking calls
borrow (``_direct.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import netlet
from netlet.node import LinkStatistics
from tests.cluster.conftest import wait_until

pytestmark = pytest.mark.timeout(30)


@netlet.expose
class Gate:
    def __init__(self) -> None:
        self.open = threading.Event()

    def wait(self) -> bool:
        return self.open.wait(20)

    def echo(self, data: bytes) -> int:
        return len(data)


@pytest.fixture
def pair() -> Iterator[tuple[netlet.Node, netlet.Node, Gate]]:
    gate = Gate()
    with netlet.Node("tcp://127.0.0.1:0") as server, netlet.Node() as client:
        server.serve(gate, "gate")
        try:
            yield server, client, gate
        finally:
            gate.open.set()


def only(node: netlet.Node) -> LinkStatistics:
    [link] = [s for s in node.link_statistics() if not s.closed]
    return link


def test_each_link_counts_its_frames_bytes_and_calls_in_flight(
        pair: tuple[netlet.Node, netlet.Node, Gate]) -> None:
    server, client, gate = pair
    proxy = client.proxy(server.address or "", "gate")
    assert client.link_statistics() == ()
    # Futures go over the link (a blocking call borrows a direct connection: not counted).
    calls = [proxy.echo.future(b"x" * 10_000) for _ in range(3)]
    assert [f.result(10) for f in calls] == [10_000] * 3
    mine = only(client)
    assert mine.peer == server.id
    assert mine.frames_out >= 3
    assert mine.bytes_out >= 30_000
    assert mine.frames_in >= 3
    assert mine.bytes_in > 0
    assert mine.bytes_out <= client.statistics().bytes_out
    assert (mine.calls_out, mine.calls_in, mine.queued_bytes) == (0, 0, 0)
    theirs = wait_until(lambda: only(server).bytes_in >= 30_000 and only(server),
                        what="the server's link counting what it read")
    assert theirs.peer == client.id

    # A call waiting at the server: in flight on both ends.
    waiting = proxy.wait.future()
    wait_until(lambda: only(server).calls_in == 1, what="the call running at the server")
    assert only(client).calls_out == 1
    gate.open.set()
    assert waiting.result(10) is True
    wait_until(lambda: only(server).calls_in == 0, what="the call finished")
    assert only(client).calls_out == 0
