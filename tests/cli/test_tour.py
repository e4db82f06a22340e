"""``netlet demo``, the tour ``make run`` shows: the real command, its real child processes.

Each run gets its own working directory and ``TMPDIR``; every process the
tour starts (the demo server, the embedded workers, the bank) inherits that
``TMPDIR``, which is how the tests find any that outlive the tour, from
``/proc``, however they were started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.conftest import child_env, netlet_command

__all__: list[str] = []

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

RUN_TIMEOUT = 120.0
"""Seconds a quick tour may take on a loaded 2-core machine (it takes ~5 s when idle)."""


@dataclass
class Tour:
    code: int
    out: str
    tmp: Path
    cwd: Path


def marked_processes(tmp: Path) -> list[int]:
    """PIDs of the processes whose environment holds ``TMPDIR=tmp`` (the tour's descendants)."""
    marker = f"TMPDIR={tmp}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


@pytest.fixture
def run_tour(short_tmp: Path) -> Iterator[Callable[..., Tour]]:
    """``run_tour(*args)``: ``netlet demo ARGS`` to completion, in a fresh cwd and TMPDIR."""
    tmp, cwd = short_tmp / "t", short_tmp / "cwd"
    tmp.mkdir()
    cwd.mkdir()

    def run(*args: str) -> Tour:
        proc = subprocess.Popen([*netlet_command(), "demo", *args], cwd=cwd,
                                env=child_env(TMPDIR=str(tmp), COLUMNS="120"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"netlet demo {args} still ran after {RUN_TIMEOUT:g} s:\n{out}")
        return Tour(proc.returncode, out, tmp, cwd)

    try:
        yield run
    finally:
        for pid in marked_processes(tmp):  # only if a test failed: leave nothing running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def assert_nothing_left(tour: Tour) -> None:
    assert marked_processes(tour.tmp) == [], f"processes outlived the tour:\n{tour.out}"
    assert list(tour.tmp.iterdir()) == [], "the tour left files in TMPDIR"
    assert list(tour.cwd.iterdir()) == [], "the tour wrote into the working directory"


def test_quick_tour_runs_every_part_and_leaves_nothing_behind(
        run_tour: Callable[..., Tour]) -> None:
    tour = run_tour("--quick")
    assert tour.code == 0, tour.out
    out = tour.out
    for i, heading in enumerate(["calls to an object in another process",
                                 "a cluster: an embedded head", "the distributed prime search",
                                 "a bank, a swarm of ATMs"], 1):
        assert f"netlet tour {i}/4: {heading}" in out
    assert "10/10 call styles and failures as promised" in out
    assert "2 workers joined" in out
    assert "pi(300,000) = 25,997 by naive" in out
    if importlib.util.find_spec("numpy") is not None:
        assert "pi(10^8) = 5,761,455 by sieve" in out
    assert "check OK: every acknowledged request applied exactly once" in out
    assert "audit passed" in out
    assert "ops/s" in out
    assert "p99" in out
    # The summary: the figures of this run and the commands for several machines.
    assert "what this run measured" in out
    assert "netlet worker --join tcp://A:7340 --key-file cluster.key" in out
    assert "netlet bank serve --listen tcp://0.0.0.0:7350" in out
    assert "all 4 part(s) passed" in out
    assert "FAILED" not in out
    assert_nothing_left(tour)


def test_full_prime_search_stays_exact_while_a_worker_joins_and_one_is_killed(
        run_tour: Callable[..., Tour]) -> None:
    tour = run_tour("--part", "primes")
    assert tour.code == 0, tour.out
    assert "pi(10^6) = 78,498 by naive" in tour.out
    if importlib.util.find_spec("numpy") is not None:
        assert "pi(10^10) = 455,052,511 by sieve" in tour.out
        assert re.search(r"\+ worker process \d+ starts and joins at", tour.out)
        assert re.search(r"x worker process \d+ SIGKILLed at \d+%: its chunks go to the others",
                         tour.out)
    assert_nothing_left(tour)


def test_a_part_that_overruns_its_time_limit_fails_the_tour(run_tour: Callable[..., Tour]) -> None:
    # Starting worker processes takes far longer than 50 ms: the part is stopped mid-way,
    # and its cluster with it.
    tour = run_tour("--quick", "--part", "primes", "--time-limit", "0.05")
    assert tour.code == 1, tour.out
    assert "netlet tour 1/1: the distributed prime search" in tour.out
    assert "part primes FAILED: it did not finish within its time limit of 0.05 s" in tour.out
    assert "1 of 1 part(s) FAILED: primes" in tour.out
    assert "netlet tour 1/1: calls" not in tour.out
    assert_nothing_left(tour)
