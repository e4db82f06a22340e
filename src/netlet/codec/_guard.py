"""Bounds on what decoding one message may cost, whatever a peer put in it.

Three attacks are stopped here:

* **Hash flooding.** Python hashes numbers, tuples, UUIDs, Decimals and the
  like with public formulas (``hash(k * (2**61 - 1)) == 0`` for every int k),
  so a set or a map whose keys all share one hash costs quadratic time to
  build. Before a set, frozenset or map with non-str keys is built, its keys'
  hashes are counted; more than ``SAME_HASH_MAX`` sharing one hash value (equal
  values included) makes the message undecodable. Keys with distinct hashes
  cost a few probes each, however they were chosen.
* **Amplification.** A byte of msgpack can become a 64-byte object (an empty
  array or map) and a few bytes a call into Python (an extension value).
  ``Limits.max_items`` bounds the values in one message, and the extension
  payloads the hook is handed (they are copied, and nested ones copied again)
  are bounded by a multiple of the body's size.
* **A stalled event loop.** msgpack's C decoder holds the GIL between calls
  into Python. Bodies of ``SLICED_FROM`` bytes or more are decoded with a hook
  on every array and map, so a thread that decodes them yields the GIL every
  few milliseconds; the node decodes such bodies off its loop.
"""

from __future__ import annotations

import reprlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from netlet.codec._types import Limits
from netlet.errors import DecodeError

__all__ = ["SAME_HASH_MAX", "SLICED_FROM", "DecodeState", "check_hashes", "dict_from_pairs",
           "short", "sliced_options"]

SAME_HASH_MAX = 8
"""Most set elements or map keys of one message value that may share one hash value."""

SLICED_FROM = 64 * 1024
"""Bodies at least this large are decoded in slices (hooks on every container).

Below it the C decoder runs alone; its worst case for 64 KiB is a few tens of ms."""

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40


def short(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters: peer values go in errors and logs."""
    return _REPR.repr(value)


EXT_BYTES_FACTOR = 4
"""Extension payloads handed to the hook may total this many times the body (plus 64 KiB)."""


class DecodeState:
    """What one ``Codec.decode`` call has spent so far (one per call, per thread)."""

    __slots__ = ("buffers", "depth", "ext_budget", "ext_bytes", "in_exception", "items",
                 "max_items", "options")

    def __init__(self, buffers: Sequence[Any], size: int, limits: Limits,
                 options: dict[str, Any]) -> None:
        self.buffers = buffers
        self.options = options
        self.depth = 0
        self.in_exception = 0
        self.items = 0
        self.max_items = limits.max_items
        self.ext_bytes = 0
        self.ext_budget = EXT_BYTES_FACTOR * size + 64 * 1024

    def spend_items(self, n: int) -> None:
        self.items += n
        if self.items > self.max_items:
            raise DecodeError(f"message holds more than {self.max_items} values "
                              "(Limits.max_items)")


def check_hashes(values: list[Any]) -> None:
    """Refuse ``values`` (future set elements or map keys) that share hashes too often."""
    if len(values) <= SAME_HASH_MAX:
        return
    hashes = list(map(hash, values))
    if hashes == values:  # ints below 2**61 - 1 are their own hash: distinct values differ
        return
    # Hash values are ints whose own hash is themselves: this set cannot be flooded.
    if len(set(hashes)) == len(hashes):
        return
    worst = Counter(hashes).most_common(1)[0][1]
    if worst > SAME_HASH_MAX:
        raise DecodeError(
            f"{worst} set elements or map keys share one hash value (at most "
            f"{SAME_HASH_MAX} may): refused as a hash-flooding attempt")


def dict_from_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """msgpack's ``object_pairs_hook``: a map, once its keys are known to be safe."""
    if len(pairs) > SAME_HASH_MAX:
        check_hashes([k for k, _ in pairs])
    return dict(pairs)


def sliced_options(checked: dict[str, Any], state: DecodeState) -> dict[str, Any]:
    """Unpack options with a counting hook on every array and map (see module doc)."""

    def on_list(value: list[Any]) -> list[Any]:
        state.spend_items(len(value) + 1)
        return value

    def on_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        state.spend_items(2 * len(pairs) + 1)
        return dict_from_pairs(pairs)

    return {**checked, "list_hook": on_list, "object_pairs_hook": on_pairs}
