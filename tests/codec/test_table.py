"""The extension table: one entry per code PROTOCOL.md 6.2 lists, and nothing else decodes."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import pytest

from netlet.codec import Codec, Ext
from netlet.codec._table import BY_CODE, BY_TYPE
from netlet.errors import DecodeError

PROTOCOL = Path(__file__).parents[2] / "docs" / "PROTOCOL.md"


def documented_codes() -> dict[int, str]:
    """``{code: name}`` from the table of PROTOCOL.md section 6.2."""
    text = PROTOCOL.read_text()
    section = text[text.index("### 6.2 Extension types"):text.index("### 6.3 Details")]
    rows = re.findall(r"^\| (\d+) \| ([A-Z()a-z]+) \|", section, re.MULTILINE)
    return {int(code): name for code, name in rows}


def test_the_table_holds_every_documented_code_and_no_other() -> None:
    codes = documented_codes()
    assert len(codes) >= 17  # the parse found the table
    assert set(BY_CODE) == set(codes)
    for code, name in codes.items():
        assert BY_CODE[code].name == name


def test_every_ext_enum_member_has_an_entry() -> None:
    assert {int(e) for e in Ext} <= set(BY_CODE)


def test_exact_types_map_to_their_entry() -> None:
    for cls, ext in BY_TYPE.items():
        assert cls in ext.types


@pytest.mark.parametrize("code", [17 + 40, 99, 127, -5])
def test_an_undocumented_code_gets_the_same_clear_error(code: int) -> None:
    data = b"\xc7\x01" + code.to_bytes(1, "big", signed=True) + b"\x90"
    with pytest.raises(DecodeError, match=f"^unknown extension type {code}$"):
        Codec().decode(b"\x91" + data)


def test_ext_0_outside_an_exception_is_an_unknown_type() -> None:
    body = msgpack.packb([msgpack.ExtType(0, b"\x90")])
    with pytest.raises(DecodeError, match=r"^unknown extension type 0$"):
        Codec().decode(body)
