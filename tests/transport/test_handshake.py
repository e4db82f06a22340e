"""The opening exchange with real nodes on 127.0.0.1: keys, refusals, replays, timeouts, pickle.

With a cluster key both ends prove they hold it (HMAC over fresh nonces) before
any other frame is decoded; a peer that cannot is refused with
``AuthenticationError``, and the server logs why. Pickle is agreed only between
authenticated peers that both opted in.
"""

from __future__ import annotations

import logging
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

import netlet
from netlet.errors import AuthenticationError, EncodeError, HandshakeError, VersionMismatch
from netlet.testing import VirtualClock
from netlet.transport import PeerInfo, TransportConfig, connect, listen
from tests.conftest import RawClient, arun, hmac_proof

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))

NodeFactory = Callable[..., netlet.Node]


@netlet.expose
class Recorder:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def echo(self, value: Any) -> Any:
        self.calls.append(value)
        return value

    def apply(self, fn: Callable[[int], int], x: int) -> int:
        return fn(x)


class _Notify(logging.Handler):
    """Wakes waiters whenever a record reaches the root logger (from any node thread).

    Added to the root logger during the test, so it runs after caplog's handler:
    when it wakes a waiter, caplog already holds the record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.cond:
            self.cond.notify_all()


_notify = _Notify()


@pytest.fixture
def netlet_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="netlet")
    try:
        yield caplog
    finally:
        logging.getLogger().removeHandler(_notify)


def served(node_factory: NodeFactory, **options: Any) -> tuple[netlet.Node, Recorder]:
    server = node_factory("tcp://127.0.0.1:0", **options)
    recorder = Recorder()
    server.serve(recorder, "rec")
    return server, recorder


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def wait_for_log(caplog: pytest.LogCaptureFixture, needle: str, timeout: float = 5.0) -> str:
    """The first log message captured by caplog containing ``needle``; records come
    from node threads, so wait (on a condition, woken by each new record) until it
    is there."""

    def find() -> str | None:
        for r in list(caplog.records):
            if needle in r.getMessage():
                return r.getMessage()
        return None

    with _notify.cond:
        root = logging.getLogger()
        if _notify not in root.handlers:
            root.addHandler(_notify)
        if not _notify.cond.wait_for(lambda: find() is not None, timeout):
            pytest.fail(f"no log message containing {needle!r}; got:\n{log_text(caplog)}")
    found = find()
    assert found is not None
    return found


# -- keys -------------------------------------------------------------------------------


def test_same_key_works(node_factory: NodeFactory) -> None:
    server, rec = served(node_factory, key=KEY)
    client = node_factory(key=KEY)
    svc = client.proxy(server.address, "rec", timeout=5)
    assert svc.echo("blocking") == "blocking"       # the direct path
    assert svc.echo.future("future").result(5) == "future"  # the main link
    assert rec.calls == ["blocking", "future"]


def test_client_without_key_is_refused(node_factory: NodeFactory,
                                       netlet_logs: pytest.LogCaptureFixture) -> None:
    server, rec = served(node_factory, key=KEY)
    client = node_factory()
    with pytest.raises(AuthenticationError, match="requires the cluster key"):
        client.proxy(server.address, "rec", timeout=5).echo("x")
    wait_for_log(netlet_logs, "client offered no authentication")
    assert rec.calls == []
    # The server goes on serving clients that hold the key.
    assert node_factory(key=KEY).proxy(server.address, "rec").echo(1) == 1


def test_client_with_wrong_key_is_refused(node_factory: NodeFactory,
                                          netlet_logs: pytest.LogCaptureFixture) -> None:
    server, rec = served(node_factory, key=KEY)
    client = node_factory(key=OTHER_KEY)
    with pytest.raises(AuthenticationError):
        client.proxy(server.address, "rec", timeout=5).echo("x")
    assert rec.calls == []
    wait_for_log(netlet_logs, "refused connection")


def test_server_refuses_a_client_proof_made_with_the_wrong_key(
        node_factory: NodeFactory, netlet_logs: pytest.LogCaptureFixture) -> None:
    server, _ = served(node_factory, key=KEY)
    with RawClient.connect(server.address) as raw:
        raw.hello(key=OTHER_KEY)
        reply_body, _ = raw.recv_frame()
        raw.recv_msg()  # the server's proof, which we cannot check
        raw.send_msg({"proof": hmac_proof(OTHER_KEY, b"client", raw.hello_body, reply_body)})
        assert raw.recv_msg() == {"error": "auth", "message": "wrong cluster key"}
        assert raw.closed_by_peer(5)
        port = raw.local_port
    msg = wait_for_log(netlet_logs, f"127.0.0.1:{port}")
    assert "does not hold the cluster key" in msg


def test_keyless_server_is_refused_by_a_client_with_a_key(node_factory: NodeFactory) -> None:
    server, rec = served(node_factory)
    client = node_factory(key=KEY)
    with pytest.raises(AuthenticationError, match="did not authenticate"):
        client.proxy(server.address, "rec", timeout=5).echo("x")
    assert rec.calls == []


def test_nothing_is_decoded_before_the_proof(node_factory: NodeFactory,
                                             netlet_logs: pytest.LogCaptureFixture) -> None:
    server, rec = served(node_factory, key=KEY)
    with RawClient.connect(server.address) as raw:
        raw.hello(key=KEY)
        # A CALL where the proof belongs: it must be refused, never run.
        raw.send_msg([1, 1, "rec", "echo", ["sneaky"], None])
        raw.recv_msg()  # the server's hello
        assert raw.closed_by_peer(5)
    wait_for_log(netlet_logs, "refused connection")
    assert rec.calls == []


_UNPICKLED: list[str] = []


def _mark(tag: str) -> str:
    _UNPICKLED.append(tag)
    return tag


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_mark, ("ran",))


def test_extension_values_in_the_handshake_are_never_decoded(
        node_factory: NodeFactory, netlet_logs: pytest.LogCaptureFixture) -> None:
    server, _ = served(node_factory, key=KEY, allow_pickle=True)
    _UNPICKLED.clear()
    with RawClient.connect(server.address) as raw:
        raw.send_msg({"netlet": 1, "node": "n", "nonce": b"\0" * 32, "auth": "hmac-sha256",
                      "evil": msgpack.ExtType(15, pickle.dumps(_Payload()))})
        assert raw.closed_by_peer(5)
    wait_for_log(netlet_logs, "malformed handshake frame")
    assert _UNPICKLED == []


def test_version_mismatch_is_refused(node_factory: NodeFactory,
                                     netlet_logs: pytest.LogCaptureFixture) -> None:
    server, _ = served(node_factory, key=KEY)
    with RawClient.connect(server.address) as raw:
        raw.send_msg({"netlet": 99, "node": "n", "nonce": b"\0" * 32})
        assert raw.recv_msg()["error"] == "version"
        assert raw.closed_by_peer(5)
    wait_for_log(netlet_logs, "protocol 99")


# -- replay -------------------------------------------------------------------------------


def test_replayed_client_handshake_is_refused(node_factory: NodeFactory,
                                              netlet_logs: pytest.LogCaptureFixture) -> None:
    server, rec = served(node_factory, key=KEY)
    with RawClient.connect(server.address) as honest:
        honest.handshake(KEY)
        captured = bytes(honest.sent)  # hello + proof, exactly as they went on the wire
        honest.send_msg([1, 1, "rec", "echo", ["honest"], None])
        assert honest.recv_msg() == [2, 1, "honest"]

    # All at once, as a recording would be played back...
    with RawClient.connect(server.address) as thief:
        thief.send_raw(captured)
        server_hello = thief.recv_msg()
        assert server_hello["auth"] == "hmac-sha256"
        assert "proof" in thief.recv_msg()  # the server proves itself over the new transcript
        assert thief.recv_msg() == {"error": "auth", "message": "wrong cluster key"}
        assert thief.closed_by_peer(5)
        port = thief.local_port
    assert "does not hold the cluster key" in wait_for_log(netlet_logs, f"127.0.0.1:{port}")

    # ... and frame by frame, answering the fresh challenge with the old proof.
    hello_len = 8 + int.from_bytes(captured[:4], "big")
    with RawClient.connect(server.address) as thief:
        thief.send_raw(captured[:hello_len])
        thief.recv_msg()  # the server's hello
        thief.recv_msg()  # and its proof
        thief.send_raw(captured[hello_len:])
        thief.send_msg([1, 2, "rec", "echo", ["stolen"], None])
        assert thief.recv_msg()["error"] == "auth"
        assert thief.closed_by_peer(5)
    assert rec.calls == ["honest"]


def test_replayed_server_handshake_is_refused_by_the_client(node_factory: NodeFactory) -> None:
    server, _ = served(node_factory, key=KEY)
    with RawClient.connect(server.address) as honest:
        honest.hello(key=KEY)
        recorded = [honest.recv_frame()[0], honest.recv_frame()[0]]  # its hello and proof

    def replay(raw: RawClient) -> None:
        raw.recv_msg()
        for body in recorded:
            raw.send_frame(body)
        raw.recv_msg()

    with _fake_server(replay) as (address, errors), \
            pytest.raises(AuthenticationError, match="does not hold our cluster key"):
        arun(connect(address, TransportConfig(key=KEY), "client"))
    assert errors == []


# -- slow clients ----------------------------------------------------------------------------


def test_silent_client_is_cut_off_after_handshake_timeout(
        node_factory: NodeFactory, netlet_logs: pytest.LogCaptureFixture) -> None:
    # The server's clock is virtual: its handshake timeout is checked both ways.
    clock = VirtualClock()
    server, _ = served(node_factory, key=KEY, handshake_timeout=1.0, clock=clock)
    client = node_factory(key=KEY)
    svc = client.proxy(server.address, "rec", timeout=5)
    with RawClient.connect(server.address) as silent, \
            RawClient.connect(server.address) as half:
        half.send_raw(b"\0\0\0\x40")  # half a header, then nothing
        # While they sit there, everyone else is served...
        for i in range(10):
            assert svc.echo(i) == i
            assert svc.echo.future(-i).result(5) == -i
        # The server's sweep and the two handshakes wait on the clock.
        deadline = time.monotonic() + 5
        while clock.pending < 3:
            assert time.monotonic() < deadline, "the handshakes never started"
            time.sleep(0.002)
        clock.advance(1.0 - 0.0625)  # just before the timeout: not cut off yet
        assert silent.still_open()
        assert half.still_open()
        clock.advance(0.0625)  # at it: both cut off, with no real wait
        assert silent.closed_by_peer(5)
        assert half.closed_by_peer(5)
        ports = silent.local_port, half.local_port
    for port in ports:
        assert "handshake timed out" in wait_for_log(netlet_logs, f"127.0.0.1:{port}")
    assert svc.echo("still fine") == "still fine"


def test_many_silent_clients_do_not_block_others(node_factory: NodeFactory) -> None:
    # The server's clock never moves: its handshake timeouts never free a slot, so
    # the call below is served beside the 50 silent handshakes, not after them.
    server, _ = served(node_factory, key=KEY, handshake_timeout=2.0, clock=VirtualClock())
    client = node_factory(key=KEY)
    silent = [RawClient.connect(server.address) for _ in range(50)]
    try:
        assert client.proxy(server.address, "rec").echo("hi") == "hi"
    finally:
        for s in silent:
            s.close()


# -- pickle consent -------------------------------------------------------------------------


def _peer_infos(server_cfg: TransportConfig, client_cfg: TransportConfig) -> tuple[PeerInfo,
                                                                                    PeerInfo]:
    async def run() -> tuple[PeerInfo, PeerInfo]:
        import asyncio

        accepted: asyncio.Future[tuple[Any, PeerInfo]] = (
            asyncio.get_running_loop().create_future())

        def on_connection(conn: Any, peer: PeerInfo) -> None:
            accepted.set_result((conn, peer))

        listener = await listen("tcp://127.0.0.1:0", server_cfg, "server-node", on_connection)
        try:
            conn, seen_by_client = await connect(listener.address, client_cfg, "client-node")
            server_conn, seen_by_server = await accepted
            conn.close()
            server_conn.close()
            return seen_by_server, seen_by_client
        finally:
            await listener.close()

    return arun(run())


@pytest.mark.parametrize(("server", "client", "agreed"), [
    ((KEY, True), (KEY, True), True),
    ((KEY, False), (KEY, True), False),
    ((KEY, True), (KEY, False), False),
    ((KEY, False), (KEY, False), False),
    ((None, True), (None, True), False),
])
def test_pickle_is_agreed_only_with_keys_and_consent_on_both_sides(
        server: tuple[bytes | None, bool], client: tuple[bytes | None, bool],
        agreed: bool) -> None:
    seen_by_server, seen_by_client = _peer_infos(
        TransportConfig(key=server[0], allow_pickle=server[1]),
        TransportConfig(key=client[0], allow_pickle=client[1]))
    assert seen_by_server.pickle is agreed
    assert seen_by_client.pickle is agreed
    assert seen_by_server.authenticated is seen_by_client.authenticated is (server[0] is not None)


def test_keyless_server_never_agrees_to_pickle_even_if_asked(node_factory: NodeFactory) -> None:
    server, _ = served(node_factory, allow_pickle=True)
    with RawClient.connect(server.address) as raw:
        reply = raw.handshake(None, pickle=True)
    assert reply["pickle"] is False
    assert reply["auth"] is None


def test_server_cannot_force_pickle_on_a_client_that_did_not_opt_in() -> None:
    def rogue(raw: RawClient) -> None:
        hello_body, _ = raw.recv_frame()
        reply_body = msgpack.packb({"netlet": 1, "node": "rogue", "address": "",
                                    "auth": "hmac-sha256", "nonce": b"\1" * 32,
                                    "pickle": True})  # though the client said no
        raw.send_frame(reply_body)
        raw.send_msg({"proof": hmac_proof(KEY, b"server", hello_body, reply_body)})
        raw.recv_msg()
        raw.send_msg({"ok": True})

    with _fake_server(rogue) as (address, errors):
        async def run() -> PeerInfo:
            conn, peer = await connect(address, TransportConfig(key=KEY, allow_pickle=False),
                                       "client")
            conn.close()
            return peer

        peer = arun(run())
    assert errors == []
    assert peer.authenticated
    assert peer.pickle is False, "the client accepted pickle though it never opted in"


def test_code_travels_only_when_pickle_was_agreed(node_factory: NodeFactory) -> None:
    server, _ = served(node_factory, key=KEY, allow_pickle=True)
    both = node_factory(key=KEY, allow_pickle=True)
    assert both.proxy(server.address, "rec").apply(lambda x: x * 7, 6) == 42
    one_sided = node_factory(key=KEY)
    with pytest.raises(EncodeError, match="function"):
        one_sided.proxy(server.address, "rec").apply(lambda x: x * 7, 6)


# -- helpers ------------------------------------------------------------------------------------


class _fake_server:  # a context manager that reads like a function
    """A one-connection server on 127.0.0.1 whose side of the handshake is ``script``."""

    def __init__(self, script: Callable[[RawClient], Any]) -> None:
        self.script = script
        self.errors: list[BaseException] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.sock.settimeout(10)
            conn, _ = self.sock.accept()
        except OSError as e:
            self.errors.append(e)
            return
        with RawClient(conn) as raw:
            conn.settimeout(10)
            try:
                self.script(raw)
                raw.closed_by_peer(5)
            except (ConnectionError, TimeoutError):
                pass  # the client hung up on us: that is what some tests expect
            except BaseException as e:
                self.errors.append(e)

    def __enter__(self) -> tuple[str, list[BaseException]]:
        self.thread.start()
        host, port = self.sock.getsockname()
        return f"tcp://{host}:{port}", self.errors

    def __exit__(self, *exc: object) -> None:
        self.thread.join(10)
        self.sock.close()


def test_handshake_errors_form_one_tree() -> None:
    assert issubclass(AuthenticationError, HandshakeError)
    assert issubclass(VersionMismatch, HandshakeError)
    assert issubclass(AuthenticationError, PermissionError)
