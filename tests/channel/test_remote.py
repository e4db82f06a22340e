"""Remote channels between real processes: handles in messages, failures, backpressure, keepalive.

The semantics table for remote channels is in ``test_local.py`` (parametrized
over local and remote); this file covers what only happens across processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import netlet
from netlet import ChannelClosed, ChannelTimeout, ConnectionLost, WouldBlock
from netlet.testing import VirtualClock
from netlet.transport import Connection, Faults, FaultyConnection
from tests.channel.conftest import (
    STEP,
    OwnerProcess,
    future_outcome,
    in_thread,
    outcome,
    wait_until,
)

SHORT = 0.05


def _run(coro: Any, timeout: float = STEP) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def _remote(owner: OwnerProcess, node: netlet.Node, buffer: int = 0) -> netlet.RemoteChannel:
    name = owner.control(node).new_channel(buffer)
    return netlet.connect_channel(owner.address, name, node=node)


# -- channel handles inside messages -----------------------------------------------------------


def test_a_channel_in_a_reply_arrives_as_a_remote_channel(owner: OwnerProcess,
                                                          client: netlet.Node) -> None:
    rc = owner.control(client).make_channel(2)
    assert isinstance(rc, netlet.RemoteChannel)
    rc.send("a", 0)
    rc.send("b", 0)
    assert rc.balance == 0
    assert [rc.receive(0), rc.receive(0)] == ["a", "b"]
    rc.close()
    assert rc.closed


def test_a_local_channel_sent_to_another_node_is_used_there(owner: OwnerProcess,
                                                            client: netlet.Node) -> None:
    control = owner.control(client)
    ch = netlet.channel()
    # The owner process sends into our channel, through the handle it was given...
    sending = in_thread(control.send_to, ch, ("from", "owner"), STEP)
    assert ch.receive(STEP) == ("from", "owner")
    assert sending.result(STEP) is None
    # ...and receives from it: a rendezvous across the two processes either way.
    receiving = in_thread(control.receive_from, ch, STEP)
    wait_until(lambda: ch.balance == -1, what="the owner to wait on our channel")
    ch.send({"to": "owner"}, STEP)
    assert receiving.result(STEP) == {"to": "owner"}


def test_a_handle_sent_back_to_its_owner_is_the_local_channel(
        owner: OwnerProcess, client: netlet.Node) -> None:
    control = owner.control(client)
    rc = control.make_channel(0)  # a handle that came inside a message
    assert control.is_local(rc) is True


def test_a_connected_channel_sent_back_to_its_owner_is_the_local_channel(
        owner: OwnerProcess, client: netlet.Node) -> None:
    rc = _remote(owner, client)  # a handle made by connect_channel(address, name)
    assert rc == netlet.connect_channel(owner.address, rc.name, node=client)
    assert "RemoteChannel" in repr(rc)
    assert owner.control(client).is_local(rc) is True


def test_a_name_that_is_not_a_channel(owner: OwnerProcess, client: netlet.Node) -> None:
    rc = netlet.connect_channel(owner.address, "no-such-channel", node=client)
    with pytest.raises(netlet.NoSuchObject):
        rc.receive(0)


def test_owner_side_meets_remote_side(owner: OwnerProcess, client: netlet.Node) -> None:
    control = owner.control(client)
    name = control.new_channel(0)
    rc = netlet.connect_channel(owner.address, name, node=client)
    # owner receives locally, we send remotely
    local_receive = in_thread(control.local_receive, name, STEP)
    wait_until(lambda: rc.balance == -1, what="the owner's local receive")
    rc.send(1, STEP)
    assert local_receive.result(STEP) == 1
    # owner sends locally, we receive remotely
    local_send = in_thread(control.local_send, name, 2, STEP)
    wait_until(lambda: rc.balance == 1, what="the owner's local send")
    assert rc.receive(STEP) == 2
    assert local_send.result(STEP) is None
    # the owner closes: our remote waiter wakes
    waiting = in_thread(rc.receive, STEP)
    wait_until(lambda: rc.balance == -1)
    control.local_close(name)
    assert future_outcome(waiting) is ChannelClosed
    # exceptions sent remotely are raised by a local receiver
    name2 = control.new_channel(1)
    rc2 = netlet.connect_channel(owner.address, name2, node=client)
    rc2.send_exception(KeyError("remote"), timeout=0)
    with pytest.raises(KeyError):
        control.local_receive(name2, 0)


def test_remote_select_runs_on_the_owner(owner: OwnerProcess, client: netlet.Node) -> None:
    a, b = _remote(owner, client), _remote(owner, client, 1)

    def remote_select(cases: list[netlet.Case], timeout: float) -> list[Any]:
        async def run() -> Any:
            return await a.remote_select(cases, timeout)

        return list(_run(run()))

    sender = in_thread(a.send, "from a", STEP)
    wait_until(lambda: a.balance == 1)
    assert remote_select([b.receiving(), a.receiving()], STEP) == [1, "from a"]
    assert sender.result(STEP) is None
    assert remote_select([a.receiving(), b.sending("into b")], STEP) == [1, None]
    assert b.receive(0) == "into b"
    with pytest.raises(WouldBlock):
        remote_select([a.receiving(), b.receiving()], 0)
    began = time.monotonic()
    with pytest.raises(ChannelTimeout):
        remote_select([a.receiving(), b.receiving()], SHORT)
    assert time.monotonic() - began >= SHORT * 0.9
    assert a.balance == b.balance == 0


def test_a_returned_send_survives_the_owner_closing_the_channel(
        owner: OwnerProcess, client: netlet.Node) -> None:
    """Close drains the buffer: a value whose send returned before the close is received."""
    control = owner.control(client)
    for buffer in (1, 4):
        name = control.new_channel(buffer)
        rc = netlet.connect_channel(owner.address, name, node=client)
        rc.send("before close", STEP)
        control.local_close(name)
        assert outcome(lambda rc=rc: rc.receive(STEP)) == "before close"
        assert outcome(lambda rc=rc: rc.receive(STEP)) is ChannelClosed


def test_a_cancelled_remote_receive_does_not_swallow_a_value(
        owner: OwnerProcess, client: netlet.Node) -> None:
    """The owner hands a value to our receive just as we cancel it: the reply carrying
    it crosses our CANCEL on the wire. The value must not vanish: the receive returns
    it, or it goes back to the channel for the next receiver."""
    control = owner.control(client)
    name = control.new_channel(0)
    observer = netlet.connect_channel(owner.address, name, node=client)
    lag = 0.5
    slow = netlet.Node(wrap_connection=lambda c: FaultyConnection(c, into=Faults(delay=lag)),
                       direct_calls=False)
    try:
        rc = netlet.connect_channel(owner.address, name, node=slow)

        async def race() -> Any:
            receiving = asyncio.ensure_future(rc.receive.aio(STEP))
            await asyncio.to_thread(wait_until, lambda: observer.balance == -1)
            # Returns once the owner handed the value to our receive; its reply
            # then spends `lag` seconds reaching us.
            await asyncio.to_thread(control.local_send, name, "v", STEP)
            receiving.cancel()
            return await asyncio.gather(receiving, return_exceptions=True)

        [got] = _run(race())
    finally:
        slow.close()
    if got != "v":
        assert isinstance(got, asyncio.CancelledError)
        assert outcome(lambda: observer.receive(1.0)) == "v"


# -- the owner dies ------------------------------------------------------------------------------


def _waits(rc: netlet.RemoteChannel) -> dict[str, tuple[Callable[[], Any], int]]:
    """Ways to wait on ``rc`` forever, with the balance each leaves on the owner."""
    return {
        "receive": (lambda: rc.receive(), -1),
        "send": (lambda: rc.send("v"), 1),
        "receive.aio": (lambda: _run(rc.receive.aio()), -1),
        "send.aio": (lambda: _run(rc.send.aio("v")), 1),
        "iteration": (lambda: list(rc), -1),
        "async iteration": (lambda: _run(_collect(rc)), -1),
    }


async def _collect(rc: netlet.RemoteChannel) -> list[Any]:
    return [v async for v in rc]


WAYS_TO_WAIT = ["receive", "send", "receive.aio", "send.aio", "iteration", "async iteration"]


@pytest.mark.parametrize("how", WAYS_TO_WAIT)
def test_owner_killed_while_we_wait_raises_connection_lost(
        start_owner: Callable[..., OwnerProcess], client: netlet.Node, how: str) -> None:
    owner = start_owner()
    rc = _remote(owner, client)
    wait, balance = _waits(rc)[how]
    waiting = in_thread(wait)
    wait_until(lambda: rc.balance == balance, what="the wait to reach the owner")
    began = time.monotonic()
    owner.kill()
    assert future_outcome(waiting, 5.0) is ConnectionLost
    assert time.monotonic() - began < 2.0
    # Later operations fail at once too, with a connection error (no hang).
    with pytest.raises(netlet.NetletConnectionError):
        rc.receive(0)


def test_killed_remote_receivers_do_not_swallow_values(
        owner: OwnerProcess, start_owner: Callable[..., OwnerProcess],
        client: netlet.Node) -> None:
    rc = _remote(owner, client)
    doomed = start_owner()  # a third process whose receivers wait on the owner's channel
    doomed.worker(client).start(owner.address, rc.name, [], 5, STEP)
    wait_until(lambda: rc.balance == -5, what="five remote receivers to wait")
    doomed.kill()
    senders = [in_thread(rc.send, i, STEP) for i in range(5)]
    received = [rc.receive(STEP) for _ in range(5)]
    assert sorted(received) == [0, 1, 2, 3, 4]
    assert [s.result(STEP) for s in senders] == [None] * 5
    assert rc.balance == 0
    assert outcome(lambda: rc.receive(0)) is ChannelTimeout


# -- backpressure --------------------------------------------------------------------------------

MAX_INFLIGHT = 16


def _inflight(control: netlet.Proxy, node_id: str) -> tuple[int, bool]:
    """The owner's count of incoming calls in flight from ``node_id``, and if it stopped reading."""
    count, paused = control.inflight().get(node_id, [0, False])
    return int(count), bool(paused)


