"""A frame's out-of-band buffers read from a blocking socket as the decoder asks for them.

``BlockingFramer`` hands these out for a frame whose buffers are too large for its
receive buffer: each buffer is read straight into the memory that will keep it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

from netlet.codec import Buffer

if TYPE_CHECKING:
    from netlet.transport._blocking import BlockingFramer

__all__ = ["LazyBuffers", "received_size"]


class LazyBuffers(Sequence[Buffer]):
    """The out-of-band buffers of one frame, read in order as the decoder asks.

    ``as_bytes(i)`` receives buffer ``i`` straight into the ``bytes`` object the
    caller keeps; indexing receives into a writable buffer (numpy arrays view it).
    """

    def __init__(self, framer: BlockingFramer, lens: tuple[int, ...]) -> None:
        self._framer = framer
        self._lens = lens
        self._got: list[Buffer] = []

    def __len__(self) -> int:
        return len(self._lens)

    @property
    def nbytes(self) -> int:
        """The buffers' total size, known from the frame's head: nothing is read."""
        return sum(self._lens)

    def _read_until(self, index: int) -> None:
        while len(self._got) < index:
            n = self._lens[len(self._got)]
            self._got.append(self._framer.read_growing(n))

    @overload
    def __getitem__(self, index: int) -> Buffer: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Buffer]: ...

    def __getitem__(self, index: int | slice) -> Buffer | Sequence[Buffer]:
        if isinstance(index, slice):
            self._read_until(len(self._lens))
            return self._got[index]
        if not 0 <= index < len(self._lens):
            raise IndexError(index)
        self._read_until(index + 1)
        return self._got[index]

    def as_bytes(self, index: int) -> bytes:
        if not 0 <= index < len(self._lens):
            raise IndexError(index)
        if index < len(self._got):
            return bytes(self._got[index])
        self._read_until(index)
        n = self._lens[index]
        obj = self._framer.read_bytes(n)
        self._got.append(obj)
        return obj

    def drain(self) -> None:
        """Read whatever the decoder did not ask for, so the next frame starts right."""
        self._read_until(len(self._lens))
        self._framer.drained(self)


def received_size(body: Buffer, buffers: Sequence[Buffer]) -> int:
    """The bytes of a received frame, for counters: a lazy frame's buffers are not read
    for it (reading them before the decoder asks copies bytes into fresh memory)."""
    if type(buffers) is LazyBuffers:
        return len(body) + buffers.nbytes
    return len(body) + (sum(map(len, buffers)) if buffers else 0)
