"""A peer announces another node's id: it must not get that node's callbacks.

Attack: node ids are public (they travel in REFs, in ``netlet status``). A peer
that connects with the hello ``node`` of a victim used to replace the victim in
the server's routing table, so a callback the victim passed on a blocking call
(which travels on a direct side connection and is resolved by node id) was
called on the impostor's connection: the victim got the impostor's 1337
instead of its own 42. Now an id belongs to the first live connection that
authenticated it; a later connection claiming it is served, but only on its own
behalf; and a direct side connection is bound to its main link by a token only
the two ends of that link know (PROTOCOL.md 4.8).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

import netlet
from tests.conftest import RawClient, frame, hmac_proof

KEY = bytes(range(32))

NodeFactory = Callable[..., netlet.Node]


@netlet.expose
class Asker:
    """The server side: asks whatever it is handed."""

    def ask(self, source: Any) -> Any:
        return source.answer()

    def ping(self) -> str:
        return "pong"


@netlet.expose
class Answer:
    def __init__(self, value: int = 42) -> None:
        self.value = value

    def answer(self) -> int:
        return self.value


class Impostor:
    """A raw peer that says it is ``node`` and answers every call it gets with 1337."""

    def __init__(self, address: str, node: str) -> None:
        self.raw = RawClient.connect(address)
        self.raw.node = node
        self.calls: list[Any] = []
        self._stop = threading.Event()
        self.raw.handshake(KEY)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.raw.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                body, _ = self.raw.recv_frame()
            except TimeoutError:
                continue
            except OSError:
                return
            msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
            if msg[0] == 1:  # a CALL meant for the victim
                self.calls.append(msg)
                if msg[1]:
                    self.raw.sock.sendall(frame(msgpack.packb([2, msg[1], 1337])))
            elif msg[0] == 5:
                self.raw.sock.sendall(frame(msgpack.packb([6, msg[1]])))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.raw.close()


@pytest.fixture
def impostors() -> Iterator[list[Impostor]]:
    made: list[Impostor] = []
    yield made
    for imp in made:
        imp.close()


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _setup(node_factory: NodeFactory) -> tuple[netlet.Node, netlet.Node, Any]:
    server = node_factory("tcp://127.0.0.1:0", key=KEY)
    server.serve(Asker(), "asker")
    victim = node_factory(key=KEY)
    asker = victim.proxy(server.address, "asker", timeout=5)
    assert asker.ping() == "pong"
    return server, victim, asker


def test_an_impostor_link_does_not_get_the_victims_callbacks(
        node_factory: NodeFactory, impostors: list[Impostor]) -> None:
    server, victim, asker = _setup(node_factory)
    impostors.append(Impostor(server.address, victim.id))
    _wait(lambda: len(server.links) == 2)
    # A blocking call travels on a direct side connection; its callback is resolved
    # by the server, and must come back to the victim.
    assert asker.ask(Answer(42)) == 42
    assert asker.ask.future(Answer(43)).result(5) == 43  # the main link, too
    assert impostors[0].calls == []


def test_an_impostor_that_came_first_does_not_get_them_either(
        node_factory: NodeFactory, impostors: list[Impostor]) -> None:
    server = node_factory("tcp://127.0.0.1:0", key=KEY)
    server.serve(Asker(), "asker")
    victim = node_factory(key=KEY)
    impostors.append(Impostor(server.address, victim.id))
    _wait(lambda: len(server.links) == 1)
    asker = victim.proxy(server.address, "asker", timeout=5)
    assert asker.ask(Answer(42)) == 42
    assert asker.ask.future(Answer(43)).result(5) == 43
    assert impostors[0].calls == []


def test_a_direct_connection_with_a_stolen_id_cannot_reach_the_victims_objects(
        node_factory: NodeFactory) -> None:
    """A direct side connection that cannot show its main link's token gets no REF route."""
    server, victim, _ = _setup(node_factory)
    answer = Answer(42)
    victim.serve(answer, "secret-answer")  # the victim's own object, by a name
    raw = RawClient.connect(server.address)
    raw.node = victim.id
    ref = msgpack.ExtType(12, msgpack.packb([victim.id, "", "secret-answer", "object"]))
    try:
        raw.handshake(KEY, role="direct")
        raw.send_msg([1, 1, "asker", "ask", [ref], None])
        got = raw.recv_frame_or_eof(5)
    except OSError:
        got = None  # closed at once: refused
    finally:
        raw.close()
    # Either refused outright or answered with an error: never the victim's 42.
    if got is not None:
        msg = msgpack.unpackb(got[0], raw=False, strict_map_key=False)
        assert msg[0] == 3, msg


def test_legitimate_direct_connections_and_reconnects_still_work(
        node_factory: NodeFactory) -> None:
    server, _, asker = _setup(node_factory)
    results: list[Any] = []

    def caller(i: int) -> None:
        for j in range(5):
            results.append(asker.ask(Answer(i * 10 + j)))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == sorted(i * 10 + j for i in range(4) for j in range(5))
    # The server drops every connection of the victim; the victim comes back.
    for link in server.links.all():
        link.conn.close()
    _wait(lambda: not server.links)
    deadline = time.monotonic() + 5
    while True:
        try:
            assert asker.ask(Answer(7)) == 7
            break
        except netlet.errors.ConnectionLost:
            assert time.monotonic() < deadline
    assert asker.ask.future(Answer(8)).result(5) == 8


