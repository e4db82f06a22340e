"""Bad input at a live port: the server (a real subprocess) survives all of it.

One server process serves the whole module (a fresh one replaces it if a test
killed it); each test connects with a raw socket and misbehaves: random bytes, truncated or
huge frames, garbage msgpack after a valid handshake, calls to names that are not
exposed, unknown message kinds, pickles on a connection that did not agree to
them. Afterwards: the bad connection was closed (or answered with an error, as
fits), the server logged a reason naming that connection, no traceback was
dumped, no state changed, and a well-behaved client's calls still succeed, on
both the main link and the direct (blocking-call) path.
"""

from __future__ import annotations

import pickle
import random
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

import netlet
from netlet.codec import Codec, Ext
from netlet.transport import write_key
from tests.conftest import LOGGING_PRELUDE, RawClient, ServerProcess, start_server

KEY = bytes(range(32, 64))

SERVER = LOGGING_PRELUDE + '''
import sys
import netlet


@netlet.expose
class Account:
    def __init__(self):
        self._balance = 0

    def deposit(self, amount: int) -> int:
        self._balance += amount
        return self._balance

    def balance(self) -> int:
        return self._balance

    def echo(self, value):
        return value

    def _reset(self):  # never callable from the network
        self._balance = -1


node = netlet.Node(listen="tcp://127.0.0.1:0", key=netlet.load_key(sys.argv[1]),
                   handshake_timeout=3)
node.serve(Account(), "acct")
print(node.address, flush=True)
node.wait()
'''


@dataclass
class Harness:
    server: ServerProcess
    client: netlet.Node
    balance: int
    since: int
    """The first line of the server's stderr that belongs to this test."""

    def raw(self) -> RawClient:
        return RawClient.connect(self.server.address)

    def check_healthy(self) -> None:
        """The server lives, serves a good client on both paths, and changed nothing."""
        assert self.server.alive(), self.server.stderr.text(self.since)
        acct = self.client.proxy(self.server.address, "acct", timeout=5)
        assert acct.echo("blocking") == "blocking"            # direct path
        assert acct.echo.future("future").result(5) == "future"  # main link
        assert acct.balance() == self.balance

    def check_after(self, port: int, reason: str) -> str:
        """Healthy, and the server logged ``reason`` for the connection from ``port``
        (as a log record, not as a traceback of a thread that died)."""
        self.check_healthy()
        # The server logs before it closes or answers, so the line is already on its
        # way: a short wait is plenty.
        line = self.server.stderr.wait_for(
            rf"^LOG \w+ netlet[\w.]*: .*127\.0\.0\.1:{port}\b.*(?:{reason})", timeout=0.5,
            since=self.since)
        stderr = self.server.stderr.text(self.since)
        assert "Traceback" not in stderr, f"the server dumped a traceback:\n{stderr}"
        return line.string


