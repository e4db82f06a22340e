"""What a prime search is: its range, method, chunk size and limits, checked on creation.

``SearchConfig`` and the limits it enforces change when the search's promises
change (a new method, a larger range), not when the coordinator schedules
differently or the state file changes its schema, so they live apart from both;
the CLI checks its arguments here before it starts any cluster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from netlet.apps.primes._chunks import MAX_CHUNKS
from netlet.apps.primes._methods import MAX_SIEVE_END, METHODS
from netlet.errors import ConfigError

__all__ = ["MAX_CHUNK", "MAX_NAIVE_END", "MAX_OUT_CHUNK", "SearchConfig", "default_chunk"]

MAX_CHUNK: Final = 10**10
"""Most numbers in one chunk: a bigger one runs for minutes on one worker and cannot be shared."""

MAX_OUT_CHUNK: Final = 10**8
"""Most numbers in one chunk when the primes are written out: their bytes stay under 64 MiB."""

MAX_NAIVE_END: Final = 10**18
"""Largest ``end`` for trial division (state and results hold 64-bit numbers)."""

_CHUNK_BOUNDS: Final = {"sieve": (10**6, 10**8), "naive": (1_000, 20_000)}
"""Default chunk sizes per method: (smallest, largest); each largest takes ~50-200 ms."""

_OUT_CHUNK_CEILING: Final = 10**7
"""Largest default chunk with ``out``: at most ~5 MB of primes wait in memory per chunk."""

_CHUNKS_PER_WORKER: Final = 8
"""A default chunk size aims at this many chunks per worker: enough for an even spread
(handed out last first, the cheap chunks even out the finish), few enough that the
per-chunk costs stay small. It decides only for short searches; longer ones hit the
method's largest chunk and get more chunks, for a smooth live view and resume."""



def _pow10(n: int) -> str:
    """``10**k`` for a power of ten, else the number with thousands separators."""
    text = str(n)
    return f"10**{len(text) - 1}" if text.strip("0") == "1" else f"{n:,}"


def default_chunk(method: str, start: int, end: int, workers: int, *, out: bool = False) -> int:
    """A chunk size giving each of ``workers`` ~8 chunks, within the method's bounds."""
    floor, ceiling = _CHUNK_BOUNDS[method]
    if out:
        ceiling = min(ceiling, _OUT_CHUNK_CEILING)
    wanted = -(-(end - start) // (_CHUNKS_PER_WORKER * max(1, workers)))
    return max(floor, min(ceiling, wanted))


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """What to search and how; checked on creation (``ConfigError`` says what is wrong)."""

    start: int
    end: int
    method: str = "sieve"
    chunk: int | None = None
    """Numbers per chunk; None picks one per method and worker count (``default_chunk``)."""
    out: Path | None = None
    """Write the primes here, ascending, one per line."""
    state: Path | None = None
    """The state file; None means ``.netlet-primes-<hash>.db`` in the working directory."""
    resume: bool = False
    """Continue an unfinished run recorded in the state file (start afresh if there is none)."""
    keep_state: bool = False
    """Keep the state file after a successful run."""
    per_worker: int = 4
    """Chunks in flight per worker."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose from "
                              f"{', '.join(sorted(METHODS))}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
            if value < 0:
                raise ConfigError(f"{name} must be 0 or more, got {value}")
        if self.end < self.start:
            raise ConfigError(f"end ({self.end}) is below start ({self.start}): "
                              "the search covers [start, end)")
        limit = MAX_SIEVE_END if self.method == "sieve" else MAX_NAIVE_END
        if self.end > limit:
            raise ConfigError(f"the {self.method} method goes up to end={_pow10(limit)}, "
                              f"got end={self.end}")
        if self.chunk is not None:
            self.check_chunk(self.chunk)
        if self.per_worker < 1:
            raise ConfigError("per_worker must be 1 or more")

    def check_chunk(self, chunk: int) -> None:
        """Raise ``ConfigError`` unless ``chunk`` is a sensible chunk size for this range."""
        most = MAX_OUT_CHUNK if self.out is not None else MAX_CHUNK
        if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= most:
            why = " when writing the primes out" if self.out is not None else ""
            raise ConfigError(f"a chunk holds 1 to {_pow10(most)} numbers{why}, got {chunk}")
        pieces = -(-(self.end - self.start) // chunk)
        if pieces > MAX_CHUNKS:
            raise ConfigError(f"[{self.start}, {self.end}) in chunks of {chunk} makes {pieces} "
                              f"chunks, over the limit of {MAX_CHUNKS}; use larger chunks")

    def state_path(self) -> Path:
        """Where the state lives: ``state``, or a name derived from the search's parameters."""
        if self.state is not None:
            return self.state
        return Path.cwd() / f".netlet-primes-{self._digest()}.db"

    def _digest(self) -> str:
        out = str(self.out.resolve()) if self.out is not None else ""
        key = f"{self.method}:{self.start}:{self.end}:{out}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]
