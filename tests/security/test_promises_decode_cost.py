"""SECURITY.md: "decoding a message of n bytes costs O(n log n)". Hostile shapes try to break it.

Each shape is a CALL whose argument a peer chose to be costly to decode: set
elements or map keys sharing hashes (as many per hash as the guard lets
through, and far more, which it refuses), integers whose hashes share their low
40 bits (the same slots in a hash table), deep and wide nesting, extension
values nested in extension values, the largest big integers, Decimals with
huge exponents, millions of empty maps. For each, the CPU time of
``Codec.decode`` (the function a node runs on every body it receives) is
measured at n and at 4n; the growth must stay near-linear. A quadratic shape
grows 16-fold.

Building a big set or dict is not linear in CPU time on real hardware even
for benign values (cache misses grow with the table): a set of random ints
grows about 6-fold here when it grows 4-fold. So the bound is the larger of
6 and 1.5 times the growth of a benign value of the same kind and size,
measured beside it. Times are the best of three, in CPU seconds of this
process, and only ratios are asserted; a shape gets three tries (a shared
machine can spoil one measure, a quadratic shape fails all three).
"""

from __future__ import annotations

import gc
import random
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from netlet.codec import Codec, _guard
from netlet.errors import DecodeError

pytestmark = pytest.mark.timeout(60)

P = 2**61 - 1
"""CPython hashes an int n >= 0 as n mod P."""
TUPLE, SET, DECIMAL, BIGINT = 1, 2, 7, 9
GROWTH = 4


def ext(code: int, value: Any) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(value))


def big(n: int) -> msgpack.ExtType:
    return msgpack.ExtType(BIGINT, str(n).encode())


def call(arg: bytes) -> bytes:
    """``[1, 1, "t", "m", [arg], nil]``: a CALL around an already encoded argument."""
    return b"\x96\x01\x01\xa1t\xa1m\x91" + arg + b"\xc0"


def raw_map(keys: list[Any]) -> bytes:
    """A msgpack map with these keys, each with the value 0 (written by hand: no dict here)."""
    return b"\xdf" + struct.pack(">I", len(keys)) + b"".join(
        msgpack.packb(k) + b"\x00" for k in keys)


def raw_array(count: int, item: bytes) -> bytes:
    return b"\xdd" + struct.pack(">I", count) + item * count


def random_ints(n: int) -> list[int]:
    rnd = random.Random(n)
    return [rnd.getrandbits(60) for _ in range(n)]


Shape = Callable[[int], bytes]

# name -> (hostile shape, benign control of the same kind, n): both take n and give an argument.
SHAPES: dict[str, tuple[Shape, Shape, int]] = {
    "set, 8 big ints per hash (the most allowed)": (
        lambda n: msgpack.packb(ext(SET, [big(m * P + j) for j in range(n // 8)
                                          for m in range(1, 9)])),
        lambda n: msgpack.packb(ext(SET, [big(P + j) for j in random_ints(n)])),
        24_000),
    "set, all big ints share one hash (refused)": (
        lambda n: msgpack.packb(ext(SET, [big(k * P) for k in range(9, 9 + n)])),
        lambda n: msgpack.packb(ext(SET, [big(P + j) for j in random_ints(n)])),
        24_000),
    "set of tuples, 8 per hash": (
        lambda n: msgpack.packb(ext(SET, [ext(TUPLE, [big(m * P + j)]) for j in range(n // 8)
                                          for m in range(1, 9)])),
        lambda n: msgpack.packb(ext(SET, [ext(TUPLE, [big(P + j)]) for j in random_ints(n)])),
        16_000),
    "set, hashes sharing the low 40 bits": (
        lambda n: msgpack.packb(ext(SET, [j << 40 for j in range(1, n + 1)])),
        lambda n: msgpack.packb(ext(SET, random_ints(n))),
        100_000),
    "map keys, hashes sharing the low 40 bits": (
        lambda n: raw_map([j << 40 for j in range(1, n + 1)]),
        lambda n: raw_map(random_ints(n)),
        100_000),
    "map keys, 8 big ints per hash": (
        lambda n: raw_map([big(m * P + j) for j in range(n // 8) for m in range(1, 9)]),
        lambda n: raw_map([big(P + j) for j in random_ints(n)]),
        24_000),
    "set of Decimals with huge exponents": (
        lambda n: msgpack.packb(ext(SET, [msgpack.ExtType(DECIMAL, f"1e{10**8 + j}".encode())
                                          for j in range(n)])),
        lambda n: msgpack.packb(ext(SET, [msgpack.ExtType(DECIMAL, str(j).encode())
                                          for j in random_ints(n)])),
        12_000),
    "arrays nested 200 deep, side by side": (
        lambda n: raw_array(n // 200, b"\x91" * 199 + b"\xc0"),
        lambda n: raw_array(n // 2, b"\x91\x01"),  # as many lists, one deep
        100_000),
    "empty maps": (
        lambda n: raw_array(n, b"\x80"),
        lambda n: raw_array(n // 3, b"\x81\x01\x01"),
        100_000),
    "extension values nested in extension values": (
        lambda n: msgpack.packb(ext(TUPLE, [ext(TUPLE, [ext(TUPLE, list(range(n)))])])),
        lambda n: msgpack.packb(list(range(n))),
        200_000),  # 4n stays under max_array
    "the largest big integers": (
        lambda n: msgpack.packb([big(int("9" * 4000) + j) for j in range(n // 1000)]),
        lambda n: msgpack.packb([big(10**40 + j) for j in range(n // 45)]),  # small ones
        200_000),
}


def decode_cpu(body: bytes) -> tuple[float, str]:
    """Best of three: CPU seconds ``Codec.decode`` takes on ``body``, and the refusal if any."""
    codec = Codec()
    best, refused = float("inf"), ""
    for _ in range(3):
        gc.collect()  # every run starts from the same collector state
        start = time.process_time()
        try:
            codec.decode(body)
        except DecodeError as e:
            refused = str(e).split(" ")[0]
        best = min(best, time.process_time() - start)
    return max(best, 1e-4), refused


def growth(shape: Shape, n: int) -> float:
    small, large = call(shape(n)), call(shape(GROWTH * n))
    assert len(large) > 3 * len(small)
    (t_small, why_small), (t_large, why_large) = decode_cpu(small), decode_cpu(large)
    # The same work at both sizes: a limit that refuses only the large one would be cheap.
    assert bool(why_small) == bool(why_large), (why_small, why_large)
    return t_large / t_small


@pytest.mark.parametrize("name", list(SHAPES))
def test_decoding_cost_grows_near_linearly(name: str) -> None:
    hostile, benign, n = SHAPES[name]
    assert len(call(hostile(n))) >= _guard.SLICED_FROM  # both sizes take the same path
    for _ in range(3):  # a busy machine can spoil one measure; a quadratic shape fails all
        hostile_growth, benign_growth = growth(hostile, n), growth(benign, n)
        bound = max(6.0, 1.5 * benign_growth)
        if hostile_growth < bound:
            break
    assert hostile_growth < bound, (
        f"{name}: 4x the input cost {hostile_growth:.1f}x the CPU (a benign value of the same "
        f"kind: {benign_growth:.1f}x); near-linear allows {bound:.1f}x")


def test_the_measure_sees_a_quadratic_shape_control(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the hash guard switched off, the colliding set is quadratic, and this test says so."""
    monkeypatch.setattr(_guard, "SAME_HASH_MAX", 10**9)
    hostile, benign, _ = SHAPES["set, all big ints share one hash (refused)"]
    n = 1_500
    assert growth(hostile, n) > 1.5 * max(6.0, growth(benign, n))
