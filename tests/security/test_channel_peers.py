"""A hostile peer of a served channel (docs/PROTOCOL.md §15) over a real socket.

The owner keeps state for its remote peers: values handed out under a ticket
until they are acknowledged, buffer slots lent to pipelined senders, waiting
receives and sends. Each test here attacks one of them with a hand-written
client (``RawClient``) and checks that the state is scoped to the connection
that made it (forged tickets and sender names act only for their caller, and
everything goes back when that peer leaves), that what one peer can make the
owner hold is bounded (the server's RSS, from /proc, before and after), and
that an honest receiver still gets every value exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

import netlet
from tests.conftest import RawClient, ServerProcess, frame

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
CONNECTION_MEMORY = 16 * MiB

SERVER = f"""
import netlet

with netlet.Node(listen="tcp://127.0.0.1:0", keepalive=0.5,
                 max_connection_memory={CONNECTION_MEMORY},
                 max_memory={2 * CONNECTION_MEMORY}) as node:
    node.serve(netlet.channel(4), "box")
    print(node.address, flush=True)
    node.wait()
"""

CALL, REPLY, ERROR, PING, PONG = 1, 2, 3, 5, 6


@pytest.fixture
def server(server_process: Callable[..., ServerProcess]) -> ServerProcess:
    return server_process(SERVER)


def attacker(server: ServerProcess) -> RawClient:
    client = RawClient.connect(server.address)
    client.handshake()
    return client


def call(client: RawClient, cid: int, method: str, *args: Any) -> list[Any]:
    """One call to the channel and its answer (REPLY or ERROR)."""
    client.send_msg([CALL, cid, "box", method, list(args), None])
    while True:
        answer: list[Any] = client.recv_msg()
        if answer[0] != PING:
            assert answer[1] == cid, answer
            return answer
        client.send_msg([PONG, answer[1]])  # the owner checks we are alive (§4.8)


def error_type(answer: list[Any]) -> str:
    assert answer[0] == ERROR, answer
    return str(msgpack.unpackb(answer[2].data, raw=False)[0])


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def settled_rss_mib(pid: int, timeout: float = 5.0) -> float:
    """The server's RSS once it stops moving (two readings 0.3 s apart within 1 MiB)."""
    deadline = time.monotonic() + timeout
    last = status_kib(pid, "VmRSS")
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = status_kib(pid, "VmRSS")
        if abs(now - last) < 1024:
            break
        last = now
    return status_kib(pid, "VmRSS") / 1024


def honest_receives(node: netlet.Node, address: str, n: int) -> list[Any]:
    """``n`` acknowledged receives by a real netlet node (each may wait 10 s)."""
    box = netlet.connect_channel(address, "box", node=node)
    return [box.receive(timeout=10.0) for _ in range(n)]


