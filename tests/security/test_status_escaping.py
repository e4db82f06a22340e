"""A member names itself with terminal escapes and rich markup: ``netlet status`` shows it inert.

Attack: what ``netlet status`` prints (worker names, hosts, addresses, names in
the name service) is whatever members told the head about themselves. A worker
whose name held ``\\x1b]...`` or ``\\x1b[2J`` escapes reached the operator's
terminal raw (clear the screen, retitle the window, hide lines), and rich
markup such as ``[bold red]`` was interpreted. Now control characters are
printed as visible ``\\x..`` escapes and markup is escaped, so the operator sees
exactly the text that was sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import netlet
from netlet.cluster import Head, HeadConfig
from netlet.cluster._member_messages import JoinInfo
from netlet.transport import write_key

NodeFactory = Callable[..., netlet.Node]

KEY = bytes(range(32))
HOSTILE = "\x1b[2J\x1b]0;owned\x07[bold red]evil[/bold red]\r\u202eworker"
HOSTILE_HOST = "[link=http://x]host[/link]\x1b[8m"


@pytest.fixture
def head(node_factory: NodeFactory) -> Iterator[str]:
    node = node_factory("tcp://127.0.0.1:0", key=KEY, call_timeout=None)
    head = Head(node, HeadConfig(dead_after=60.0))
    node.serve(head, "netlet.head")
    head.start()
    assert node.address is not None
    yield node.address
    head.stop()


@netlet.expose
class Thing:
    def ping(self) -> str:
        return "pong"


def _status(address: str, key_file: Path, *extra: str) -> str:
    netlet_cmd = Path(sys.executable).parent / "netlet"
    out = subprocess.run([str(netlet_cmd), "status", "--head", address, "--key-file",
                          str(key_file), *extra],
                         capture_output=True, timeout=30, check=True,
                         env={**os.environ, "COLUMNS": "400", "TERM": "dumb"})
    return out.stdout.decode("utf-8", "replace")


def test_hostile_member_strings_are_printed_inert(head: str, node_factory: NodeFactory,
                                                   tmp_path: Path) -> None:
    key_file = tmp_path / "cluster.key"
    write_key(key_file, KEY)
    hostile = node_factory(key=KEY)
    proxy = hostile.proxy(head, "netlet.head", timeout=5)
    proxy.join(hostile.id, "worker",
               JoinInfo(HOSTILE, HOSTILE_HOST, 1, "tcp://\x1b[1mx:1", 1), None)
    ref = hostile.serve(Thing(), "thing")
    proxy.register("[blink]name\x1b[5m", ref, hostile.id)

    text = _status(head, key_file)
    assert "\x1b" not in text, "an escape sequence from a member reached the terminal"
    assert "\x07" not in text
    assert "\r" not in text
    assert "\u202e" not in text
    # The operator sees the text as sent, markup and all.
    assert "[bold red]evil[/bold red]" in text
    assert "\\x1b[2J" in text
    assert "[link=http://x]host[/link]" in text
    assert "[blink]name\\x1b[5m" in text
    # --json keeps the exact values (escaped by JSON itself).
    raw = _status(head, key_file, "--json")
    assert "\x1b" not in raw
    assert "\\u001b[2J" in raw
