"""A client written from docs/PROTOCOL.md alone talks to a real netlet server.

The server is ``protocol_server.py`` in a subprocess. Everything under "the
foreign client" below uses only ``socket``, ``struct``, ``hmac``, ``hashlib``,
``os`` and ``msgpack``: no netlet import, so it shows the specification is
enough to write a client in another language. netlet itself is used only to
start the server and to write its key file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import select
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from netlet.transport import write_key

pytestmark = pytest.mark.timeout(10)

SERVER_SCRIPT = Path(__file__).with_name("protocol_server.py")
STEP = 5.0
"""Seconds any one socket operation may take before the test fails."""


# -- the foreign client: socket, struct, hmac, hashlib, os and msgpack only --------

HEAD = struct.Struct(">II")  # body_len, nbufs; then nbufs x u32 buffer lengths

CALL, REPLY, ERROR, CANCEL, PING, PONG, BYE = 1, 2, 3, 4, 5, 6, 7
EXT_TUPLE, EXT_EXCEPTION, EXT_REF, EXT_BUFFER, EXT_RECORD = 1, 11, 12, 13, 17


class Closed(Exception):
    """The server closed the connection."""


class RemoteException:
    """An ERROR payload (extension type 11), decoded."""

    def __init__(self, type_name: str, args: list[Any], message: str, traceback: str) -> None:
        self.type_name = type_name
        self.args = args
        self.message = message
        self.traceback = traceback


class Ref:
    """A remote reference (extension type 12)."""

    def __init__(self, node: str, address: str, name: str, kind: str = "object") -> None:
        self.node, self.address, self.name, self.kind = node, address, name, kind


class Record:
    """A record (extension type 17, §6.4): its wire id and its fields, in order."""

    def __init__(self, wire_id: int, *fields: Any) -> None:
        self.wire_id, self.fields = wire_id, list(fields)


def frame(body: bytes, buffers: list[bytes] | tuple[bytes, ...] = ()) -> bytes:
    lens = b"".join(struct.pack(">I", len(b)) for b in buffers)
    return HEAD.pack(len(body), len(buffers)) + lens + body + b"".join(buffers)


def encode(value: Any) -> bytes:
    def default(obj: Any) -> Any:
        if isinstance(obj, tuple):
            return msgpack.ExtType(EXT_TUPLE, encode(list(obj)))
        if isinstance(obj, Ref):
            return msgpack.ExtType(EXT_REF, encode([obj.node, obj.address, obj.name, obj.kind]))
        if isinstance(obj, Record):
            return msgpack.ExtType(EXT_RECORD, encode([obj.wire_id, *obj.fields]))
        raise TypeError(f"cannot encode {type(obj).__name__}")

    # strict_types: tuples reach ``default`` instead of being packed as arrays
    return msgpack.packb(value, default=default, strict_types=True, use_bin_type=True)


def decode(body: bytes, buffers: list[bytes] | tuple[bytes, ...] = ()) -> Any:
    def unpack(data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=hook)

    def hook(code: int, data: bytes) -> Any:
        if code == EXT_TUPLE:
            return tuple(unpack(data))
        if code == EXT_EXCEPTION:
            type_name, packed_args, message, tb = unpack(data)
            return RemoteException(type_name, unpack(packed_args.data), message, tb)
        if code == EXT_REF:
            return Ref(*unpack(data))
        if code == EXT_BUFFER:
            return buffers[unpack(data)]
        if code == EXT_RECORD:
            return Record(*unpack(data))
        return msgpack.ExtType(code, data)  # 0 (exception args) and anything else: opaque

    return unpack(body)


def proof(key: bytes, label: bytes, client_hello: bytes, server_hello: bytes) -> bytes:
    """PROTOCOL.md 4.4: over the label and the SHA-256 of both hello bodies as they travelled."""
    msg = (label + b"\0" + hashlib.sha256(client_hello).digest()
           + hashlib.sha256(server_hello).digest())
    return hmac.new(key, msg, hashlib.sha256).digest()


class Client:
    """One connection: frames, the handshake and calls."""

    def __init__(self, address: tuple[str, int], node: str | None = None) -> None:
        self.sock = socket.create_connection(address, timeout=STEP)
        self.node = node or os.urandom(16).hex()
        self.server: dict[str, Any] = {}
        self._next_id = 1

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    # frames
    def send_frame(self, body: bytes, buffers: list[bytes] | tuple[bytes, ...] = ()) -> None:
        self.sock.sendall(frame(body, buffers))

    def _recv_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            try:
                chunk = self.sock.recv(n - len(out))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed(f"closed after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)

    def recv_frame(self) -> tuple[bytes, list[bytes]]:
        body_len, nbufs = HEAD.unpack(self._recv_exact(8))
        lens = struct.unpack(f">{nbufs}I", self._recv_exact(4 * nbufs)) if nbufs else ()
        body = self._recv_exact(body_len)
        return body, [self._recv_exact(n) for n in lens]

    def recv_message(self) -> Any:
        return decode(*self.recv_frame())

    def expect_closed(self) -> None:
        """Read until the server closes; fails on a frame (or a timeout)."""
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            return
        assert data == b"", f"expected the server to close, got {data!r}"

    # handshake
    def hello(self, key: bytes | None = None, **fields: Any) -> dict[str, Any]:
        """Send the hello map and return the server's first answer."""
        self.nonce = os.urandom(32)
        msg = {"netlet": 1, "node": self.node, "address": "", "nonce": self.nonce,
               "auth": "hmac-sha256" if key else None, "role": "link", "pickle": False}
        msg.update(fields)
        self.hello_body = msgpack.packb(msg, use_bin_type=True)  # the proofs cover these bytes
        self.send_frame(self.hello_body)
        self.server_body = self.recv_frame()[0]
        reply: dict[str, Any] = msgpack.unpackb(self.server_body, raw=False)
        self.server = reply
        return reply

    def server_proof(self) -> bytes:
        """With a key, the server's proof follows its hello in a frame of its own."""
        answer: dict[str, Any] = msgpack.unpackb(self.recv_frame()[0], raw=False)
        value: bytes = answer["proof"]
        return value

    def send_proof(self, key: bytes) -> dict[str, Any]:
        """Answer the server's challenge; returns its last handshake frame."""
        mine = proof(key, b"client", self.hello_body, self.server_body)
        self.send_frame(msgpack.packb({"proof": mine}, use_bin_type=True))
        answer: dict[str, Any] = msgpack.unpackb(self.recv_frame()[0], raw=False)
        return answer

    def handshake(self, key: bytes | None = None, role: str = "link") -> None:
        reply = self.hello(key, role=role)
        assert "error" not in reply, reply
        assert reply["netlet"] == 1
        if key is not None:
            expected = proof(key, b"server", self.hello_body, self.server_body)
            assert hmac.compare_digest(self.server_proof(), expected), "server lacks the key"
            assert self.send_proof(key) == {"ok": True}

    # calls
    def start_call(self, target: str, method: str, *args: Any, oneway: bool = False,
                   buffers: tuple[bytes, ...] = ()) -> int:
        cid = 0 if oneway else self._next_id
        if not oneway:
            self._next_id += 1
        self.send_frame(encode([CALL, cid, target, method, list(args), None]), buffers)
        return cid

    def call(self, target: str, method: str, *args: Any) -> tuple[int, Any]:
        """(kind, value) of the answer: REPLY and the result, or ERROR and the exception."""
        cid = self.start_call(target, method, *args)
        msg = self.recv_message()
        assert msg[1] == cid, msg
        return msg[0], msg[2]


