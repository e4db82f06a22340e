"""docs/PROTOCOL.md §3, §4 and §12: the handshake's and the frames' promises, attacked.

Each test sends what the text says is refused, to a real node over a real
socket, and checks the stated outcome ("closes without an answer", "error
frame, then close", "ERROR ``DecodeError``, the connection stays open") and
that the node keeps serving. The other direction too: a fake server sends a
netlet client what a netlet server would refuse (§3.3: "a netlet client
enforces the same limits on what a server sends"). And the quiet promises of
§3.1: nothing is sent before the client speaks, and an idle connection is
never timed out.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

import netlet
from netlet.errors import (
    AuthenticationError,
    CallTimeout,
    HandshakeError,
    NetletError,
    VersionMismatch,
)
from netlet.transport import generate_key
from tests.conftest import STEP, RawClient, frame, hmac_proof

NodeFactory = Callable[..., netlet.Node]

pytestmark = pytest.mark.timeout(60)

KEY = generate_key()


@netlet.expose
class Echo:
    def echo(self, value: Any) -> Any:
        return value


@pytest.fixture
def plain(node_factory: NodeFactory) -> str:
    server = node_factory("tcp://127.0.0.1:0")
    server.serve(Echo(), "echo")
    assert server.address is not None
    return server.address


@pytest.fixture
def keyed(node_factory: NodeFactory) -> str:
    server = node_factory("tcp://127.0.0.1:0", key=KEY)
    server.serve(Echo(), "echo")
    assert server.address is not None
    return server.address


def _still_serves(address: str, key: bytes | None = None) -> None:
    with RawClient.connect(address) as raw:
        raw.handshake(key)
        raw.send_msg([1, 1, "echo", "echo", ["alive"], None])
        assert raw.recv_msg() == [2, 1, "alive"]


def _hello(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"netlet": 1, "node": "n" * 32, "address": "",
                            "nonce": b"\1" * 32, "auth": None, "role": "link", "pickle": False}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()

# §4.1 and §4.6: hellos the server closes without an answer.
BAD_HELLOS: dict[str, Any] = {
    "no nonce": _hello(nonce=_DROP),
    "nonce as a str": _hello(nonce="1" * 32),
    "nonce of 31 bytes": _hello(nonce=b"\1" * 31),
    "nonce of 33 bytes": _hello(nonce=b"\1" * 33),
    "a str over 4096 bytes": _hello(node="n" * 4097),
    "a bin over 4096 bytes": _hello(extra=b"\0" * 4097),
    "an array of 65 entries": _hello(extra=list(range(65))),
    "a map of 65 entries": {**_hello(), **{f"k{i}": i for i in range(65)}},
    "a nested map over 64 entries": _hello(extra={str(i): i for i in range(65)}),
    "an extension value": _hello(extra=msgpack.ExtType(1, b"\x90")),
    "a list, not a map": list(_hello().items()),
}


@pytest.mark.parametrize("name", list(BAD_HELLOS))
def test_a_bad_hello_is_closed_without_an_answer(plain: str, name: str) -> None:
    with RawClient.connect(plain) as raw:
        raw.send_msg(BAD_HELLOS[name])
        assert raw.recv_frame_or_eof(STEP) is None, name
    _still_serves(plain)


def test_hellos_at_the_limits_are_accepted_control(plain: str) -> None:
    for hello in (_hello(node="n" * 4096), _hello(extra=list(range(63))),
                  {**_hello(), **{f"k{i}": i for i in range(64 - len(_hello()))}}):
        with RawClient.connect(plain) as raw:
            raw.send_msg(hello)
            reply = raw.recv_msg()
            assert reply["netlet"] == 1, reply


@pytest.mark.parametrize("proof", [None, "x" * 32, b"\0" * 31, b"\0" * 33, 7, [b"\0" * 32]],
                         ids=["missing", "str", "31 bytes", "33 bytes", "int", "array"])
def test_a_malformed_proof_is_closed_without_an_answer(keyed: str, proof: Any) -> None:
    with RawClient.connect(keyed) as raw:
        raw.hello(key=KEY)
        raw.recv_frame()  # the server's hello
        raw.recv_msg()  # its proof
        raw.send_msg({} if proof is None else {"proof": proof})
        assert raw.recv_frame_or_eof(STEP) is None
    _still_serves(keyed, KEY)


def test_a_wrong_proof_gets_the_auth_error_then_close(keyed: str) -> None:
    with RawClient.connect(keyed) as raw:
        raw.hello(key=KEY)
        reply, _ = raw.recv_frame()
        raw.recv_msg()
        raw.send_msg({"proof": hmac_proof(b"w" * 32, b"client", raw.hello_body, reply)})
        assert raw.recv_msg() == {"error": "auth", "message": "wrong cluster key"}
        assert raw.recv_frame_or_eof(STEP) is None


def test_with_a_key_a_call_behind_the_hello_is_taken_for_the_proof_and_closes(
        keyed: str) -> None:
    with RawClient.connect(keyed) as raw:
        raw.hello(key=KEY)
        raw.send_msg([1, 1, "echo", "echo", ["sneaked in"], None])
        raw.recv_frame()  # the server's hello and proof may come first
        raw.recv_msg()
        assert raw.recv_frame_or_eof(STEP) is None
    _still_serves(keyed, KEY)


def test_nothing_is_sent_before_the_client_speaks(plain: str) -> None:
    with RawClient.connect(plain) as raw:
        raw.sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            raw.sock.recv(1)
        raw.sock.settimeout(STEP)
        raw.handshake()  # and then the server answers as usual


def test_an_idle_connection_is_never_timed_out(node_factory: NodeFactory) -> None:
    """keepalive 0.1 s: an idle peer we do not wait on outlives 15 keepalives, unpinged."""
    server = node_factory("tcp://127.0.0.1:0", keepalive=0.1)
    server.serve(Echo(), "echo")
    assert server.address is not None
    with RawClient.connect(server.address) as raw:
        raw.handshake()
        raw.send_msg([1, 1, "echo", "echo", [1], None])
        assert raw.recv_msg() == [2, 1, 1]
        raw.sock.settimeout(1.5)
        with pytest.raises(TimeoutError):  # no PING, no close: nothing at all
            raw.sock.recv(1)
        raw.sock.settimeout(STEP)
        raw.send_msg([1, 2, "echo", "echo", [2], None])
        assert raw.recv_msg() == [2, 2, 2]


# -- a hostile server: the client holds it to the same limits (§3.3) ------------------------


class FakeServer:
    """Reads a client's hello, then sends what ``attack(hello_body)`` returns, and waits.

    It keeps each connection open: a client that waited for the announced bytes
    would hang, one that checks the header closes it (``closed`` counts those).
    """

    def __init__(self, attack: Callable[[bytes], bytes]) -> None:
        self.attack = attack
        self.closed = 0
        self.accepted = 0
        self.hellos: list[bytes] = []
        self.after = bytearray()  # what clients sent after our attack
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self._sock.getsockname()[1]}"
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name="fake-server", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(STEP * 3)
            head = _recv_exact(conn, 8)
            body_len, nbufs = struct.unpack(">II", head)
            _recv_exact(conn, 4 * nbufs)
            body = _recv_exact(conn, body_len)
            self.hellos.append(body)
            conn.sendall(self.attack(body))
            while chunk := conn.recv(65536):
                self.after += chunk
            self.closed += 1
        except OSError:
            self.closed += 1

    def close(self) -> None:
        self._sock.close()
        for conn in self._conns:
            conn.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError
        data += chunk
    return data


SERVER_HELLO = msgpack.packb({"netlet": 1, "node": "f" * 32, "address": "", "auth": None,
                              "pickle": False})

ATTACKS: dict[str, Callable[[bytes], bytes]] = {
    "4 GiB header in the handshake": lambda _: struct.pack(">II", 0xFFFF_FFFF, 0),
    "17 KiB hello": lambda _: struct.pack(">II", 17 * 1024, 0) + b"\x80",
    "a buffer in the handshake": lambda _: struct.pack(">III", 1, 1, 1) + b"\x80",
    "4 GiB header after the handshake":
        lambda _: frame(SERVER_HELLO) + struct.pack(">II", 0xFFFF_FFFF, 0),
    "65 buffers after the handshake":
        lambda _: frame(SERVER_HELLO) + struct.pack(">II", 1, 65) + b"\0\0\0\1" * 65,
}


@pytest.fixture
def fake_server() -> Iterator[Callable[[Callable[[bytes], bytes]], FakeServer]]:
    made: list[FakeServer] = []

    def make(attack: Callable[[bytes], bytes]) -> FakeServer:
        made.append(FakeServer(attack))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_client_holds_a_server_to_the_frame_limits(
        fake_server: Callable[[Callable[[bytes], bytes]], FakeServer],
        node_factory: NodeFactory, name: str) -> None:
    server = fake_server(ATTACKS[name])
    client = node_factory(call_timeout=20)
    echo = client.proxy(server.address, "echo")
    start = time.monotonic()
    calls: list[Callable[[], Any]] = [lambda: echo.echo(1),
                                      lambda: echo.echo.future(1).result(30)]
    for call in calls:
        with pytest.raises(NetletError) as failed:
            call()
        assert not isinstance(failed.value, CallTimeout), name  # it did not wait for the bytes
    assert time.monotonic() - start < 15
    assert server.accepted >= 1
    deadline = time.monotonic() + STEP
    while server.closed < server.accepted:  # the client hung up on every connection
        assert time.monotonic() < deadline, (server.closed, server.accepted)
        time.sleep(0.02)


# -- a hostile server in the handshake: what a keyed client refuses (§4.3, §4.5) -------------


def _server_hello(**fields: Any) -> bytes:
    hello = {"netlet": 1, "node": "f" * 32, "address": "", "auth": "hmac-sha256",
             "nonce": b"\2" * 32, "pickle": False, **fields}
    packed: bytes = msgpack.packb(hello)
    return packed


def _answer(hello: bytes, *, proof_key: bytes = KEY, **fields: Any) -> bytes:
    """A server hello and its proof, made with ``proof_key`` over the real transcript."""
    server_hello = _server_hello(**fields)
    proof = hmac_proof(proof_key, b"server", hello, server_hello)
    return frame(server_hello) + frame(msgpack.packb({"proof": proof}))


REFUSALS: dict[str, tuple[Callable[[bytes], bytes], type[NetletError], str]] = {
    "a wrong server proof": (lambda h: _answer(h, proof_key=b"w" * 32),
                             AuthenticationError, ""),
    "a proof inside the hello (an older netlet)": (
        lambda h: frame(_server_hello(proof=b"\0" * 32)), AuthenticationError, "upgrade"),
    "auth other than hmac-sha256, with a right proof": (
        lambda h: _answer(h, auth="hmac-md5"), AuthenticationError, ""),
    "a right proof but a different version": (lambda h: _answer(h, netlet=2), HandshakeError, ""),
    "error version": (lambda h: frame(msgpack.packb({"error": "version", "message": "no"})),
                      VersionMismatch, ""),
    "error auth": (lambda h: frame(msgpack.packb({"error": "auth", "message": "no"})),
                   AuthenticationError, ""),
    "an error nobody knows": (lambda h: frame(msgpack.packb({"error": "teapot", "message": "x"})),
                              HandshakeError, ""),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_a_keyed_client_refuses_a_server_that_proves_nothing(
        fake_server: Callable[[Callable[[bytes], bytes]], FakeServer],
        node_factory: NodeFactory, name: str) -> None:
    attack, error, words = REFUSALS[name]
    server = fake_server(attack)
    client = node_factory(key=KEY, call_timeout=10)
    with pytest.raises(error, match=words or None) as refused:
        client.proxy(server.address, "echo").echo.future(1).result(20)
    assert not isinstance(refused.value, CallTimeout)
    deadline = time.monotonic() + STEP
    while server.closed < server.accepted:  # and it hung up
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_right_server_proof_is_accepted_control(
        fake_server: Callable[[Callable[[bytes], bytes]], FakeServer],
        node_factory: NodeFactory) -> None:
    """The fake server's proof is right: the client answers with its own, so the
    refusals above come from what each changed, not from a broken fake."""
    server = fake_server(_answer)
    client = node_factory(key=KEY, call_timeout=3)
    with pytest.raises(NetletError):  # the fake never says ok: the call fails, later
        client.proxy(server.address, "echo").echo.future(1).result(20)
    hello = server.hellos[0]
    proof = hmac_proof(KEY, b"client", hello, _server_hello())
    assert bytes(server.after).startswith(frame(msgpack.packb({"proof": proof})))