@pytest.mark.parametrize("link", ["connected first", "flood opens the link"])
def test_flooding_sends_stop_the_owner_reading(start_owner: Callable[..., OwnerProcess],
                                               client: netlet.Node, link: str) -> None:
    """Many ``send.aio`` at an unbuffered channel nobody reads: the owner's link stops
    reading at ``max_inflight`` calls, so its memory does not grow with the flood."""
    owner = start_owner("--max-inflight", str(MAX_INFLIGHT))
    control = owner.control(client)
    name = control.new_channel(0)
    n = 2000

    async def flood() -> tuple[list[tuple[int, bool]], list[Any], tuple[int, bool]]:
        async with netlet.open_node() as flooder:
            if link == "connected first":
                await flooder.proxy(owner.address, "control").inflight.aio()
            rc = netlet.connect_channel(owner.address, name, node=flooder)
            sends = [asyncio.ensure_future(rc.send.aio(i, 3 * STEP)) for i in range(n)]
            await asyncio.to_thread(
                wait_until, lambda: _inflight(control, flooder.id)[1],
                what="the owner to stop reading the flood")
            # No event says "nothing more was read": watch for a while instead.
            watched = await asyncio.to_thread(
                lambda: [_inflight(control, flooder.id) for _ in range(30)])
            received = await asyncio.to_thread(control.local_drain, name, n, STEP)
            await asyncio.gather(*sends)
            after = await asyncio.to_thread(_inflight, control, flooder.id)
            return watched, received, after

    watched, received, after = _run(flood(), timeout=4 * STEP)
    counts = [count for count, _ in watched]
    assert max(counts) <= MAX_INFLIGHT, (
        f"{max(counts)} of {n} calls in flight with max_inflight={MAX_INFLIGHT}: {watched}")
    assert all(paused for _, paused in watched), watched
    assert received == list(range(n))  # then everything arrived, in order
    assert after == (0, False)


