"""A foreign client, written from docs/PROTOCOL.md §15 alone, tries to break a served channel.

The client is the one of ``test_foreign_client.py`` (socket, struct, msgpack:
no netlet import); the channel is ``box`` (a buffer of 4) on a real node,
``protocol_server.py`` in a subprocess, one per test so that no value of
another test is in it. Each test takes a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from tests.integration.test_foreign_client import (
    CALL,
    ERROR,
    EXT_EXCEPTION,
    REPLY,
    Client,
    RemoteException,
    _start_server,
    encode,
)

pytestmark = pytest.mark.timeout(15)

BOX = "box"


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    yield from _start_server()


def _connect(server: tuple[str, int]) -> Client:
    c = Client(server)
    c.handshake()
    return c


def _error(answer: tuple[int, Any], type_name: str) -> RemoteException:
    kind, exc = answer
    assert kind == ERROR, answer
    assert exc.type_name == type_name, (exc.type_name, exc.message)
    assert isinstance(exc, RemoteException)
    return exc


def _call_kw(c: Client, method: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[int, Any]:
    """A CALL with its arguments by name in `kwargs` (§5.2)."""
    cid = c._next_id
    c._next_id += 1
    c.send_frame(encode([CALL, cid, BOX, method, args, kwargs]))
    msg = c.recv_message()
    assert msg[1] == cid, msg
    return msg[0], msg[2]


def test_the_plain_methods_answer_their_documented_types(server: tuple[str, int]) -> None:
    with _connect(server) as c:
        assert c.call(BOX, "capacity") == (REPLY, 4)
        assert c.call(BOX, "balance") == (REPLY, 0)
        assert c.call(BOX, "closed") == (REPLY, False)
        _error(c.call(BOX, "receive_nowait"), "netlet.errors.WouldBlock")
        _error(c.call(BOX, "receive", 0.05), "netlet.errors.ChannelTimeout")
        # Arguments by name (§15: "positionally in args or by name in kwargs").
        assert _call_kw(c, "send", [], {"value": "named"}) == (REPLY, None)
        assert _call_kw(c, "receive", [], {"timeout": 1, "ticket": None}) == (
            REPLY, ["value", "named"])
        stats = c.call(BOX, "statistics")[1]
        assert {"name", "capacity", "buffered", "balance", "sent", "received", "closed",
                "senders_waiting", "receivers_waiting"} <= set(stats)
        assert (stats["capacity"], stats["sent"], stats["received"]) == (4, 1, 1)


def test_a_waiting_receive_holds_up_nothing_and_shows_in_balance(
        server: tuple[str, int]) -> None:
    """§15 Concurrency: other calls on the same connection are answered meanwhile."""
    with _connect(server) as c:
        waiting = c.start_call(BOX, "receive", 5.0, None)
        assert c.call(BOX, "balance") == (REPLY, -1)  # answered before the receive
        with _connect(server) as other:
            assert other.call(BOX, "send", "late", None) == (REPLY, None)
        assert c.recv_message() == [REPLY, waiting, ["value", "late"]]


def test_send_exception_is_received_as_raise(server: tuple[str, int]) -> None:
    exc_args = msgpack.ExtType(0, msgpack.packb(["boom"]))
    exc = msgpack.ExtType(EXT_EXCEPTION, msgpack.packb(
        ["builtins.ValueError", exc_args, "boom", ""], use_bin_type=True))
    with _connect(server) as c:
        assert c.call(BOX, "send_exception", exc, None) == (REPLY, None)
        kind, (tag, got) = c.call(BOX, "receive", 1.0, None)
        assert (kind, tag, got.type_name, got.args) == (REPLY, "raise", "builtins.ValueError",
                                                        ["boom"])


def test_a_ticket_in_use_or_out_of_shape_is_a_protocol_error(server: tuple[str, int]) -> None:
    """§15 Tickets: 1 to 128 characters, fresh for every receive."""
    with _connect(server) as c:
        for v in ("a", "b"):
            assert c.call(BOX, "send", v, None) == (REPLY, None)
        ticket = f"{c.node}:0000000000000001"
        assert c.call(BOX, "receive", 1.0, ticket) == (REPLY, ["value", "a"])
        _error(c.call(BOX, "receive", 1.0, ticket), "netlet.errors.ProtocolError")  # not acked
        for bad in ("", "t" * 129, 7):
            _error(c.call(BOX, "receive", 1.0, bad), "netlet.errors.ProtocolError")
        assert c.call(BOX, "ack", ticket) == (REPLY, None)
        assert c.call(BOX, "receive", 1.0, ticket) == (REPLY, ["value", "b"])  # fresh again


def test_another_nodes_ticket_and_sender_are_not_yours(server: tuple[str, int]) -> None:
    """§15 Whose tickets and senders: an ack of another node's ticket does nothing
    (the value still goes back when that node leaves); a push into another node's
    slots is a ProtocolError."""
    with _connect(server) as thief:
        with _connect(server) as owner:
            assert owner.call(BOX, "send", "kept", None) == (REPLY, None)
            ticket = "shared-name"
            assert owner.call(BOX, "receive", 1.0, ticket) == (REPLY, ["value", "kept"])
            assert thief.call(BOX, "ack", ticket) == (REPLY, None)  # silently no ticket
            assert thief.call(BOX, "cancel_receive", ticket) == (REPLY, None)
            assert owner.call(BOX, "send_reserving", "snd", "v", False, 2, None) == (REPLY, 2)
            _error(thief.call(BOX, "push", "snd", ["x"], [], 0), "netlet.errors.ProtocolError")
            assert thief.call(BOX, "release", "snd", 2) == (REPLY, None)  # holds none: ignored
            # the owner's slots survived the thief's release
            assert owner.call(BOX, "push", "snd", ["w"], [], 0) == (REPLY, 0)
        # The owner left without an ack: its value is back at the front.
        kind, value = thief.call(BOX, "receive", 1.0, None)
        assert (kind, value) == (REPLY, ["value", "kept"])


def test_pipelined_sends_grant_only_free_slots(server: tuple[str, int]) -> None:
    """§15 Pipelined sends: want is granted up to the free slots; 0 or less reserves
    nothing; a release of more than held releases what is held."""
    with _connect(server) as c:
        sender = f"{c.node}:00000001"
        assert c.call(BOX, "send_reserving", sender, "a", False, 0, None) == (REPLY, 0)
        assert c.call(BOX, "send_reserving", sender, "b", False, -3, None) == (REPLY, 0)
        assert c.call(BOX, "send_reserving", sender, "c", False, 100, None) == (REPLY, 1)
        _error(c.call(BOX, "send_nowait", "full"), "netlet.errors.WouldBlock")  # 3 + 1 lent
        assert c.call(BOX, "release", sender, 50) == (REPLY, None)
        assert c.call(BOX, "send_nowait", "d") == (REPLY, None)  # the slot came back
        _error(c.call(BOX, "push", sender, ["e"], [], 0), "netlet.errors.ProtocolError")


def test_close_drains_then_refuses(server: tuple[str, int]) -> None:
    """§15: after close, receivers drain what is buffered, then get ChannelClosed; a
    send gets ChannelClosed."""
    with _connect(server) as c:
        assert c.call(BOX, "send", 1, None) == (REPLY, None)
        assert c.call(BOX, "close") == (REPLY, None)
        assert c.call(BOX, "closed") == (REPLY, True)
        _error(c.call(BOX, "send", 2, None), "netlet.errors.ChannelClosed")
        assert c.call(BOX, "receive", 1.0, None) == (REPLY, ["value", 1])
        _error(c.call(BOX, "receive", 1.0, None), "netlet.errors.ChannelClosed")


def test_select_answers_the_index_and_value(server: tuple[str, int]) -> None:
    with _connect(server) as c:
        assert c.call(BOX, "select", [[True, BOX, "sel"]], 1.0) == (REPLY, [0, None])
        assert c.call(BOX, "select", [[False, BOX, None]], 1.0) == (REPLY, [0, "sel"])


@pytest.mark.parametrize(("method", "args"), [
    ("send_exception", ["not an exception", None]),  # `exc` is ext 11
    ("send_reserving", ["s", "v", False, None, None]),  # `want` is an int
    ("send_reserving", ["s", "v", False, "2", None]),
    ("push", ["s", [], [], None]),
    ("release", ["s", "x"]),  # `n` is an int
    ("select", [[[True]], 1.0]),  # each spec is [is_send, channel_name, value]
    ("select", ["x", 1.0]),
])
def test_arguments_of_the_wrong_type_are_a_protocol_error_and_change_nothing(
        server: tuple[str, int], method: str, args: list[Any]) -> None:
    """§15: the arguments have the types of the table; anything else is refused with
    ProtocolError, like a bad ticket or sender, and nothing is placed."""
    with _connect(server) as c:
        _error(c.call(BOX, method, *args), "netlet.errors.ProtocolError")
        _error(c.call(BOX, "receive_nowait"), "netlet.errors.WouldBlock")
        assert c.call(BOX, "statistics")[1]["sent"] == 0


def test_a_reserving_send_that_had_to_wait_reserves_nothing(server: tuple[str, int]) -> None:
    """§15 Pipelined sends: "A value that had to wait reserves nothing: the result is 0"."""
    with _connect(server) as c:
        for i in range(4):
            assert c.call(BOX, "send", i, None) == (REPLY, None)
        waiting = c.start_call(BOX, "send_reserving", f"{c.node}:00000002", "late", False, 3, 5.0)
        with _connect(server) as other:
            assert other.call(BOX, "receive", 1.0, None) == (REPLY, ["value", 0])
        assert c.recv_message() == [REPLY, waiting, 0]
        assert c.call(BOX, "statistics")[1]["buffered"] == 4
