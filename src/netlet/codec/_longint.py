"""Integers too long for decimal text: sign and magnitude in bytes (ext 16, PROTOCOL.md 6.3).

Decimal text (ext 9) is what other languages parse most easily, but turning
decimal text into an int takes time quadratic in its length, which is why
CPython refuses more than 4300 digits. Bytes convert both ways in linear time,
so an int of any size (within the frame limit) travels, and a peer cannot make
us spend more than linear time on one.
"""

from __future__ import annotations

from netlet.errors import DecodeError

__all__ = ["DECIMAL_BITS", "long_int_bytes", "long_int_from"]

DECIMAL_BITS = 14_000
"""Ints up to this many bits go as decimal text (at most 4,215 digits, within
CPython's 4,300); longer ones as bytes."""

_POSITIVE, _NEGATIVE = 0, 1


def long_int_bytes(n: int) -> bytes:
    """One sign byte (0: positive, 1: negative), then ``abs(n)`` big-endian, no leading zeros."""
    magnitude = abs(n)
    return bytes((_NEGATIVE if n < 0 else _POSITIVE,)) + magnitude.to_bytes(
        (magnitude.bit_length() + 7) // 8, "big")


def long_int_from(data: bytes) -> int:
    """The inverse of ``long_int_bytes``. Any magnitude is accepted (leading zeros and
    ints that ext 9 or msgpack could carry too): a peer may use this one form for all."""
    if len(data) < 2 or data[0] not in (_POSITIVE, _NEGATIVE):
        raise DecodeError("malformed long integer: a sign byte (0 or 1), then at least "
                          "one byte of magnitude, big-endian")
    magnitude = int.from_bytes(data[1:], "big")
    return -magnitude if data[0] == _NEGATIVE else magnitude
