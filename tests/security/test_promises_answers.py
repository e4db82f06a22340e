"""docs/PROTOCOL.md §11 "answer or close", and README "Malformed input closes that connection
with a logged reason or is answered with an error; the node keeps serving everyone else".

Rows of the §11 table no other test attacks: a close names its reason in the
log (a reason a person can act on, not a bare exception text); a result that
cannot be encoded, or is too large, is an ERROR ``EncodeError`` and the
connection stays; any problem with a oneway call sends nothing; a REPLY that
does not decode fails only the call waiting for it, on a connection that
stays open (a fake server sends it to a real client).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

import netlet
from netlet.codec import Limits
from netlet.errors import DecodeError
from tests.conftest import STEP, RawClient, frame

NodeFactory = Callable[..., netlet.Node]

pytestmark = pytest.mark.timeout(60)


@netlet.expose
class Service:
    def echo(self, value: Any) -> Any:
        return value

    def blob(self, n: int) -> bytes:
        return b"x" * n

    def unencodable(self) -> Any:
        return socket.socket  # a class: no codec for it

    def fail(self) -> None:
        raise ValueError("boom")


@pytest.fixture
def address(node_factory: NodeFactory) -> str:
    server = node_factory("tcp://127.0.0.1:0", limits=Limits(max_frame=1024 * 1024,
                                                              oob_threshold=64 * 1024))
    server.serve(Service(), "svc")
    assert server.address is not None
    return server.address


def _error_type(answer: list[Any]) -> str:
    assert answer[0] == 3, f"expected an ERROR, got {answer!r}"[:300]
    return str(msgpack.unpackb(answer[2].data, raw=False)[0])


# -- closes name their reason -----------------------------------------------------------------

CLOSES: dict[str, tuple[bytes, str]] = {
    "a map, not an array": (msgpack.packb({"kind": 1}), "array"),
    "a map that looks like a PING": (msgpack.packb({0: 5, 1: "tok"}), "array"),
    "an empty array": (msgpack.packb([]), "array"),
    "a CALL with 3 elements": (msgpack.packb([1, 1, "svc"]), "too few"),
    "a PING with no token": (msgpack.packb([5]), "too few"),
    "an unknown kind": (msgpack.packb([42, 1]), "unknown message kind 42"),
}


@pytest.mark.parametrize("name", list(CLOSES))
def test_a_close_logs_a_reason_a_person_can_act_on(address: str, name: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    body, words = CLOSES[name]
    with caplog.at_level(logging.WARNING, logger="netlet"), RawClient.connect(address) as raw:
        raw.handshake()
        raw.send_frame(body)
        assert raw.recv_frame_or_eof(STEP) is None, name
        port = raw.local_port
    lines = [r.getMessage() for r in caplog.records if f":{port}" in r.getMessage()]
    assert any(words in line for line in lines), (name, lines)


# -- answered with an error, and the connection stays -------------------------------------------


def test_an_unencodable_or_too_large_result_is_an_encode_error(address: str) -> None:
    with RawClient.connect(address) as raw:
        raw.handshake()
        raw.send_msg([1, 1, "svc", "unencodable", [], None])
        assert _error_type(raw.recv_msg()) == "netlet.errors.EncodeError"
        raw.send_msg([1, 2, "svc", "blob", [2 * 1024 * 1024], None])  # over max_frame
        answer = raw.recv_msg()
        assert answer[1] == 2
        assert _error_type(answer) == "netlet.errors.EncodeError"
        raw.send_msg([1, 3, "svc", "blob", [10], None])  # the control, on the same link
        assert raw.recv_msg() == [2, 3, b"x" * 10]


ONEWAY_PROBLEMS = [
    [1, 0, "nobody", "echo", [1], None],           # unknown target
    [1, 0, "svc", "_private", [], None],           # not exposed
    [1, 0, "svc", "echo", [1, 2, 3], None],        # wrong arguments
    [1, 0, "svc", "fail", [], None],               # raises
    [1, 0, "svc", "unencodable", [], None],        # its result cannot be encoded
    [1, 0, "svc", 7, [], None],                    # a method that is not a str
    [1, 0, "svc", "echo", "not a list", None],     # args not an array
]


def test_no_problem_with_a_oneway_call_is_ever_answered(address: str) -> None:
    with RawClient.connect(address) as raw:
        raw.handshake()
        for call in ONEWAY_PROBLEMS:
            raw.send_msg(call)
        raw.send_msg([1, 9, "svc", "echo", ["after"], None])
        assert raw.recv_msg() == [2, 9, "after"]  # the first frame back answers call 9
        raw.sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            raw.sock.recv(1)


# -- a REPLY that does not decode fails that call only (the client side) ------------------------

SERVER_HELLO = msgpack.packb({"netlet": 1, "node": "f" * 32, "address": "", "auth": None,
                              "pickle": False})


class ReplyingServer:
    """Completes the handshake, then answers each CALL with ``reply(n, cid)``."""

    def __init__(self, reply: Callable[[int, int], bytes]) -> None:
        self.reply = reply
        self.accepted = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self._sock.getsockname()[1]}"
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn.makefile("rb") as stream:
            try:
                calls = -1
                while head := stream.read(8):
                    body_len, nbufs = struct.unpack(">II", head)
                    stream.read(4 * nbufs)
                    msg = msgpack.unpackb(stream.read(body_len), raw=False)
                    if calls < 0:
                        conn.sendall(frame(SERVER_HELLO))
                    elif msg[0] == 1 and msg[1]:
                        conn.sendall(frame(self.reply(calls, msg[1])))
                    calls += 1
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self._sock.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def replying() -> Iterator[Callable[[Callable[[int, int], bytes]], ReplyingServer]]:
    made: list[ReplyingServer] = []

    def make(reply: Callable[[int, int], bytes]) -> ReplyingServer:
        made.append(ReplyingServer(reply))
        return made[-1]

    yield make
    for server in made:
        server.close()


def test_an_undecodable_reply_fails_its_call_and_the_connection_stays(
        replying: Callable[[Callable[[int, int], bytes]], ReplyingServer],
        node_factory: NodeFactory) -> None:
    def reply(n: int, cid: int) -> bytes:
        value = msgpack.ExtType(99, b"") if n == 0 else f"answer {n}"
        packed: bytes = msgpack.packb([2, cid, value])
        return packed

    server = replying(reply)
    proxy = node_factory(call_timeout=STEP, direct_calls=False).proxy(server.address, "svc")
    with pytest.raises(DecodeError):
        proxy.echo.future(1).result(STEP)
    assert proxy.echo.future(2).result(STEP) == "answer 1"
    assert server.accepted == 1  # the same connection answered the next call


# -- ... and a flood of bad connections does not flood the log (SECURITY.md, "who is trusted") --

FLOODS: dict[str, bytes] = {
    "4 GiB headers before the hello": struct.pack(">II", 0xFFFF_FFFF, 0),
    "garbage before the hello": b"\xff" * 64,
    "frames cut off before the hello": struct.pack(">II", 100, 0) + b"\x80",
}


@pytest.mark.parametrize("name", list(FLOODS))
def test_peers_without_the_key_cannot_flood_the_log(node_factory: NodeFactory, name: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A network peer without the key may not "make the node log without limit"."""
    key = b"k" * 32
    server = node_factory("tcp://127.0.0.1:0", key=key)
    server.serve(Service(), "svc")
    assert server.address is not None
    with caplog.at_level(logging.INFO, logger="netlet"):
        for _ in range(300):
            with RawClient.connect(server.address) as raw:
                raw.send_raw(FLOODS[name])
                if name.startswith("frames cut off"):
                    continue  # we close with the frame unfinished
                assert raw.recv_frame_or_eof(STEP) is None
        with RawClient.connect(server.address) as raw:  # the node still serves a key holder
            raw.handshake(key)
            raw.send_msg([1, 1, "svc", "echo", ["ok"], None])
            assert raw.recv_msg() == [2, 1, "ok"]
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) <= 60, f"{len(lines)} lines for 300 bad connections: {lines[-1].getMessage()}"


@pytest.mark.parametrize("role", ["link", "direct"])
@pytest.mark.parametrize("field", ["target", "method", "kind"])
def test_a_peer_cannot_write_a_megabyte_into_one_log_line(
        address: str, role: str, field: str, caplog: pytest.LogCaptureFixture) -> None:
    big = "A" * 1_000_000
    call: list[Any] = {"target": [1, 1, big, "echo", [], None],
                       "method": [1, 1, "svc", big, [], None],
                       "kind": [big, 1]}[field]
    with caplog.at_level(logging.INFO, logger="netlet"), RawClient.connect(address) as raw:
        raw.handshake(role=role)
        raw.send_msg(call)
        raw.recv_frame_or_eof(STEP)  # an ERROR, or the close
    lines = [r.getMessage() for r in caplog.records]
    assert lines, "nothing was logged"
    assert max(map(len, lines)) < 2000, f"a log line of {max(map(len, lines))} characters"