def test_backpressure_does_not_look_like_a_dead_owner(
        start_owner: Callable[..., OwnerProcess], client: netlet.Node) -> None:
    """An owner that stopped reading our flood is busy, not dead: keepalive must not
    turn backpressure into ConnectionLost for the calls it will serve later."""
    owner = start_owner("--max-inflight", str(MAX_INFLIGHT))
    control = owner.control(client)
    name = control.new_channel(0)
    keepalive, n = 0.2, 4 * MAX_INFLIGHT

    async def flood() -> tuple[list[Any], list[Any]]:
        async with netlet.open_node(keepalive=keepalive) as flooder:
            await flooder.proxy(owner.address, "control").inflight.aio()
            rc = netlet.connect_channel(owner.address, name, node=flooder)
            sends = [asyncio.ensure_future(rc.send.aio(i, 3 * STEP)) for i in range(n)]
            await asyncio.to_thread(
                wait_until, lambda: _inflight(control, flooder.id)[1],
                what="the owner to stop reading the flood")
            # Longer than keepalive's 3 silent intervals; any failure ends the wait early.
            done, _ = await asyncio.wait(sends, timeout=3 * keepalive + 1.0,
                                         return_when=asyncio.FIRST_EXCEPTION)
            failed = [outcome(s.result) for s in done if s.exception() is not None]
            if failed:
                for s in sends:
                    s.cancel()
                await asyncio.gather(*sends, return_exceptions=True)
                return failed, []
            received = await asyncio.to_thread(control.local_drain, name, n, STEP)
            await asyncio.gather(*sends)
            return failed, received

    failed, received = _run(flood())
    assert failed == [], f"{len(failed)} sends failed while the owner was busy: {failed[:3]}"
    assert received == list(range(n))