class Shared:
    """One server process for the module (restarted if a test killed it) and one client."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.key_file = workdir / "cluster.key"
        write_key(self.key_file, KEY)
        self.client = netlet.Node(key=KEY)
        self.server: ServerProcess | None = None

    def live_server(self) -> ServerProcess:
        if self.server is None or not self.server.alive():
            if self.server is not None:
                self.server.stop()
            self.server = start_server(SERVER, self.key_file, workdir=self.workdir)
        return self.server

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    sh = Shared(tmp_path_factory.mktemp("garbage"))
    try:
        yield sh
    finally:
        sh.close()


@pytest.fixture
def harness(shared: Shared) -> Harness:
    server = shared.live_server()
    since = server.stderr.mark()
    balance = shared.client.proxy(server.address, "acct", timeout=5).balance()
    h = Harness(server, shared.client, balance, since)
    h.check_healthy()
    return h


def head(body_len: int, *buf_lens: int) -> bytes:
    return struct.pack(f">II{len(buf_lens)}I", body_len, len(buf_lens), *buf_lens)


def call(cid: int, target: str, method: str, *args: Any) -> list[Any]:
    return [1, cid, target, method, list(args), None]


def decode_reply(raw: RawClient) -> Any:
    body, buffers = raw.recv_frame()
    return Codec().decode(body, buffers)


def error_reply_or_closed(raw: RawClient, cid: int | None = None) -> BaseException | None:
    """What the server did with a bad frame: the exception it answered with, or None
    if it closed the connection. Anything else (a result, or silence) fails."""
    try:
        frame = raw.recv_frame_or_eof(timeout=3)
    except TimeoutError:
        pytest.fail("the server neither answered nor closed the connection")
    if frame is None:
        return None
    reply = Codec().decode(*frame)
    assert reply[0] == 3, f"a bad request was answered with a result: {reply!r}"
    if cid is not None:
        assert reply[1] == cid
    assert isinstance(reply[2], BaseException)
    return reply[2]


ROLES = ["link", "direct"]


# -- before the handshake -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bytes_before_the_handshake(harness: Harness, seed: int) -> None:
    with harness.raw() as raw:
        raw.send_raw(random.Random(seed).randbytes(4096))
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, "frame|buffers|handshake")


def test_garbage_handshake_frame(harness: Harness) -> None:
    with harness.raw() as raw:
        raw.send_frame(b"\xc1\xc1\xc1 not msgpack")
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, "malformed handshake frame")


def test_handshake_frame_that_is_not_a_map(harness: Harness) -> None:
    with harness.raw() as raw:
        raw.send_msg([1, "netlet", b"\0" * 32])
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, "not a map")


def test_truncated_frame_then_close_before_the_handshake(harness: Harness) -> None:
    with harness.raw() as raw:
        raw.send_raw(head(100) + b"\x85" + b"x" * 49)
        raw.sock.shutdown(1)  # SHUT_WR: the rest never comes
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, "closed during handshake")


def test_frame_announcing_4_gib_before_the_handshake(harness: Harness) -> None:
    with harness.raw() as raw:
        raw.send_raw(head(0xFFFFFFFF))
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, r"frame of 4294967295 bytes")


# -- after a valid handshake, on the main link and on a direct connection ----------------------


@pytest.mark.parametrize("role", ROLES)
def test_random_bytes_after_the_handshake(harness: Harness, role: str) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        raw.send_raw(random.Random(7).randbytes(4096))
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, "frame|buffers")


@pytest.mark.parametrize("role", ROLES)
def test_truncated_frame_then_close(harness: Harness, role: str) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        body = msgpack.packb(call(1, "acct", "deposit", 5))
        raw.send_raw(head(len(body)) + body[: len(body) // 2])
        raw.sock.shutdown(1)
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, "truncat|incomplete|mid-frame|partial")


@pytest.mark.parametrize("role", ROLES)
def test_frame_announcing_4_gib(harness: Harness, role: str) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        raw.send_raw(head(0xFFFFFFFF))
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, r"frame of 4294967295 bytes")


@pytest.mark.parametrize("role", ROLES)
def test_too_many_buffers(harness: Harness, role: str) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        raw.send_raw(head(1, *([1] * 1000)))
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, r"1000 buffers")


@pytest.mark.parametrize("role", ROLES)
def test_garbage_msgpack_after_the_handshake(harness: Harness, role: str) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        raw.send_frame(b"\xc1\xc1\xc1\xc1")
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, "undecodable")


@pytest.mark.parametrize("role", ROLES)
def test_unknown_message_kind(harness: Harness, role: str) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        raw.send_msg([99, 1, "acct", "deposit", [1], None])
        assert raw.closed_by_peer(5)
        port = raw.local_port
    harness.check_after(port, "kind 99")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("message", [
    "not a list", 42, {"kind": 1}, [], [1], [1, 5, "acct"], [1, 5, "acct", "deposit", 7, None],
    [1, 5, ["unhashable"], "deposit", [1], None], [1, 5, "acct", ["unhashable"], [1], None],
    [1, [5], "acct", "deposit", [1], None],
], ids=["str", "int", "map", "empty", "kind-only", "short-call", "args-not-list",
        "target-unhashable", "method-unhashable", "cid-unhashable"])
def test_malformed_messages(harness: Harness, role: str, message: Any) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        raw.send_msg(message)
        error_reply_or_closed(raw)
        port = raw.local_port
    harness.check_after(port, "malformed|unexpected|kind|argument")


# -- well-formed requests the server must refuse -------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("target", "method", "error"), [
    ("acct", "_reset", netlet.NotExposed),
    ("acct", "__class__", netlet.NotExposed),
    ("nobody", "deposit", netlet.NoSuchObject),
])
def test_call_to_a_name_that_is_not_exposed(harness: Harness, role: str, target: str,
                                            method: str, error: type[Exception]) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        raw.send_msg(call(5, target, method))
        kind, cid, exc = decode_reply(raw)
        assert (kind, cid, type(exc)) == (3, 5, error)
        # The connection stays usable: the refusal was an answer, not a failure.
        raw.send_msg(call(6, "acct", "echo", "still here"))
        assert decode_reply(raw) == [2, 6, "still here"]
        port = raw.local_port
    harness.check_after(port, re.escape(method) + "|" + re.escape(target))


@pytest.mark.parametrize("role", ROLES)
def test_call_with_an_unknown_extension_type_is_refused(harness: Harness, role: str) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        raw.send_msg([1, 5, "acct", "deposit", [msgpack.ExtType(99, b"")], None])
        exc = error_reply_or_closed(raw, cid=5)
        if role == "link":  # the main link answers, and the connection stays usable
            assert type(exc) is netlet.DecodeError
            raw.send_msg(call(6, "acct", "echo", "ok"))
            assert decode_reply(raw) == [2, 6, "ok"]
        elif exc is not None:
            assert type(exc) is netlet.DecodeError
        port = raw.local_port
    harness.check_after(port, "extension type 99")


class _Mkdir:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("role", ROLES)
def test_pickle_on_a_connection_that_did_not_agree_is_never_unpickled(
        harness: Harness, role: str, tmp_path: Path) -> None:
    marker = tmp_path / f"pwned-{role}"
    payload = msgpack.ExtType(Ext.PICKLE, pickle.dumps(_Mkdir(str(marker))))
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        raw.send_msg([1, 5, "acct", "deposit", [payload], None])
        exc = error_reply_or_closed(raw, cid=5)
        if role == "link" or exc is not None:  # a direct connection may just be closed
            assert type(exc) is netlet.DecodeError
            assert "pickle" in str(exc)
        port = raw.local_port
    harness.check_after(port, "pickle")
    assert not marker.exists()


@pytest.mark.parametrize("role", ROLES)
def test_bad_arguments_are_answered_and_change_nothing(harness: Harness, role: str) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY, role=role)
        raw.send_msg(call(5, "acct", "deposit", 1, 2, 3))
        kind, cid, exc = decode_reply(raw)
        assert (kind, cid, type(exc)) == (3, 5, netlet.BadArguments)
        raw.send_msg([1, 6, "acct", "deposit", [], {"nope": 1}])
        kind, cid, exc = decode_reply(raw)
        assert (kind, cid, type(exc)) == (3, 6, netlet.BadArguments)
    harness.check_healthy()


def test_reply_and_error_frames_from_a_client_are_ignored(harness: Harness) -> None:
    with harness.raw() as raw:
        raw.handshake(KEY)
        raw.send_msg([2, 12345, "a reply nobody asked for"])
        raw.send_msg([3, 12346, "an error nobody asked for"])
        raw.send_msg([4, 77])  # a cancel for a call that does not exist
        raw.send_msg(call(1, "acct", "echo", "after"))
        assert decode_reply(raw) == [2, 1, "after"]
    harness.check_healthy()
