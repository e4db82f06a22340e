"""Tests for the pure core of the prime search: the methods and the chunking.

Both methods are checked against two references that share no code with them:
a plain-Python sieve for small numbers and a deterministic Miller-Rabin test
for large ones; against each other; and against known values of pi(N).
"""

from __future__ import annotations

import importlib
import pickle
import sys
from collections.abc import Callable
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netlet.apps.primes as primes_pkg
from netlet.apps.primes import (
    KNOWN_PI,
    MAX_CHUNKS,
    MAX_SIEVE_END,
    METHODS,
    Method,
    _chunks,
    _methods,
    count_naive,
    count_sieve,
    primes_naive,
    primes_sieve,
    primes_sieve_array,
    split_equal,
    split_range,
)

__all__: list[str] = []

REFERENCE_LIMIT = 20_000

COUNTS: list[Callable[[int, int], int]] = [count_naive, count_sieve]
LISTS: list[Callable[[int, int], list[int]]] = [primes_naive, primes_sieve]
ALL: list[Callable[[int, int], object]] = [*COUNTS, *LISTS]


# --- references ---------------------------------------------------------------


@cache
def reference_flags() -> list[bool]:
    """``flags[n]`` is True iff n is prime, for n < REFERENCE_LIMIT: textbook sieve."""
    flags = [False, False] + [True] * (REFERENCE_LIMIT - 2)
    for p in range(2, REFERENCE_LIMIT):
        if flags[p] and p * p < REFERENCE_LIMIT:
            for multiple in range(p * p, REFERENCE_LIMIT, p):
                flags[multiple] = False
    return flags


def is_prime_mr(n: int) -> bool:
    """Miller-Rabin with the first 12 prime bases: exact for n < 3.3 * 10**24."""
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n < 2:
        return False
    for p in bases:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def reference_primes(start: int, end: int) -> list[int]:
    if end <= REFERENCE_LIMIT:
        flags = reference_flags()
        return [n for n in range(max(start, 0), end) if flags[n]]
    return [n for n in range(max(start, 0), end) if is_prime_mr(n)]


def test_references_agree() -> None:
    assert reference_primes(0, REFERENCE_LIMIT) == [
        n for n in range(REFERENCE_LIMIT) if is_prime_mr(n)
    ]
    assert len(reference_primes(0, 30)) == 10


# --- known values of pi(N) ----------------------------------------------------


@pytest.mark.parametrize("n", [300_000, 10**6])
def test_naive_known_pi(n: int) -> None:
    assert count_naive(0, n) == KNOWN_PI[n]


@pytest.mark.parametrize("n", [300_000, 10**6, 10**7, 10**8])
def test_sieve_known_pi(n: int) -> None:
    assert count_sieve(0, n) == KNOWN_PI[n]


@pytest.mark.slow
def test_sieve_known_pi_1e9() -> None:
    assert count_sieve(0, 10**9) == KNOWN_PI[10**9]


def test_benchmark_w4_workload() -> None:
    """W4/P1: trial division below 300,000 in 300 equal chunks gives 25997."""
    assert sum(count_naive(a, b) for a, b in split_equal(0, 300_000, 300)) == 25_997
    assert sum(count_naive(a, b) for a, b in split_equal(2, 300_000, 300)) == 25_997


def test_sieve_chunks_add_up_across_segments() -> None:
    """Chunks that straddle the sieve's internal segments still add up to pi(N)."""
    chunks = split_range(0, 10**8, 3_000_001)
    assert sum(count_sieve(a, b) for a, b in chunks) == KNOWN_PI[10**8]


# --- agreement with the references --------------------------------------------


small_ranges = st.tuples(
    st.integers(min_value=-5, max_value=REFERENCE_LIMIT),
    st.integers(min_value=-5, max_value=REFERENCE_LIMIT),
)


@settings(deadline=None)
@given(small_ranges)
def test_small_ranges_match_reference(bounds: tuple[int, int]) -> None:
    start, end = bounds
    want = reference_primes(start, end)
    assert primes_naive(start, end) == want
    assert primes_sieve(start, end) == want
    assert count_naive(start, end) == len(want)
    assert count_sieve(start, end) == len(want)