# -- keepalive -------------------------------------------------------------------------------------


def _partitionable_node(keepalive: float, clock: VirtualClock | None = None,
                        ) -> tuple[netlet.Node, list[FaultyConnection]]:
    conns: list[FaultyConnection] = []

    def wrap(conn: Connection) -> Connection:
        faulty = FaultyConnection(conn)
        conns.append(faulty)
        return faulty

    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    return netlet.Node(keepalive=keepalive, wrap_connection=wrap, direct_calls=False,
                       **options), conns


def test_a_silent_owner_is_lost_just_after_three_keepalives(owner: OwnerProcess,
                                                            client: netlet.Node) -> None:
    # On a virtual clock: the boundary is checked both ways, and nothing waits for it.
    keepalive, clock = 2.0, VirtualClock()
    name = owner.control(client).new_channel(0)
    node, conns = _partitionable_node(keepalive, clock)
    try:
        rc = netlet.connect_channel(owner.address, name, node=node)
        waiting = in_thread(rc.receive, STEP)
        wait_until(lambda: rc.balance == -1, what="the receive to reach the owner")
        [conn] = conns
        conn.partition()  # from now on the owner says nothing, and hears nothing
        wait_until(lambda: clock.pending >= 1, what="the node's sweep to wait on the clock")
        clock.advance(2.5)  # quiet for more than a keepalive: pinged (the ping is lost)
        clock.advance(3.5)  # quiet for exactly three keepalives: not yet lost
        assert not waiting.done()
        clock.advance(0.0625)  # the first sweep after: lost
        result = future_outcome(waiting, STEP)
    finally:
        node.close()
    assert result is ConnectionLost


def test_a_quiet_but_alive_owner_is_not_lost(owner: OwnerProcess, client: netlet.Node) -> None:
    # Real time (the owner is another process): 0.5 s, so that a loaded machine answers a
    # ping within the 1.5 s of silence allowed (at 0.2 s it once did not).
    keepalive = 0.5
    name = owner.control(client).new_channel(0)
    node, _ = _partitionable_node(keepalive)
    try:
        rc = netlet.connect_channel(owner.address, name, node=node)
        began = time.monotonic()
        # Nothing comes for five keepalive intervals; pings keep the link up.
        assert outcome(lambda: rc.receive(5 * keepalive)) is ChannelTimeout
        assert time.monotonic() - began >= 5 * keepalive * 0.9
        assert rc.balance == 0  # and the link still carries calls
    finally:
        node.close()