# -- the server ------------------------------------------------------------------


def _start_server(*args: str) -> Iterator[tuple[str, int]]:
    with subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), *args], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 8.0)
            line = proc.stdout.readline().strip() if ready else ""
            if not line.startswith("tcp://"):
                pytest.fail(f"the server did not start (said {line!r}, exit {proc.poll()})")
            host, _, port = line.removeprefix("tcp://").rpartition(":")
            yield host, int(port)
        finally:
            proc.kill()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    yield from _start_server()


@pytest.fixture(scope="module")
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, key: bytes) -> Iterator[tuple[str, int]]:
    path = tmp_path_factory.mktemp("key") / "cluster.key"
    write_key(path, key)
    yield from _start_server("--key-file", str(path))


# -- without a key ---------------------------------------------------------------


def test_handshake_without_key(server: tuple[str, int]) -> None:
    with Client(server) as c:
        reply = c.hello()
    assert reply["netlet"] == 1
    assert isinstance(reply["node"], str)
    assert reply["node"]
    assert reply["address"] == f"tcp://{server[0]}:{server[1]}"
    assert reply["auth"] is None
    assert reply["pickle"] is False
    assert "nonce" not in reply
    assert "proof" not in reply


# The annotated example in PROTOCOL.md, byte for byte.
DOC_CALL = bytes.fromhex(
    "00000010 00000000 96 01 07 a4 63616c63 a3 616464 92 02 03 c0")