def send_until_placed(client: RawClient, cid: int, value: Any, timeout: float = 10.0) -> None:
    """``send_nowait`` until the box has room (room another peer held may free later)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = call(client, cid, "send_nowait", value)
        if answer[0] == REPLY:
            return
        assert error_type(answer) == "netlet.errors.WouldBlock"
        if time.monotonic() > deadline:
            pytest.fail(f"the box had no room for {value!r} within {timeout} s")
        time.sleep(0.05)


# -- tickets --------------------------------------------------------------------------


def test_values_taken_under_forged_tickets_come_back_when_the_peer_leaves(
        server: ServerProcess, node_factory: Callable[..., netlet.Node]) -> None:
    with attacker(server) as thief:
        for i in range(4):
            assert call(thief, i + 1, "send_nowait", f"v{i}") == [REPLY, i + 1, None]
        # Tickets that do not start with the thief's node id: one naming another node,
        # one with no node id at all. Neither is ever acknowledged.
        forged = ["0" * 32 + ":stolen", "no-node-id-here"]
        for cid, ticket in enumerate(forged, 10):
            assert call(thief, cid, "receive", 1.0, ticket)[0] == REPLY
    # The thief left without an ack: both values go back, none is lost.
    got = honest_receives(node_factory(), server.address, 4)
    assert sorted(got) == ["v0", "v1", "v2", "v3"]


def test_another_peers_ticket_cannot_be_acknowledged_or_cancelled(
        server: ServerProcess, node_factory: Callable[..., netlet.Node]) -> None:
    with attacker(server) as honest, attacker(server) as thief:
        # A receive that waits: the thief's cancel_receive with the same ticket is not its own.
        waiting = f"{honest.node}:w"
        honest.send_msg([CALL, 1, "box", "receive", [None, waiting], None])
        assert call(thief, 1, "cancel_receive", waiting) == [REPLY, 1, None]
        assert call(thief, 2, "send_nowait", "for-honest") == [REPLY, 2, None]
        assert honest.recv_msg() == [REPLY, 1, ["value", "for-honest"]]
        assert call(honest, 2, "ack", waiting) == [REPLY, 2, None]
        # A value given and not yet acknowledged: the thief's ack is not the receiver's.
        assert call(thief, 3, "send_nowait", "precious") == [REPLY, 3, None]
        given = f"{honest.node}:g"
        assert call(honest, 3, "receive", 1.0, given) == [REPLY, 3, ["value", "precious"]]
        assert call(thief, 4, "ack", given) == [REPLY, 4, None]
        # ...and the receiver dies before its own ack: the value must go back.
    assert honest_receives(node_factory(), server.address, 1) == ["precious"]


def test_a_peer_that_never_acknowledges_is_slowed_not_buffered(
        server: ServerProcess, node_factory: Callable[..., netlet.Node]) -> None:
    """Each value is taken out of the buffer (which then has room for more) and kept
    for the receiver: without a bound, a peer pulls the whole stream into memory."""
    rss_before = settled_rss_mib(server.pid)
    answered: list[int] = []
    with attacker(server) as thief:
        for i in range(200):  # 200 MiB if every one were kept
            value = i.to_bytes(4, "big") + bytes(MiB - 4)
            assert call(thief, 2 * i + 1, "send_nowait", value)[0] == REPLY
            answer = call(thief, 2 * i + 2, "receive", 1.0, f"{thief.node}:{i}")
            if answer[0] == ERROR:  # slowed: it waits for the peer's acks, then times out
                assert error_type(answer) == "netlet.errors.ChannelTimeout"
                break
            answered.append(i)
        grown = settled_rss_mib(server.pid) - rss_before
        held = len(answered)
        print(f"values held for a peer that never acks: {held}; server RSS {grown:+.1f} MiB")
        # Bounded by the connection's memory budget (16 MiB here): at most one value over.
        assert held <= CONNECTION_MEMORY // MiB + 1, f"{held} values of 1 MiB held"
        assert grown < 3 * CONNECTION_MEMORY / MiB, f"the owner kept {grown:.0f} MiB"
        # One ack makes room again: slowed, not refused for ever.
        assert call(thief, 1000, "ack", f"{thief.node}:0") == [REPLY, 1000, None]
        assert call(thief, 1001, "receive", 5.0, f"{thief.node}:again")[0] == REPLY
    # The peer left: what it held and never acknowledged (all but value 0, and the
    # value ``held`` it took last) comes back, each once.
    rest = honest_receives(node_factory(), server.address, held)
    assert sorted(int.from_bytes(v[:4], "big") for v in rest) == [*answered[1:], held]


def test_the_number_of_values_held_for_one_peer_is_bounded(server: ServerProcess) -> None:
    with attacker(server) as thief:
        for i in range(1100):
            # One write: a oneway send_nowait, and the receive (no Nagle stall between).
            thief.send_raw(frame(msgpack.packb([CALL, 0, "box", "send_nowait", [i], None]))
                           + frame(msgpack.packb([CALL, i + 1, "box", "receive",
                                                  [1.0, f"{thief.node}:{i}"], None])))
            answer = thief.recv_msg()
            assert answer[1] == i + 1, answer
            if answer[0] == ERROR:
                assert error_type(answer) == "netlet.errors.ChannelTimeout"
                break
        else:
            pytest.fail("1100 values held for one peer that acknowledged none")
        assert i == 1024, f"slowed after {i} values held"


# -- pipelined senders ----------------------------------------------------------------------


def test_slots_reserved_under_a_made_up_sender_are_freed_when_the_peer_leaves(
        server: ServerProcess) -> None:
    with attacker(server) as thief:
        # Places one value and takes every other free slot, under a name of its choosing.
        assert call(thief, 1, "send_reserving", "made-up", "v", False, 100, None) == [REPLY, 1, 3]
        assert error_type(call(thief, 2, "send_nowait", "x")) == "netlet.errors.WouldBlock"
    with attacker(server) as honest:
        for i in range(3):
            send_until_placed(honest, i + 1, f"h{i}")


def test_a_peer_cannot_fill_its_slots_with_another_peers_sender_name(
        server: ServerProcess) -> None:
    with attacker(server) as honest, attacker(server) as thief:
        sender = f"{honest.node}:h"
        assert call(honest, 1, "send_reserving", sender, "v", False, 2, None) == [REPLY, 1, 2]
        # The thief pushes into (and releases) the honest sender's slots.
        assert error_type(call(thief, 1, "push", sender, ["t1", "t2"], [], 0)) \
            == "netlet.errors.ProtocolError"
        assert call(thief, 2, "release", sender, 2) == [REPLY, 2, None]
        assert call(honest, 2, "push", sender, ["h1", "h2"], [], 0) == [REPLY, 2, 0]
        got = [call(honest, 3 + i, "receive_nowait")[2] for i in range(3)]
        assert got == [["value", "v"], ["value", "h1"], ["value", "h2"]]


def test_made_up_sender_names_are_not_kept(server: ServerProcess) -> None:
    """``release`` under 100,000 fresh names: nothing of them may stay at the owner."""
    rss_before = settled_rss_mib(server.pid)
    with attacker(server) as thief:
        batch = bytearray()
        for i in range(100_000):
            name = f"{i:08d}" + "x" * 112
            batch += frame(msgpack.packb([CALL, 0, "box", "release", [name, 1], None]))
            if len(batch) > 1 << 20:
                thief.send_raw(bytes(batch))
                batch.clear()
        thief.send_raw(bytes(batch))
        assert call(thief, 1, "capacity") == [REPLY, 1, 4]  # every release was served
        grown = settled_rss_mib(server.pid) - rss_before
    print(f"server RSS after 100,000 made-up sender names: {grown:+.1f} MiB")
    assert grown < 8, f"the owner kept {grown:.0f} MiB for made-up sender names"


# -- waiting sends -----------------------------------------------------------------------


def test_parked_sends_are_bounded_by_the_connection_budget(
        server: ServerProcess, node_factory: Callable[..., netlet.Node]) -> None:
    """A full box, then up to 1,000 sends of 1 MiB that all must wait: the owner stops
    reading the connection once its budget is held, instead of buffering 1 GiB."""
    rss_before = settled_rss_mib(server.pid)
    with attacker(server) as thief:
        for i in range(4):
            assert call(thief, i + 1, "send_nowait", i) == [REPLY, i + 1, None]
        thief.sock.settimeout(2.0)
        written = 0
        try:
            for cid in range(100, 1100):
                body = msgpack.packb([CALL, cid, "box", "send", [bytes(MiB), None], None])
                thief.sock.sendall(frame(body))
                written += 1
        except TimeoutError:
            pass  # the owner stopped reading us
        grown = settled_rss_mib(server.pid) - rss_before
        print(f"parked sends written before the owner stopped reading: {written}; "
              f"server RSS {grown:+.1f} MiB")
        assert written < 1000, "the owner read 1 GiB of sends that had to wait"
        assert grown < 4 * CONNECTION_MEMORY / MiB, f"the owner kept {grown:.0f} MiB"
    # The waiting sends ended with their connection; the buffered values are intact.
    assert sorted(honest_receives(node_factory(), server.address, 4)) == [0, 1, 2, 3]


def test_parked_receives_are_bounded_by_the_calls_in_flight(server: ServerProcess) -> None:
    """100,000 receives on an empty box, each with a fresh ticket: the owner serves
    ``max_inflight`` (1024) at once and stops reading the connection past it."""
    rss_before = settled_rss_mib(server.pid)
    with attacker(server) as thief:
        thief.sock.settimeout(2.0)
        written = 0
        try:
            for start in range(1, 100_001, 1000):
                thief.sock.sendall(b"".join(
                    frame(msgpack.packb([CALL, cid, "box", "receive",
                                         [None, f"{thief.node}:{cid}" + "t" * 80], None]))
                    for cid in range(start, start + 1000)))
                written += 1000
        except TimeoutError:
            pass  # the owner stopped reading us
        grown = settled_rss_mib(server.pid) - rss_before
        print(f"parked receives written before the owner stopped reading: ~{written}; "
              f"server RSS {grown:+.1f} MiB")
        assert written < 100_000, "the owner read 100,000 receives that all had to wait"
        assert grown < 16, f"the owner kept {grown:.0f} MiB for waiting receives"
    with attacker(server) as honest:  # the waiting receives ended with their connection
        deadline = time.monotonic() + 10
        cid = 1
        while call(honest, cid, "balance") != [REPLY, cid, 0]:
            assert time.monotonic() < deadline, "receives of a closed connection still wait"
            time.sleep(0.05)
            cid += 1
        assert call(honest, cid + 1, "send_nowait", "v") == [REPLY, cid + 1, None]
        assert call(honest, cid + 2, "receive_nowait") == [REPLY, cid + 2, ["value", "v"]]


def test_a_connection_claiming_another_nodes_id_is_lent_and_kept_nothing(
        server: ServerProcess) -> None:
    """A second connection with an id a live one owns acts for nobody (§4.8): no slots
    are lent to it and no value is kept for it, since no departure would free them."""
    with attacker(server) as owner:
        claimant = RawClient.connect(server.address)
        claimant.node = owner.node
        with claimant:
            claimant.handshake()
            assert call(claimant, 1, "send_reserving", f"{owner.node}:s", "v", False, 3,
                        None) == [REPLY, 1, 0]
            ticket = f"{owner.node}:t"
            assert call(claimant, 2, "receive", 1.0, ticket) == [REPLY, 2, ["value", "v"]]
            # Its waiting receives can still be cancelled (with the ticket it chose).
            claimant.send_msg([CALL, 3, "box", "receive", [None, ticket], None])
            assert call(claimant, 4, "cancel_receive", ticket) == [REPLY, 4, None]
            assert error_type(claimant.recv_msg()) == "netlet.errors.CallCancelled"
        # Nothing lent to it is missing: the whole buffer takes values.
        for i in range(4):
            assert call(owner, 10 + i, "send_nowait", i) == [REPLY, 10 + i, None]