@netlet.expose
class Hub:
    """Keeps a handle it is given and uses it later, on its own initiative."""

    def __init__(self) -> None:
        self.kept: Any = None

    def keep(self, source: Any) -> None:
        self.kept = source

    def fire(self) -> Any:
        return self.kept.answer()


def test_a_handle_from_an_impostor_never_reroutes_to_the_real_node(
        node_factory: NodeFactory) -> None:
    """The impostor hands over a REF naming the victim, then leaves: the server's
    handle must die with the impostor's connection, not start calling the victim."""
    server = node_factory("tcp://127.0.0.1:0", key=KEY)
    server.serve(Hub(), "hub")
    victim = node_factory(key=KEY)
    victim.serve(Answer(42), "secret-answer")
    hub = victim.proxy(server.address, "hub", timeout=5)
    hub.keep(None)  # the victim's main link is up and owns its id
    with RawClient.connect(server.address) as raw:
        raw.node = victim.id
        raw.handshake(KEY)
        ref = msgpack.ExtType(12, msgpack.packb([victim.id, "", "secret-answer", "object"]))
        raw.send_msg([1, 1, "hub", "keep", [ref], None])
        assert raw.recv_msg()[:2] == [2, 1]
    _wait(lambda: len(server.links) == 1)
    with pytest.raises(netlet.errors.ConnectionLost):
        hub.fire()


@netlet.expose
class Who:
    def who(self) -> Any:
        return netlet.node.current_peer()

    async def who_aio(self) -> Any:
        return netlet.node.current_peer()


def _ask_who(raw: RawClient, cid: int, method: str = "who") -> Any:
    raw.send_msg([1, cid, "who", method, [], None])
    while True:
        msg = raw.recv_msg()
        if msg[0] == 5:  # a PING: answer it, we are alive
            raw.send_msg([6, msg[1]])
            continue
        assert msg[:2] == [2, cid], msg
        return msg[2]


def test_the_owner_of_an_id_acts_for_it_and_a_claimant_does_not(
        node_factory: NodeFactory) -> None:
    server = node_factory("tcp://127.0.0.1:0", key=KEY, keepalive=0.2)
    server.serve(Who(), "who")
    assert server.address is not None
    client = node_factory(key=KEY)
    who = client.proxy(server.address, "who", timeout=5)
    assert who.who() == client.id               # a direct connection, bound by its token
    assert who.who.future().result(5) == client.id  # the main link
    assert who.who_aio() == client.id
    with RawClient.connect(server.address) as raw:
        raw.node = client.id
        raw.handshake(KEY)
        assert _ask_who(raw, 1) == ""  # it claims the id; it does not own it
        assert _ask_who(raw, 2, "who_aio") == ""
        # The owner answers the server's ping, so the claim never succeeds.
        deadline, cid = time.monotonic() + 1.5, 3
        while time.monotonic() < deadline:
            assert _ask_who(raw, cid) == ""
            cid += 1
    assert who.who() == client.id


def test_a_reconnect_takes_over_an_id_whose_old_link_went_silent(
        node_factory: NodeFactory) -> None:
    server = node_factory("tcp://127.0.0.1:0", key=KEY, keepalive=0.2)
    server.serve(Who(), "who")
    assert server.address is not None
    node_id = "d" * 32
    with RawClient.connect(server.address) as old, RawClient.connect(server.address) as new:
        old.node = new.node = node_id
        old.handshake(KEY)
        assert _ask_who(old, 1) == node_id
        # The old connection goes silent (a half-open link): it will not answer pings.
        new.handshake(KEY)
        assert _ask_who(new, 1) == ""
        assert old.closed_by_peer(5), "the silent owner was not let go"
        ids = iter(range(2, 10_000))
        _wait(lambda: _ask_who(new, next(ids)) == node_id)


def test_an_announced_address_does_not_capture_calls_to_that_address(
        node_factory: NodeFactory) -> None:
    """A hello's ``address`` is a claim too: calls to that address go to whoever listens there."""
    server = node_factory("tcp://127.0.0.1:0", key=KEY)
    victim = node_factory("tcp://127.0.0.1:0", key=KEY)
    victim.serve(Answer(42), "answer")
    assert victim.address is not None
    assert server.address is not None
    with RawClient.connect(server.address) as raw:
        raw.hello(key=KEY, address=victim.address)  # "I am the node at the victim's address"
        reply_body, _ = raw.recv_frame()
        raw.recv_msg()  # the server's proof
        raw.send_msg({"proof": hmac_proof(KEY, b"client", raw.hello_body, reply_body)})
        assert raw.recv_msg() == {"ok": True}
        _wait(lambda: len(server.links) == 1)
        answer = server.proxy(victim.address, "answer", timeout=5)
        got = answer.answer.future()
        raw.sock.settimeout(0.05)
        deadline = time.monotonic() + 5
        while not got.done() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                body, _ = raw.recv_frame()  # a call meant for the victim, if it came here
                msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
                if msg[0] == 1:
                    raw.send_msg([2, msg[1], 1337])
        assert got.result(5) == 42
