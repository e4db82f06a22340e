"""Small bodies and tuples decode through reused unpackers (``_reuse``): a failure,
trailing bytes or a decode within a decode must not leave one in a bad state."""

from __future__ import annotations

import msgpack
import pytest

from netlet.codec import Codec, RemoteRef
from netlet.codec._types import Ext
from netlet.errors import DecodeError

VALUES = [[1, "a", (2, (3, ("x",))), {"k": (4, 5)}, ()], [(1, 2)] * 50, ({1: 2}, (3,))]


@pytest.mark.parametrize("value", VALUES)
def test_round_trips(value: list[object]) -> None:
    codec = Codec()
    for _ in range(3):
        assert codec.decode(codec.encode(value)[0]) == value


def test_a_failure_leaves_the_next_message_intact() -> None:
    codec = Codec()
    good = codec.encode([1, (2, 3)])[0]
    bad_tuple = msgpack.packb([msgpack.ExtType(Ext.TUPLE, b"\x92\x01")])  # cut short
    for bad in (good[:-1], good + b"\x01", bad_tuple, b"\xc1"):
        with pytest.raises(DecodeError):
            codec.decode(bad)
        assert codec.decode(good) == [1, (2, 3)]


def test_a_decode_within_a_decode() -> None:
    """A handle's decoder may decode another message on the same thread."""
    inner = Codec().encode_value([7, (8, 9)])
    seen: list[object] = []

    def decode_ref(ref: RemoteRef) -> object:
        seen.append(codec.decode(inner))
        return ref.name

    codec = Codec(ref_decoder=decode_ref)
    body = codec.encode([(RemoteRef("n", "a", "obj"), 1), 2])[0]
    assert codec.decode(body) == [("obj", 1), 2]
    assert seen == [[7, (8, 9)]]
    assert codec.decode(body) == [("obj", 1), 2]
