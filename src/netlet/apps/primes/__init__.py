"""The distributed prime search, one of netlet's reference systems.

A coordinator cuts a range into chunks; workers pull chunks and count the
primes in each with a named method; the counts add up to pi(N), checked
against ``KNOWN_PI``.  This package holds the pure part: the methods and the
chunking.  The methods are plain module-level functions on plain ints so that
workers can run them by import path, e.g. ``"netlet.apps.primes:count_sieve"``.
"""

from __future__ import annotations

from netlet.apps.primes._chunks import MAX_CHUNKS, split_equal, split_range
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
    "MAX_CHUNKS",
    "MAX_SIEVE_END",
    "METHODS",
    "Method",
    "count_naive",
    "count_sieve",
    "primes_naive",
    "primes_sieve",
    "primes_sieve_array",
    "split_equal",
    "split_range",
]
