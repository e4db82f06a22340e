"""``Node(...)`` keywords: typed (``NodeOptions``), so a misspelt one fails loudly.

mypy flags it where it is written; at run time it is a ``TypeError`` naming it
and the closest valid name, as Python does for any unknown keyword. The options
and the two configs they fold into cannot drift apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import mypy.api
import pytest

import netlet
from netlet.node import NodeOptions
from netlet.node._config import NODE_OPTIONS, TRANSPORT_OPTIONS, make_config
from netlet.transport import TransportConfig


@pytest.mark.timeout(10)
def test_a_misspelt_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match=r"'call_timout' \(did you mean 'call_timeout'\?\)"):
        netlet.Node(call_timout=1.0, start=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown node options: 'colour', 'kee'"):
        netlet.Node(kee=b"x", colour="red", start=False)  # type: ignore[call-arg]


@pytest.mark.timeout(10)
def test_open_node_refuses_a_misspelt_option_too() -> None:
    async def main() -> None:
        async with netlet.open_node(max_thread=4):  # type: ignore[call-arg]
            pass

    with pytest.raises(TypeError, match="did you mean 'max_threads'"):
        asyncio.run(main())


def test_every_option_sets_a_config_field_of_its_name() -> None:
    """NodeOptions == NodeConfig's fields + TransportConfig's + the two key files."""
    node_fields = {f.name for f in dataclasses.fields(netlet.NodeConfig)} - {"transport"}
    transport_fields = {f.name for f in dataclasses.fields(TransportConfig)} - {"clock"}
    assert set(NODE_OPTIONS) == node_fields
    assert set(TRANSPORT_OPTIONS) == transport_fields
    assert set(NodeOptions.__annotations__) == (node_fields | transport_fields
                                                 | {"key_file", "old_key_files"})
    config = make_config(None, {"call_timeout": 3.0, "handshake_timeout": 2.0})
    assert (config.call_timeout, config.transport.handshake_timeout) == (3.0, 2.0)


@pytest.mark.timeout(60)
def test_mypy_flags_a_misspelt_option(tmp_path: Path) -> None:
    """About a second: mypy checks a two-line program against the installed netlet."""
    program = tmp_path / "prog.py"
    program.write_text("import netlet\n\nnetlet.Node(call_timout=1.0)\n"
                       "netlet.Node(call_timeout=1.0, key=None)\n")
    out, err, status = mypy.api.run(["--strict", "--no-incremental", "--follow-imports=silent",
                                     "--cache-dir", str(tmp_path / "cache"), str(program)])
    assert status == 1, out + err
    assert 'prog.py:3: error: Unexpected keyword argument "call_timout"' in out, out
    assert "prog.py:4" not in out, out
