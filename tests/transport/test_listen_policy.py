"""Where a node may listen without a key, and that keys never leak into logs or reprs.

Loopback (and unix/mem, which only this machine reaches) needs nothing; any
other address needs a cluster key, or an explicit ``insecure=True`` that is
logged loudly and warned about (``InsecureWarning``).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import netlet
from netlet.errors import AuthenticationError, ConfigError, InsecureListenError
from netlet.transport import InsecureWarning, TransportConfig, write_key
from tests.conftest import RawClient, arun, hmac_proof

KEY = bytes.fromhex("5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e7abcd")
WRONG = bytes.fromhex("badbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadbad0123")

NodeFactory = Callable[..., netlet.Node]


@netlet.expose
class Echo:
    def echo(self, value: object) -> object:
        return value


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    return caplog


def warnings_from_netlet(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("netlet") and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("address", [
    "tcp://0.0.0.0:0", "0.0.0.0:0", "tcp://[::]:0", "tcp://192.0.2.1:0", "tcp://example.com:0",
])
def test_listening_beyond_loopback_without_a_key_is_refused(address: str) -> None:
    with pytest.raises(InsecureListenError, match="without a cluster key"):
        netlet.Node(listen=address)


def test_open_node_refuses_too() -> None:
    async def main() -> None:
        async with netlet.open_node("tcp://0.0.0.0:0"):
            pytest.fail("listened on 0.0.0.0 with no key")

    with pytest.raises(InsecureListenError):
        arun(main())


def test_insecure_listens_and_says_so(node_factory: NodeFactory,
                                      all_logs: pytest.LogCaptureFixture) -> None:
    with pytest.warns(InsecureWarning, match="INSECURE"):  # seen even with no logging set up
        node = node_factory("tcp://0.0.0.0:0", insecure=True)
    assert node.address is not None
    assert not node.address.startswith("tcp://0.0.0.0:")  # it advertises a dialable host
    warnings = warnings_from_netlet(all_logs)
    assert any("INSECURE" in w and "0.0.0.0" in w for w in warnings), warnings
    node.serve(Echo(), "echo")
    port = node.address.rsplit(":", 1)[1]
    client = node_factory()
    assert client.proxy(f"tcp://127.0.0.1:{port}", "echo").echo("open") == "open"


def test_with_a_key_it_listens_quietly(node_factory: NodeFactory,
                                       all_logs: pytest.LogCaptureFixture) -> None:
    node = node_factory("tcp://0.0.0.0:0", key=KEY)
    assert node.address is not None
    node.serve(Echo(), "echo")
    port = node.address.rsplit(":", 1)[1]
    client = node_factory(key=KEY)
    assert client.proxy(f"tcp://127.0.0.1:{port}", "echo").echo("ok") == "ok"
    assert warnings_from_netlet(all_logs) == []


def _can_bind_ipv6_loopback() -> bool:
    """A property of the host, checked once: some machines have no IPv6 at all."""
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


LOCAL_KINDS = ["loopback", "localhost", "unix", "mem"] + (
    ["ipv6-loopback"] if _can_bind_ipv6_loopback() else [])


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_local_addresses_need_no_key(kind: str, node_factory: NodeFactory, short_tmp: Path,
                                     free_mem_address: str,
                                     all_logs: pytest.LogCaptureFixture) -> None:
    address = {"loopback": "tcp://127.0.0.1:0", "localhost": "tcp://localhost:0",
               "ipv6-loopback": "tcp://[::1]:0", "unix": f"unix://{short_tmp}/n.sock",
               "mem": free_mem_address}[kind]
    node = node_factory(address)
    assert node.address is not None
    assert warnings_from_netlet(all_logs) == []


def test_keys_do_not_appear_in_reprs(tmp_path: Path) -> None:
    cfg = TransportConfig(key=KEY, allow_pickle=True)
    node_cfg = netlet.NodeConfig(transport=cfg)
    for text in (repr(cfg), str(cfg), repr(node_cfg), str(node_cfg)):
        assert_no_key(text, KEY)
    node = netlet.Node(config=node_cfg, start=False)
    assert_no_key(repr(node), KEY)
    path = tmp_path / "cluster.key"
    write_key(path, KEY)
    from_file = netlet.Node(key_file=path, start=False)
    assert from_file.config.transport.key == KEY
    assert_no_key(repr(from_file.config), KEY)


def test_bad_keys_are_refused_without_echoing_them() -> None:
    short = b"s3cr3t-but-short"[:15]
    with pytest.raises(ConfigError) as err:
        TransportConfig(key=short)
    assert_no_key(str(err.value), short)


def test_keys_never_appear_in_logs(node_factory: NodeFactory,
                                   all_logs: pytest.LogCaptureFixture) -> None:
    server = node_factory("tcp://127.0.0.1:0", key=KEY, handshake_timeout=0.3)
    server.serve(Echo(), "echo")
    assert server.address is not None
    # Every outcome a handshake can have, each of which may log something.
    assert node_factory(key=KEY).proxy(server.address, "echo").echo(1) == 1
    for client_options in ({"key": WRONG}, {}):
        with pytest.raises(AuthenticationError):
            node_factory(**client_options).proxy(server.address, "echo", timeout=3).echo(1)
    with RawClient.connect(server.address) as raw:
        raw.hello(key=WRONG)
        reply_body, _ = raw.recv_frame()
        raw.recv_msg()  # the server's proof
        raw.send_msg({"proof": hmac_proof(WRONG, b"client", raw.hello_body, reply_body)})
        assert raw.closed_by_peer(5)
    with RawClient.connect(server.address) as raw:
        assert raw.closed_by_peer(5)  # silent: cut off by the handshake timeout
    keyless = node_factory("tcp://127.0.0.1:0")
    with pytest.raises(AuthenticationError):
        node_factory(key=KEY).proxy(keyless.address, "echo", timeout=3).echo(1)

    text = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in all_logs.records)
    assert "refused connection" in text  # the scenarios above did log
    assert_no_key(text, KEY)
    assert_no_key(text, WRONG)


def assert_no_key(text: str, key: bytes) -> None:
    for form in (key.hex(), key.hex().upper(), repr(key), str(key), key[:8].hex(),
                 base64.b64encode(key).decode(), key.decode("latin-1")):
        assert form not in text, f"the key appears (as {form!r}) in: {text[:300]}"


# -- what a node listening on every interface hands out ---------------------------------


def test_a_wildcard_listener_advertises_a_dialable_address(node_factory: NodeFactory) -> None:
    node = node_factory("tcp://0.0.0.0:0", key=KEY)
    assert node.address is not None
    assert "0.0.0.0" not in node.address  # a peer dialling 0.0.0.0 would reach itself
    ref = node.serve(Echo(), "echo")
    assert ref.address == node.address
    # A handle passed on is dialled as it is: it must reach this node.
    client = node_factory(key=KEY)
    assert client.proxy(ref.address, "echo").echo("via the handle") == "via the handle"


def test_advertise_names_the_host_peers_dial(node_factory: NodeFactory) -> None:
    node = node_factory("tcp://0.0.0.0:0", key=KEY, advertise="127.0.0.1")
    assert node.address is not None
    host, port = node.address.removeprefix("tcp://").rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) > 0
    client = node_factory(key=KEY)
    ref = node.serve(Echo(), "echo")
    assert client.proxy_for(ref).echo(1) == 1


def test_advertised_address_keeps_specific_and_local_addresses() -> None:
    from netlet.transport import advertised_address

    assert advertised_address("tcp://10.1.2.3:5") == "tcp://10.1.2.3:5"
    assert advertised_address("unix:///tmp/x.sock", "ignored") == "unix:///tmp/x.sock"
    assert advertised_address("tcp://0.0.0.0:5", "bank.example") == "tcp://bank.example:5"
    assert advertised_address("tcp://[::]:5", "::1") == "tcp://[::1]:5"
    assert not advertised_address("tcp://0.0.0.0:5").startswith("tcp://0.0.0.0")