@settings(deadline=None, max_examples=50)
@given(
    st.integers(min_value=REFERENCE_LIMIT, max_value=10**10),
    st.integers(min_value=0, max_value=3_000),
)
def test_large_ranges_match_miller_rabin(start: int, width: int) -> None:
    want = reference_primes(start, start + width)
    assert primes_sieve(start, start + width) == want
    assert count_sieve(start, start + width) == len(want)


@settings(deadline=None, max_examples=20)
@given(
    st.integers(min_value=10**6, max_value=10**10),
    st.integers(min_value=0, max_value=300),
)
def test_methods_agree_on_large_numbers(start: int, width: int) -> None:
    assert primes_naive(start, start + width) == primes_sieve(start, start + width)


@pytest.mark.parametrize(
    "start",
    [10**10 - 1_000, 10**11, 2**40 - 500, 10**12 - 1_000],
)
def test_sieve_far_out(start: int) -> None:
    assert primes_sieve(start, start + 2_000) == reference_primes(start, start + 2_000)


@settings(deadline=None)
@given(
    st.integers(min_value=0, max_value=REFERENCE_LIMIT),
    st.integers(min_value=0, max_value=3_000),
    st.sampled_from([1, 2, 3, 7, 64, 1_001]),
)
def test_segment_boundaries(start: int, width: int, segment: int) -> None:
    """With tiny segments every boundary case of the segmented sieve gets hit."""
    end = min(start + width, REFERENCE_LIMIT)
    found = [2] if start <= 2 < end else []
    for lo, flags in _methods._sieve_segments(start, end, segment=segment):
        assert len(flags) <= segment
        found.extend(lo + 2 * i for i, flag in enumerate(flags.tolist()) if flag)
    assert found == reference_primes(start, end)


# --- edge cases ---------------------------------------------------------------


EDGES = [
    ((0, 0), []),
    ((0, 1), []),
    ((0, 2), []),
    ((0, 3), [2]),
    ((1, 3), [2]),
    ((2, 3), [2]),
    ((2, 4), [2, 3]),
    ((3, 4), [3]),
    ((3, 3), []),
    ((4, 5), []),
    ((0, 14), [2, 3, 5, 7, 11, 13]),
    ((13, 14), [13]),
    ((14, 17), []),
    ((17, 18), [17]),
    ((10, 2), []),
    ((-10, 3), [2]),
    ((-10, -3), []),
    ((24, 29), []),
    ((24, 30), [29]),
    ((15013, 15020), [15013, 15017]),  # 15015 = 3*5*7*11*13, 15019 = 23*653
]


