"""Who sees ``CallCancelled`` and who sees ``CancelledError``.

A caller that cancels its own call gets Python's own ``CancelledError``
(``concurrent.futures`` or ``asyncio``), as any cancelled future does; the peer
is told to stop. (A ``.future()`` call was RUNNING from the start, so its
``cancel()`` always refused, against PROTOCOL.md §5.5.)
``netlet.CallCancelled`` is the answer to a call that someone else ended while
it waited: a channel ``receive`` ended by ``cancel_receive``,
a cluster task an operator cancelled. It arrives as its own type.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

import netlet
from tests._support import STEP


@netlet.expose
class Slow:
    def __init__(self) -> None:
        self.started, self.stopped = threading.Event(), threading.Event()

    async def wait(self) -> None:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.stopped.set()
            raise


@pytest.mark.timeout(30)
def test_cancelling_your_own_call_is_a_cancelled_error(node_factory: Any) -> None:
    server = node_factory("tcp://127.0.0.1:0")
    slow = Slow()
    server.serve(slow, "slow")
    client = node_factory()
    proxy = client.proxy(server.address, "slow")

    fut = proxy.wait.future()
    assert slow.started.wait(STEP)
    assert fut.cancel()  # it was RUNNING from the start, so cancel() refused
    done, _ = concurrent.futures.wait([fut], timeout=STEP)
    assert done == {fut}  # wait() and as_completed() see the cancellation
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(STEP)
    assert slow.stopped.wait(STEP)  # the peer was told, and stopped the method

    async def main() -> None:
        slow.started.clear()
        slow.stopped.clear()
        task = asyncio.ensure_future(proxy.wait.aio())
        assert await asyncio.to_thread(slow.started.wait, STEP)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(slow.stopped.wait, STEP)

    asyncio.run(main())


@pytest.mark.timeout(30)
def test_a_call_ended_by_another_party_raises_call_cancelled(node_factory: Any) -> None:
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(netlet.channel(buffer=1), "box")
    client = node_factory()
    box = client.proxy(server.address, "box")  # the channel's endpoint, called by hand
    ticket = f"{client.id}:t1"

    waiting = box.receive.future(None, ticket)
    box.balance()  # a round trip on the same link: the receive is waiting now
    box.cancel_receive(ticket)
    with pytest.raises(netlet.CallCancelled, match="cancel_receive") as info:
        waiting.result(STEP)
    assert isinstance(info.value, netlet.NetletError)
    box.send_nowait(7)  # nothing was lost or left waiting
    assert box.receive_nowait() == ["value", 7]