DOC_REPLY = bytes.fromhex("00000004 00000000 93 02 07 05")
_NOT_EXPOSED = b"Calc.nope is not exposed for remote calls".hex()
DOC_ERROR = bytes.fromhex(
    "0000007b 00000000 93 03 09 c7 75 0b 94 b8" + b"netlet.errors.NotExposed".hex()
    + "c7 2c 00 91 d9 29" + _NOT_EXPOSED + "d9 29" + _NOT_EXPOSED + "a0")


def test_documented_call_and_reply_bytes(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        assert frame(encode([CALL, 7, "calc", "add", [2, 3], None])) == DOC_CALL
        c.sock.sendall(DOC_CALL)
        assert c._recv_exact(len(DOC_REPLY)) == DOC_REPLY
        c.send_frame(encode([CALL, 9, "calc", "nope", [], None]))
        assert c._recv_exact(len(DOC_ERROR)) == DOC_ERROR


def test_call_and_reply(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        assert c.call("calc", "add", 2, 3) == (REPLY, 5)
        assert c.call("calc", "add", "net", "let") == (REPLY, "netlet")
        assert c.call("calc", "echo", {"a": [1, None, 2.5, b"\x00\xff"]}) == (
            REPLY, {"a": [1, None, 2.5, b"\x00\xff"]})


def test_tuple_travels_as_extension_type_1(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        cid = c.start_call("calc", "echo", (1, "a", (2, 3)))
        body, _ = c.recv_frame()
        raw = msgpack.unpackb(body, raw=False)  # no ext hook: see the ext itself
        assert raw[:2] == [REPLY, cid]
        assert raw[2] == msgpack.ExtType(EXT_TUPLE, encode([1, "a", (2, 3)]))
        assert decode(body) == [REPLY, cid, (1, "a", (2, 3))]
        # tuples arrive as tuples: the server computes (1,) + (2,)
        assert c.call("calc", "add", (1,), (2,)) == (REPLY, (1, 2))


def test_raising_method_gives_an_error_reply(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        kind, exc = c.call("calc", "fail", "boom")
        assert kind == ERROR
        assert isinstance(exc, RemoteException)
        assert exc.type_name == "builtins.ValueError"
        assert exc.args == ["boom", 42]
        assert exc.message == "('boom', 42)"
        assert "Traceback (most recent call last)" in exc.traceback
        assert "ValueError: ('boom', 42)" in exc.traceback
        # the connection is still good
        assert c.call("calc", "add", 1, 1) == (REPLY, 2)


def test_unknown_names_give_error_replies(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        for method in ("nope", "_hidden", "__init__"):
            kind, exc = c.call("calc", method)
            assert kind == ERROR
            assert exc.type_name == "netlet.errors.NotExposed"
            assert exc.message == f"Calc.{method} is not exposed for remote calls"
            assert exc.args == [exc.message]
            assert exc.traceback == ""
        kind, exc = c.call("nobody", "add", 1, 2)
        assert kind == ERROR
        assert exc.type_name == "netlet.errors.NoSuchObject"
        kind, exc = c.call("calc", "add", 1)
        assert kind == ERROR
        assert exc.type_name == "netlet.errors.BadArguments"


def test_type_names_match_netlet_errors() -> None:
    from netlet.errors import BadArguments, NoSuchObject, NotExposed

    for cls in (NotExposed, NoSuchObject, BadArguments):
        assert f"{cls.__module__}.{cls.__qualname__}" == f"netlet.errors.{cls.__name__}"


def test_pipelined_calls_are_matched_by_id(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        calls = [
            encode([CALL, 10, "calc", "add", [40, 2], None]),
            encode([CALL, 11, "calc", "fail", ["second"], None]),
            encode([CALL, 12, "calc", "echo", [], {"x": "by keyword"}]),
        ]
        c.sock.sendall(b"".join(frame(body) for body in calls))  # one write, three calls
        answers = {}
        for _ in calls:
            kind, cid, value = c.recv_message()
            answers[cid] = (kind, value)
        assert answers[10] == (REPLY, 42)
        assert answers[11][0] == ERROR
        assert answers[11][1].args == ["second", 42]
        assert answers[12] == (REPLY, "by keyword")


def test_oneway_call_gets_no_reply(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        token = os.urandom(8).hex()
        c.start_call("calc", "record", token, oneway=True)
        c.start_call("calc", "nope", oneway=True)  # a oneway error is not answered either
        cid = c.start_call("calc", "recorded")
        # "calc" runs one call at a time in arrival order: the first answer on the
        # wire is the one to ``recorded``, and it already saw the oneway call.
        kind, got_cid, value = c.recv_message()
        assert (kind, got_cid) == (REPLY, cid)
        assert token in value


def test_duplicate_call_id_is_ignored(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        c.send_frame(encode([CALL, 5, "calc", "add", [1, 1], None]))
        c.send_frame(encode([CALL, 5, "calc", "add", [2, 2], None]))  # dropped
        c.send_frame(encode([CALL, 6, "calc", "add", [3, 3], None]))
        assert c.recv_message() == [REPLY, 5, 2]
        assert c.recv_message() == [REPLY, 6, 6]


def test_ping_is_answered_with_pong(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        c.send_frame(encode([PING, {"t": 1}]))
        assert c.recv_message() == [PONG, {"t": 1}]


def test_out_of_band_buffers(server: tuple[str, int]) -> None:
    big = os.urandom(100_000)
    with Client(server) as c:
        c.handshake()
        cid = c.start_call("calc", "echo", msgpack.ExtType(EXT_BUFFER, encode(0)),
                           buffers=(big,))
        body, buffers = c.recv_frame()
        # The reply is at least the threshold (64 KiB): it comes out of band too.
        assert [len(b) for b in buffers] == [len(big)]
        raw = msgpack.unpackb(body, raw=False)
        assert raw == [REPLY, cid, msgpack.ExtType(EXT_BUFFER, encode(0))]
        assert decode(body, buffers) == [REPLY, cid, big]
        # a small binary inline comes back inline
        assert c.call("calc", "echo", b"small") == (REPLY, b"small")


def test_callback_over_the_same_connection(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        cid = c.start_call("calc", "call_back", Ref(c.node, "", "my-doubler"), 20)
        # The server calls us back on this connection, with an id of its own.
        kind, server_cid, target, method, args, kwargs = c.recv_message()
        assert (kind, target, method, args, kwargs) == (CALL, "my-doubler", "double", [20], None)
        assert server_cid != 0
        c.send_frame(encode([REPLY, server_cid, args[0] * 2]))
        assert c.recv_message() == [REPLY, cid, 41]


def test_direct_role_serves_calls(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake(role="direct")
        assert c.call("calc", "add", 20, 22) == (REPLY, 42)
        kind, exc = c.call("calc", "fail", "direct")
        assert kind == ERROR
        assert exc.type_name == "builtins.ValueError"


def test_version_mismatch_is_answered_then_closed(server: tuple[str, int]) -> None:
    with Client(server) as c:
        reply = c.hello(netlet=2)
        assert reply["error"] == "version"
        assert isinstance(reply["message"], str)
        c.expect_closed()


def test_garbage_closes_only_that_connection(server: tuple[str, int]) -> None:
    with Client(server) as good:
        good.handshake()
        assert good.call("calc", "add", 1, 2) == (REPLY, 3)
        with Client(server) as bad:
            bad.send_frame(b"\xc1 this is not msgpack")  # a whole frame, garbage body
            bad.expect_closed()
        with Client(server) as bad:
            bad.sock.sendall(HEAD.pack(0x7FFF_FFFF, 0))  # announces 2 GiB
            bad.expect_closed()
        with Client(server) as bad:
            bad.sock.sendall(b"\xff" * 64)  # a header announcing 2**32 - 1 buffers
            bad.expect_closed()
        with Client(server) as bad:
            bad.handshake()
            bad.send_frame(b"\xc1")  # garbage after the handshake
            bad.expect_closed()
        assert good.call("calc", "add", 3, 4) == (REPLY, 7)
    with Client(server) as fresh:
        fresh.handshake()
        assert fresh.call("calc", "echo", "still serving") == (REPLY, "still serving")


# -- with a cluster key ----------------------------------------------------------


def test_hmac_test_vector() -> None:
    """The worked example in PROTOCOL.md."""
    key = bytes(range(32))
    client_hello = bytes.fromhex(
        "87a66e65746c657401a46e6f6465ab636c69656e742d6e6f6465a761646472657373a0a56e6f6e6365"
        "c4201111111111111111111111111111111111111111111111111111111111111111a461757468ab68"
        "6d61632d736861323536a4726f6c65a46c696e6ba67069636b6c65c2")
    server_hello = bytes.fromhex(
        "86a66e65746c657401a46e6f6465ab7365727665722d6e6f6465a761646472657373b47463703a2f2f"
        "3132372e302e302e313a37303030a461757468ab686d61632d736861323536a56e6f6e6365c42022"
        "22222222222222222222222222222222222222222222222222222222222222a67069636b6c65c2")
    assert msgpack.unpackb(client_hello)["node"] == "client-node"
    assert msgpack.unpackb(server_hello)["nonce"] == b"\x22" * 32
    assert hashlib.sha256(client_hello).hexdigest() == (
        "d192104fbfc1f03e942a18c903e72087534325e106fa704f93972a765977366e")
    assert hashlib.sha256(server_hello).hexdigest() == (
        "6adb5cd8894841c8497289d8645b12fd879594c5f580969be84ef7fde0b4d9d6")
    assert proof(key, b"server", client_hello, server_hello).hex() == (
        "df4fdd5c7cae5ade235b4d15676acd2fede161dc640e8452806c8f7f2d55d84f")
    assert proof(key, b"client", client_hello, server_hello).hex() == (
        "457f2208450c876253937b20bd0f477e548186581a4d08c74c089a78ebb48803")


def test_hmac_handshake_then_calls(keyed_server: tuple[str, int], key: bytes) -> None:
    with Client(keyed_server) as c:
        reply = c.hello(key)
        assert reply["auth"] == "hmac-sha256"
        assert len(reply["nonce"]) == 32
        assert "proof" not in reply  # it follows in a frame of its own
        assert c.server_proof() == proof(key, b"server", c.hello_body, c.server_body)
        assert c.send_proof(key) == {"ok": True}
        assert c.call("calc", "add", 2, 3) == (REPLY, 5)
        kind, exc = c.call("calc", "fail", "keyed")
        assert kind == ERROR
        assert exc.type_name == "builtins.ValueError"


def test_wrong_key_gets_an_auth_error_then_close(keyed_server: tuple[str, int]) -> None:
    with Client(keyed_server) as c:
        reply = c.hello(b"not the key, but long enough")
        assert reply["auth"] == "hmac-sha256"
        c.server_proof()  # made with the real key: it does not match ours
        assert c.send_proof(b"not the key, but long enough") == {
            "error": "auth", "message": "wrong cluster key"}
        c.expect_closed()


def test_no_key_offered_to_a_keyed_server(keyed_server: tuple[str, int]) -> None:
    with Client(keyed_server) as c:
        reply = c.hello()
        assert reply["error"] == "auth"
        c.expect_closed()


def test_keyed_server_survives_garbage(keyed_server: tuple[str, int], key: bytes) -> None:
    with Client(keyed_server) as bad:
        bad.send_frame(b"\xc1\xc1\xc1")
        bad.expect_closed()
    with Client(keyed_server) as bad:  # a call instead of the proof: nothing is decoded
        bad.hello(key)
        bad.server_proof()
        bad.send_frame(encode([CALL, 1, "calc", "add", [1, 2], None]))
        bad.expect_closed()
    with Client(keyed_server) as good:
        good.handshake(key)
        assert good.call("calc", "add", 5, 5) == (REPLY, 10)


# -- a served channel (§15) ---------------------------------------------------------------


def test_channel_send_receive_ack_and_pipelined_sends(server: tuple[str, int]) -> None:
    with Client(server) as c:
        c.handshake()
        assert c.call("box", "capacity") == (REPLY, 4)
        assert c.call("box", "send", "plain", None) == (REPLY, None)
        # Pipelined: one value placed and 2 slots lent, then a push fills them and
        # asks for 1 more, which the buffer of 4 still has.
        sender = f"{c.node}:h1"
        assert c.call("box", "send_reserving", sender, "r0", False, 2, None) == (REPLY, 2)
        assert c.call("box", "push", sender, ["p1", "p2"], [], 1) == (REPLY, 0)
        kind, exc = c.call("box", "push", sender, ["too many"], [], 0)
        assert kind == ERROR
        assert exc.type_name == "netlet.errors.ProtocolError"
        assert c.call("box", "statistics")[1]["buffered"] == 4
        kind, exc = c.call("box", "send_nowait", "full")
        assert (kind, exc.type_name) == (ERROR, "netlet.errors.WouldBlock")
        # Acknowledged receives, in order.
        got = []
        for i in range(4):
            ticket = f"{c.node}:t{i}"
            kind, (tag, value) = c.call("box", "receive", 1.0, ticket)
            assert (kind, tag) == (REPLY, "value")
            assert c.call("box", "ack", ticket) == (REPLY, None)
            got.append(value)
        assert got == ["plain", "r0", "p1", "p2"]


def test_channel_value_not_acknowledged_goes_back_when_the_receiver_leaves(
        server: tuple[str, int]) -> None:
    with Client(server) as first:
        first.handshake()
        assert first.call("box", "send", "precious", None) == (REPLY, None)
        kind, (_, value) = first.call("box", "receive", 1.0, f"{first.node}:t")
        assert (kind, value) == (REPLY, "precious")
        # ...and the connection closes without an ack.
    with Client(server) as second:
        second.handshake()
        kind, (_, value) = second.call("box", "receive", 5.0, f"{second.node}:t")
        assert (kind, value) == (REPLY, "precious")
        assert second.call("box", "ack", f"{second.node}:t") == (REPLY, None)


# -- the cluster head (§16): a client and a worker ---------------------------------------

TASKS, PULLED, REPORT, DELIVERY = 30, 31, 32, 33  # §16.5
JOIN_INFO, JOINED, LOAD = 20, 21, 22


def test_a_task_submitted_run_and_delivered_in_the_documented_records(
        keyed_server: tuple[str, int], key: bytes) -> None:
    with Client(keyed_server) as client, Client(keyed_server) as worker:
        client.handshake(key)
        worker.handshake(key)
        head = "netlet.head"
        # §16.1: who we are is a JoinInfo record; the map of old is refused.
        kind, exc = client.call(head, "join", client.node, "client", {"pid": 1}, None)
        assert (kind, exc.type_name) == (ERROR, "netlet.errors.ConfigError")
        kind, joined = client.call(head, "join", client.node, "client",
                                   Record(JOIN_INFO, "", "box", 1, "", 0), None)
        assert (kind, joined.wire_id, joined.fields[3]) == (REPLY, JOINED, None)
        sink = Ref(client.node, "", "my-sink")
        body = msgpack.packb([[2, 3], None])
        # §16.2: the tasks are columns; columns of unequal length are refused whole.
        kind, exc = client.call(head, "submit", client.node, sink,
                                Record(TASKS, ["c:1", "c:2"], ["m:add"], [body], [0]), {})
        assert (kind, exc.type_name) == (ERROR, "netlet.errors.DecodeError")
        assert "field fns has 1 items, but ids has 2" in exc.message
        assert client.call(head, "submit", client.node, sink,
                           Record(TASKS, ["c:1"], ["m:add"], [body], [0]), {}) == (REPLY, 1)

        kind, joined = worker.call(head, "join", worker.node, "worker",
                                   Record(JOIN_INFO, "foreign", "box", 2, "", 1), None)
        assert (kind, joined.wire_id) == (REPLY, JOINED)
        _, heartbeat, dead_after, epoch = joined.fields
        assert [type(heartbeat), type(dead_after), type(epoch)] == [float, float, int]
        assert worker.call(head, "heartbeat", worker.node, Record(LOAD, 0, 0, None, None),
                           epoch, [], 0) == (REPLY, True)
        kind, pulled = worker.call(head, "pull", worker.node, epoch, 4)
        assert (kind, pulled.wire_id) == (REPLY, PULLED)
        ids, fns, bodies, leases, functions, seq = pulled.fields
        assert (ids, fns, bodies, functions) == (["c:1"], ["m:add"], [body], {})
        assert [type(leases[0]), type(seq)] == [str, int]
        result = Record(REPORT, ids, [True], [msgpack.packb(5)], leases, [None], [None], [])
        assert worker.call(head, "report", worker.node, epoch, result) == (REPLY, None)

        # §16.4: the head calls our sink back on this connection (``started`` oneway first).
        while True:
            kind, cid, target, method, args, _ = client.recv_message()
            assert (kind, target) == (CALL, "my-sink")
            if method == "results":
                break
            assert (method, cid) == ("started", 0)
        (delivery,) = args
        assert delivery.wire_id == DELIVERY
        assert delivery.fields == [["c:1"], [True], [msgpack.packb(5)], [None]]
        client.send_frame(encode([REPLY, cid, None]))
