"""README "Channels and tasklets": on a buffered channel, remote sends are pipelined
"(a returned send's value may still be on its way: later operations on the same
handle, or ``ch.flush()``, see it placed)", and "if the owner dies every waiter gets
``ConnectionLost``, never a hang". Attacked against a real owner process: placement
read through another connection, a flush to an owner frozen and then killed.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

import netlet
from netlet.testing import VirtualClock
from tests.channel.conftest import STEP, OwnerProcess, in_thread, wait_until

__all__: list[str] = []


def _handles(owner: OwnerProcess, client: netlet.Node,
             buffer: int) -> tuple[netlet.RemoteChannel, netlet.RemoteChannel]:
    """A handle to a fresh channel on ``owner``, and a second one on its own connection."""
    name = owner.control(client).new_channel(buffer)
    return (netlet.connect_channel(owner.address, name, node=client),
            netlet.connect_channel(owner.address, name, node=netlet.Node()))


@pytest.mark.timeout(30)
def test_flush_sees_every_returned_send_placed(owner: OwnerProcess,
                                               client: netlet.Node) -> None:
    ch, other = _handles(owner, client, buffer=64)
    try:
        for i in range(40):
            ch.send(i)
        ch.flush(timeout=STEP)
        # Read through another connection, with no wait: all 40 are in the owner's buffer.
        assert other.statistics().buffered == 40
    finally:
        other.close()


@pytest.mark.timeout(30)
def test_later_operations_on_the_same_handle_see_returned_sends(
        owner: OwnerProcess, client: netlet.Node) -> None:
    ch, other = _handles(owner, client, buffer=64)
    try:
        for i in range(40):
            ch.send(i)
        assert ch.statistics().buffered == 40
        assert [ch.receive(timeout=0) for _ in range(40)] == list(range(40))
        for i in range(5):
            ch.send(i)
        assert ch.statistics().buffered == 5 == other.statistics().buffered
    finally:
        other.close()


def _state(pid: int) -> str:
    """A process's state letter from /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.timeout(30)
def test_a_flush_to_an_owner_that_froze_and_died_raises_connection_lost(
        start_owner: Callable[..., OwnerProcess], client: netlet.Node) -> None:
    owner = start_owner()
    name = owner.control(client).new_channel(64)
    # On a virtual clock the handle never goes idle, so it keeps the room it was granted
    # (and keepalive never calls the frozen owner lost: only its death can).
    with netlet.Node(clock=VirtualClock()) as node:
        ch = netlet.connect_channel(owner.address, name, node=node)
        for i in range(10):
            ch.send(i)
        ch.flush()  # the owner has granted room: the next sends are pipelined
        owner.signal(signal.SIGSTOP)
        wait_until(lambda: _state(owner.pid) == "T", what="the owner to stop")
        for i in range(2):
            ch.send(i)  # returns at once, within the room granted: on its way
        flushing = in_thread(ch.flush)  # no timeout: only the owner's death can end it
        owner.kill()
        with pytest.raises(netlet.ConnectionLost, match="may be lost"):
            flushing.result(STEP)
        with pytest.raises(netlet.NetletConnectionError):
            ch.send("after")
