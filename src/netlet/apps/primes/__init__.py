"""The distributed prime search, one of netlet's reference systems.

A coordinator cuts a range into chunks; workers pull chunks and count the
primes in each with a named method; the counts add up to pi(N), checked
against ``KNOWN_PI``.  The pure part is the methods and the chunking: plain
module-level functions on plain ints, so that workers can run them by import
path, e.g. ``"netlet.apps.primes:count_sieve"``.  The coordinator
(``PrimeSearch``, configured by a ``SearchConfig``) runs a search on a
``netlet.cluster.Cluster``, records finished chunks in SQLite so a crashed
run can resume, and reports ``Progress`` and a ``Summary``.  ``netlet primes``
is its command line (``netlet.apps.primes._cli``).
"""

from __future__ import annotations

from netlet.apps.primes._chunks import MAX_CHUNKS, split_equal, split_range
from netlet.apps.primes._coordinator import (
    MAX_CHUNK,
    MAX_NAIVE_END,
    MAX_OUT_CHUNK,
    NodeShare,
    PrimeSearch,
    PrimeStatistics,
    Progress,
    SearchConfig,
    Summary,
    check_state,
    default_chunk,
)
from netlet.apps.primes._methods import (
    KNOWN_PI,
    MAX_SIEVE_END,
    METHODS,
    Method,
    count_naive,
    count_sieve,
    primes_naive,
    primes_sieve,
    primes_sieve_array,
)

__all__ = [
    "KNOWN_PI",
    "MAX_CHUNK",
    "MAX_CHUNKS",
    "MAX_NAIVE_END",
    "MAX_OUT_CHUNK",
    "MAX_SIEVE_END",
    "METHODS",
    "Method",
    "NodeShare",
    "PrimeSearch",
    "PrimeStatistics",
    "Progress",
    "SearchConfig",
    "Summary",
    "check_state",
    "count_naive",
    "count_sieve",
    "default_chunk",
    "primes_naive",
    "primes_sieve",
    "primes_sieve_array",
    "split_equal",
    "split_range",
]