@pytest.mark.parametrize(("bounds", "want"), EDGES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_edges(method: str, bounds: tuple[int, int], want: list[int]) -> None:
    assert METHODS[method].primes(*bounds) == want
    assert METHODS[method].count(*bounds) == len(want)


@pytest.mark.parametrize("fn", ALL)
def test_rejects_non_integers(fn: Callable[[int, int], object]) -> None:
    with pytest.raises(TypeError):
        fn(0, 10.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("fn", [count_sieve, primes_sieve])
def test_sieve_refuses_beyond_its_limit(fn: Callable[[int, int], object]) -> None:
    with pytest.raises(ValueError, match="the sieve goes up to"):
        fn(MAX_SIEVE_END, MAX_SIEVE_END + 10)


def test_sieve_array() -> None:
    array = primes_sieve_array(0, 30)
    assert str(array.dtype) == "int64"
    assert array.tolist() == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert primes_sieve_array(5, 3).tolist() == []


def test_results_are_plain_python() -> None:
    for count in COUNTS:
        assert type(count(0, 100)) is int
    for list_primes in LISTS:
        result = list_primes(0, 100)
        assert type(result) is list
        assert all(type(p) is int for p in result)


def test_base_prime_cache_grows() -> None:
    cache = _methods._BasePrimes()
    assert cache.upto(10).tolist() == [3, 5, 7]
    assert cache.upto(2**17 + 1)[-1] == 131_071
    assert cache.upto(2).tolist() == []


def test_sieve_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(ImportError, match=r"pip install 'netlet\[numpy\]'"):
        count_sieve(0, 100)
    assert count_naive(0, 100) == 25


# --- shipping by import path --------------------------------------------------


@pytest.mark.parametrize("name", ["count_naive", "count_sieve", "primes_naive", "primes_sieve"])
def test_importable_by_path_and_picklable(name: str) -> None:
    module, attr = f"netlet.apps.primes:{name}".split(":")
    fn = getattr(importlib.import_module(module), attr)
    assert pickle.loads(pickle.dumps(fn)) is fn
    assert fn(0, 10) in (4, [2, 3, 5, 7])


def test_methods_table() -> None:
    assert set(METHODS) == {"naive", "sieve"}
    assert METHODS["naive"] == Method(count=count_naive, primes=primes_naive)
    assert METHODS["sieve"] == Method(count=count_sieve, primes=primes_sieve)
    with pytest.raises(TypeError):
        METHODS["fast"] = METHODS["sieve"]  # type: ignore[index]


@pytest.mark.parametrize("module", [primes_pkg, _methods, _chunks])
def test_exports(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert names == sorted(names)
    for name in names:
        assert hasattr(module, name)
    assert module.__doc__


def test_package_reexports_everything() -> None:
    from netlet.apps.primes import _coordinator

    expected = set(_methods.__all__) | set(_chunks.__all__) | set(_coordinator.__all__)
    assert set(primes_pkg.__all__) == expected


# --- chunks -------------------------------------------------------------------


def assert_exact_cover(chunks: list[tuple[int, int]], start: int, end: int) -> None:
    assert all(lo < hi for lo, hi in chunks), "no empty chunks"
    covered = start
    for lo, hi in chunks:
        assert lo == covered, "no gap, no overlap"
        covered = hi
    assert covered == end if chunks else start == end


@given(
    st.integers(min_value=0, max_value=10**15),
    st.integers(min_value=0, max_value=10**5),
    st.integers(min_value=1, max_value=10**6),
)
def test_split_range_covers_exactly_once(start: int, width: int, chunk: int) -> None:
    chunks = split_range(start, start + width, chunk)
    assert_exact_cover(chunks, start, start + width)
    assert all(hi - lo == chunk for lo, hi in chunks[:-1])
    assert all(0 < hi - lo <= chunk for lo, hi in chunks)
    assert len(chunks) == -(-width // chunk)


@given(
    st.integers(min_value=0, max_value=10**15),
    st.integers(min_value=0, max_value=10**5),
    st.integers(min_value=1, max_value=2_000),
)
def test_split_equal_covers_exactly_once(start: int, width: int, n: int) -> None:
    chunks = split_equal(start, start + width, n)
    assert_exact_cover(chunks, start, start + width)
    assert len(chunks) == min(n, width)
    sizes = [hi - lo for lo, hi in chunks]
    if sizes:
        assert max(sizes) - min(sizes) <= 1
        assert sizes == sorted(sizes, reverse=True)


def test_split_examples() -> None:
    assert split_range(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert split_range(5, 5, 3) == []
    assert split_equal(0, 10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert split_equal(0, 300_000, 300)[:2] == [(0, 1_000), (1_000, 2_000)]
    assert split_equal(0, 2, 5) == [(0, 1), (1, 2)]
    assert split_equal(7, 7, 5) == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: split_range(-1, 10, 2), "start at 0 or above"),
        (lambda: split_range(10, 5, 2), "must not end before it starts"),
        (lambda: split_range(0, 10, 0), "at least one number"),
        (lambda: split_range(0, 10**12, 1), "over the limit"),
        (lambda: split_range(0, MAX_CHUNKS + 1, 1), "over the limit"),
        (lambda: split_equal(-1, 10, 2), "start at 0 or above"),
        (lambda: split_equal(10, 5, 2), "must not end before it starts"),
        (lambda: split_equal(0, 10, 0), "at least one chunk"),
        (lambda: split_equal(0, 10, MAX_CHUNKS + 1), "over the limit"),
    ],
)
def test_split_rejects_bad_input(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_split_rejects_non_integers() -> None:
    with pytest.raises(TypeError):
        split_range(0, 10, 2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        split_equal(0.0, 10, 2)  # type: ignore[arg-type]
