"""docs/PROTOCOL.md, checked the way a client written in another language meets it.

A client written from PROTOCOL.md alone found places where the node and the
page disagreed. Each test here speaks the wire by hand (``RawClient``) and
checks what the page now says: pipelining behind the hello, call ids that
close the connection, malformed calls that get an ERROR, keepalive PINGs, the
key file, and a channel's ``cancel_receive`` answering the receive it ends.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from netlet.transport import load_key, write_key
from tests.conftest import LOGGING_PRELUDE, RawClient, ServerProcess, frame

pytestmark = pytest.mark.timeout(30)

KEEPALIVE = 0.5

SERVER = LOGGING_PRELUDE + f"""
import netlet

@netlet.expose
class Calc:
    def add(self, a, b):
        return a + b

    def call_back(self, target, x):
        return target.double(x) + 1

with netlet.Node(listen="tcp://127.0.0.1:0", keepalive={KEEPALIVE}) as node:
    node.serve(Calc(), "calc")
    node.serve(netlet.channel(4), "box")
    print(node.address, flush=True)
    node.wait()
"""

CALL, REPLY, ERROR, CANCEL, PING, PONG, BYE = 1, 2, 3, 4, 5, 6, 7


@pytest.fixture
def server(server_process: Callable[..., ServerProcess]) -> ServerProcess:
    return server_process(SERVER)


def hello(client: RawClient) -> bytes:
    packed: bytes = msgpack.packb({"netlet": 1, "node": client.node, "address": "",
                                   "nonce": secrets.token_bytes(32), "auth": None,
                                   "role": "link", "pickle": False})
    return packed


def error_type(msg: list[Any]) -> str:
    assert msg[0] == ERROR, msg
    return str(msgpack.unpackb(msg[2].data, raw=False)[0])


def still_serving(client: RawClient, cid: int) -> None:
    client.send_msg([CALL, cid, "calc", "add", [cid, 1], None])
    assert client.recv_msg() == [REPLY, cid, cid + 1]


# -- §4.6: a call pipelined behind the hello --------------------------------------


def test_call_pipelined_behind_the_hello_is_answered(server: ServerProcess) -> None:
    with RawClient.connect(server.address) as client:
        # One write: the hello and a call, before the server's answer is read.
        client.send_raw(frame(hello(client)) + frame(msgpack.packb(
            [CALL, 1, "calc", "add", [2, 3], None])))
        assert client.recv_msg()["netlet"] == 1
        assert client.recv_msg() == [REPLY, 1, 5]


def test_pipelined_call_must_fit_the_handshake_frame_limit(server: ServerProcess) -> None:
    """Until the handshake is over, frames are limited to 16 KiB without buffers: a
    bigger call read with the hello closes the connection, answered or not."""
    with RawClient.connect(server.address) as client:
        client.send_raw(frame(hello(client)) + frame(msgpack.packb(
            [CALL, 1, "calc", "add", ["x" * 20_000, "y"], None])))
        assert client.closed_by_peer()
    server.stderr.wait_for(r"frame of \d+ bytes \(limit 16384\)")


# -- §5.4: call ids ---------------------------------------------------------------------

BIG_ID = msgpack.ExtType(9, str(2**64).encode())  # an int beyond msgpack's, as ext 9


@pytest.mark.parametrize("cid", [None, False, True, -1, 1.5, "7", [1], BIG_ID],
                         ids=["nil", "false", "true", "negative", "float", "str", "array",
                              "bigint"])
def test_bad_call_ids_close_the_connection(server: ServerProcess, cid: Any) -> None:
    with RawClient.connect(server.address) as client:
        client.handshake()
        client.send_msg([CALL, cid, "calc", "add", [1, 2], None])
        assert client.closed_by_peer()
    server.stderr.wait_for(r"closing .*malformed message.*call id")


def test_undecodable_call_with_a_negative_id_closes(server: ServerProcess) -> None:
    with RawClient.connect(server.address) as client:
        client.handshake()
        client.send_msg([CALL, -5, "calc", "add", [msgpack.ExtType(99, b"")], None])
        assert client.closed_by_peer()


def test_undecodable_call_with_a_good_id_gets_an_error(server: ServerProcess) -> None:
    with RawClient.connect(server.address) as client:
        client.handshake()
        client.send_msg([CALL, 2**64 - 1, "calc", "add", [msgpack.ExtType(99, b"")], None])
        answer = client.recv_msg()
        assert answer[1] == 2**64 - 1
        assert error_type(answer) == "netlet.errors.DecodeError"
        still_serving(client, 3)


# -- §5.2 and §11: malformed calls get an ERROR ------------------------------------------


@pytest.mark.parametrize("fields", [
    ["calc", "add", [1, 2], [1]],
    ["calc", "add", [1, 2], "kw"],
    ["calc", "add", msgpack.ExtType(1, msgpack.packb([1, 2])), None],  # a tuple for args
    ["calc", "add", None, None],
    [5, "add", [1, 2], None],
    ["calc", None, [1, 2], None],
], ids=["kwargs-array", "kwargs-str", "args-tuple", "args-nil", "target-int", "method-nil"])
def test_malformed_call_fields_get_an_error_reply(server: ServerProcess,
                                                  fields: list[Any]) -> None:
    with RawClient.connect(server.address) as client:
        client.handshake()
        client.send_msg([CALL, 1, *fields])
        answer = client.recv_msg()
        assert answer[1] == 1
        assert error_type(answer) == "netlet.errors.ProtocolError"
        still_serving(client, 2)


# -- §5.6: keepalive ----------------------------------------------------------------------


def test_a_peer_the_server_waits_on_is_pinged_then_dropped(server: ServerProcess) -> None:
    """The server calls us back and we stay silent: PINGs after ``keepalive`` s, then close."""
    with RawClient.connect(server.address) as client:
        client.handshake()
        ref = msgpack.ExtType(12, msgpack.packb([client.node, "", "mine", "object"]))
        client.send_msg([CALL, 1, "calc", "call_back", [ref, 20], None])
        callback = client.recv_msg()
        assert callback[0] == CALL
        assert callback[2:5] == ["mine", "double", [20]]
        start = time.monotonic()
        assert client.recv_msg() == [PING, 0]
        first_ping = time.monotonic() - start
        pings = []
        while (got := client.recv_frame_or_eof(5 * KEEPALIVE)) is not None:  # PINGs, then EOF
            pings.append(msgpack.unpackb(got[0]))
        silent = time.monotonic() - start
    assert KEEPALIVE * 0.9 <= first_ping <= KEEPALIVE + 1.0
    assert 3 * KEEPALIVE * 0.9 <= silent <= 3 * KEEPALIVE + 1.5
    assert all(p == [PING, 0] for p in pings)  # one per liveness check while silent
    server.stderr.wait_for(r"no word from the peer")


def test_pong_answers_any_token(server: ServerProcess) -> None:
    with RawClient.connect(server.address) as client:
        client.handshake()
        client.send_msg([PING, {"t": [1, "x"]}])
        assert client.recv_msg() == [PONG, {"t": [1, "x"]}]


# -- §4.4: the key file ---------------------------------------------------------------------


def test_key_file_is_hex_and_one_newline(tmp_path: Path) -> None:
    key = bytes(range(32))
    path = tmp_path / "cluster.key"
    write_key(path, key)
    assert path.read_bytes() == key.hex().encode() + b"\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # Readers strip surrounding whitespace and accept either case.
    path.write_text("  " + key.hex().upper() + "\r\n\n")
    assert load_key(path) == key


# -- §15: channels ---------------------------------------------------------------------------


def test_cancel_receive_answers_the_waiting_receive(server: ServerProcess) -> None:
    with RawClient.connect(server.address) as client:
        client.handshake()
        ticket = f"{client.node}:t1"
        client.send_msg([CALL, 1, "box", "receive", [None, ticket], None])  # waits: box is empty
        client.send_msg([CALL, 2, "box", "cancel_receive", [ticket], None])
        answers = {m[1]: m for m in (client.recv_msg(), client.recv_msg())}
        assert answers[2] == [REPLY, 2, None]
        assert error_type(answers[1]) == "netlet.errors.CallCancelled"
        # Nothing was lost or left waiting: a value sent now is there to receive.
        client.send_msg([CALL, 3, "box", "send_nowait", [7], None])
        assert client.recv_msg() == [REPLY, 3, None]
        client.send_msg([CALL, 4, "box", "receive_nowait", [], None])
        assert client.recv_msg() == [REPLY, 4, ["value", 7]]


def test_receive_with_a_ticket_keeps_the_value_until_ack(server: ServerProcess) -> None:
    with RawClient.connect(server.address) as client:
        client.handshake()
        client.send_msg([CALL, 1, "box", "send_nowait", ["a"], None])
        assert client.recv_msg() == [REPLY, 1, None]
        ticket = f"{client.node}:t2"
        client.send_msg([CALL, 2, "box", "receive", [None, ticket], None])
        assert client.recv_msg() == [REPLY, 2, ["value", "a"]]
        # cancel_receive after the value was given: it goes back to the front.
        client.send_msg([CALL, 3, "box", "cancel_receive", [ticket], None])
        assert client.recv_msg() == [REPLY, 3, None]
        client.send_msg([CALL, 4, "box", "receive", [None, f"{client.node}:t3"], None])
        assert client.recv_msg() == [REPLY, 4, ["value", "a"]]
        client.send_msg([CALL, 0, "box", "ack", [f"{client.node}:t3"], None])  # oneway
        still_serving(client, 5)
