"""Tests for ``netlet primes``: the real command, real worker processes, on loopback.

The answers are checked against known values of pi(N) and a reference list;
the failures are real ones: a worker SIGKILLed mid-run under ``netlet head``,
a worker that joins mid-run, the coordinator itself SIGKILLed and resumed.
"Mid-run" is read from the state file the coordinator commits to as chunks
finish (with a deadline), never from sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from netlet.apps.primes import KNOWN_PI, _cli, count_sieve
from netlet.apps.primes._cli import NUMBER
from netlet.cli import main
from netlet.transport import write_key
from tests.apps.primes.test_coordinator import reference_primes
from tests.cluster.conftest import (
    STEP,
    ClusterKit,
    child_env,
    free_port,
    netlet_command,
    wait_until,
)
from tests.security._spawn import NOBODY_UID

__all__: list[str] = []

pytestmark = pytest.mark.slow


class Coordinators:
    """Runs ``netlet primes`` in the test's directory; SIGKILLs whatever is left at the end.

    Each gets a private, short ``TMPDIR`` (removed at the end), where an embedded
    cluster puts its sockets: a SIGKILLed coordinator cannot clean up after itself.
    """

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.tmp = tempfile.mkdtemp(prefix="primes-")
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str | Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen([*netlet_command(), "primes", *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=child_env(TMPDIR=self.tmp), cwd=self.cwd)
        self.procs.append(proc)
        return proc

    def run(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = self.start(*args)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"netlet primes {args} still ran after {timeout} s; stderr:\n{err}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def summary(self, *args: str | Path, timeout: float = 60) -> dict[str, Any]:
        """Run with ``--json`` and return the parsed summary (fails on a non-zero exit)."""
        done = self.run(*args, "--json", timeout=timeout)
        assert done.returncode == 0, done.stderr
        return finish(done)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=STEP)
        shutil.rmtree(self.tmp, ignore_errors=True)


def finish(done: subprocess.CompletedProcess[str] | subprocess.Popen[str],
           timeout: float = 60) -> dict[str, Any]:
    """The JSON summary a finished (or finishing) ``netlet primes --json`` printed."""
    if isinstance(done, subprocess.Popen):
        out, err = done.communicate(timeout=timeout)
        assert done.returncode == 0, err
    else:
        out = done.stdout
    summary: dict[str, Any] = json.loads(out)
    return summary


@pytest.fixture
def primes(tmp_path: Path) -> Iterator[Coordinators]:
    runner = Coordinators(tmp_path)
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[ClusterKit]:
    k = ClusterKit(tmp_path)
    try:
        yield k
    finally:
        k.close()


def finished_chunks(state: Path) -> list[tuple[int, int]]:
    """``(chunk index, worker pid)`` of the chunks the state file records as finished."""
    if not state.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True,
                                                timeout=STEP)) as db:
            return db.execute("SELECT idx, pid FROM chunks").fetchall()
    except sqlite3.OperationalError:  # created but not yet set up
        return []


def shares(summary: dict[str, Any]) -> dict[int, int]:
    """Chunks per worker pid, from a JSON summary."""
    return {n["pid"]: n["chunks"] for n in summary["nodes"]}


# --- answers on the embedded cluster -----------------------------------------------------


@pytest.mark.parametrize("method", ["naive", "sieve"])
def test_pi_of_a_million(primes: Coordinators, tmp_path: Path, method: str) -> None:
    summary = primes.summary("--end", "10**6", "--method", method, "--workers", "2")

    assert summary["count"] == KNOWN_PI[10**6] == 78_498
    assert summary["matches_known"] is True
    assert summary["workers"] == 2
    assert summary["computed_chunks"] == summary["chunks"]
    assert len(summary["nodes"]) <= 2
    assert sum(n["share"] for n in summary["nodes"]) == pytest.approx(1)
    assert summary["numbers_per_second"] > 0
    assert not list(tmp_path.glob(".netlet-primes-*")), "no state is left after a good run"


def test_json_keys_are_the_documented_ones(primes: Coordinators) -> None:
    """docs/primes.md lists the summary's keys; start, end, method, numbers were missing."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "primes.md").read_text()
    para = text.split("With `--json` the same summary comes as JSON:")[1].split("The exit")[0]
    top, nodes = para.split("(a list of", 1)
    summary = primes.summary("--end", "10**6", "--workers", "1")
    assert set(summary) == set(re.findall(r"`(\w+)`", top))
    assert set(summary["nodes"][0]) == set(re.findall(r"`(\w+)`", nodes.split(")")[0]))


def test_resume_with_nothing_to_resume_says_so(primes: Coordinators) -> None:
    done = primes.run("--end", "1000", "--method", "naive", "--workers", "1", "--resume")

    assert done.returncode == 0, done.stderr
    assert "nothing to resume" in done.stderr
    assert "168 primes in [0, 1,000) by naive" in done.stdout


def test_pi_of_ten_million_by_sieve_with_the_human_summary(primes: Coordinators) -> None:
    done = primes.run("--end", "1e7", "--workers", "2")

    assert done.returncode == 0, done.stderr
    assert "664,579 primes in [0, 10,000,000) by sieve = the known pi(N)" in done.stdout
    assert "share" in done.stdout


@pytest.mark.parametrize("method", ["naive", "sieve"])
def test_out_lists_exactly_the_primes(primes: Coordinators, tmp_path: Path,
                                      method: str) -> None:
    out = tmp_path / "primes.txt"
    summary = primes.summary("--start", "1000", "--end", "100_000", "--method", method,
                             "--workers", "2", "--chunk", "3001", "--out", out)

    expected = reference_primes(1_000, 100_000)
    assert out.read_text() == "".join(f"{p}\n" for p in expected)
    assert summary["count"] == len(expected)
    assert summary["known_pi"] is None


# --- failures, with a running head -------------------------------------------------------


def test_worker_killed_mid_run_loses_nothing(kit: ClusterKit, primes: Coordinators,
                                             tmp_path: Path) -> None:
    head = kit.head()
    first, second = kit.workers(head.address, 2)
    state = tmp_path / "state.db"
    run = primes.start("--head", head.address, "--method", "naive", "--end", "2_000_000",
                       "--chunk", "20_000", "--state", state, "--json")
    wait_until(lambda: sum(pid == first.pid for _, pid in finished_chunks(state)) >= 2,
               STEP * 2, "the first worker finishing two chunks")

    first.kill()
    assert run.poll() is None, "the run is still going when the worker dies"
    summary = finish(run)

    assert summary["count"] == count_sieve(0, 2_000_000) == 148_933
    done_by = shares(summary)
    assert set(done_by) <= {first.pid, second.pid}
    assert 2 <= done_by[first.pid] < 100
    assert done_by[second.pid] > 0
    assert sum(done_by.values()) == summary["chunks"] == 100
    head.stderr.wait_for(r"worker \w+ is gone")


def test_worker_joining_mid_run_takes_a_share(kit: ClusterKit, primes: Coordinators,
                                              tmp_path: Path) -> None:
    head = kit.head()
    first = kit.worker(head.address)
    state = tmp_path / "state.db"
    run = primes.start("--head", head.address, "--method", "naive", "--end", "3_000_000",
                       "--chunk", "20_000", "--state", state, "--json")
    wait_until(lambda: finished_chunks(state), STEP * 2, "the run getting under way")

    late = kit.worker(head.address)
    summary = finish(run)

    assert summary["count"] == count_sieve(0, 3_000_000)
    done_by = shares(summary)
    assert set(done_by) == {first.pid, late.pid}
    assert done_by[late.pid] >= 1
    assert sum(done_by.values()) == 150


def test_head_restarted_mid_run(kit: ClusterKit, primes: Coordinators, tmp_path: Path) -> None:
    port = free_port()
    head = kit.head(port)
    kit.workers(head.address, 2)
    state = tmp_path / "state.db"
    run = primes.start("--head", head.address, "--method", "naive", "--end", "2_000_000",
                       "--chunk", "20_000", "--state", state, "--json")
    wait_until(lambda: len(finished_chunks(state)) >= 2, STEP * 2, "the run getting under way")

    head.kill()
    assert run.poll() is None, "the run is still going when the head dies"
    kit.head(port)  # a new head, knowing nothing: the client resubmits, the workers rejoin
    summary = finish(run)

    assert summary["count"] == 148_933
    assert sum(shares(summary).values()) == 100


def test_a_head_that_needs_the_cluster_key(kit: ClusterKit, primes: Coordinators,
                                           tmp_path: Path) -> None:
    key_file = tmp_path / "cluster.key"
    key = write_key(key_file)
    head = kit.head(key_file=key_file)
    worker = kit.worker(head.address, key=key)

    summary = primes.summary("--head", head.address, "--key-file", key_file, "--end", "10**6")
    assert summary["count"] == KNOWN_PI[10**6]
    assert set(shares(summary)) == {worker.pid}

    refused = primes.run("--head", head.address, "--end", "10**6")
    assert refused.returncode == 1
    assert "requires the cluster key" in refused.stderr


def test_unreachable_head(primes: Coordinators) -> None:
    done = primes.run("--end", "100", "--head", f"tcp://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "cannot reach the head at tcp://127.0.0.1:" in done.stderr


def test_a_search_that_fails_before_any_chunk_points_to_no_missing_file(
        primes: Coordinators, tmp_path: Path) -> None:
    """It said 'Finished chunks are kept in .netlet-primes-....db' and no such file existed."""
    done = primes.run("--end", "100", "-w", "1", "--out", tmp_path / "missing" / "p.txt")
    assert done.returncode == 1
    assert "No such file or directory" in done.stderr
    kept = [line for line in done.stderr.splitlines() if "are kept in" in line]
    for line in kept:
        path = line.split("are kept in ", 1)[1].split(":", 1)[0]
        assert Path(path).exists(), line
    assert "nothing to resume" in done.stderr


def test_state_and_out_cannot_be_one_file(primes: Coordinators, tmp_path: Path) -> None:
    """--out p --state p said 'primes written to p', then removed p as the finished state."""
    same = tmp_path / "same.txt"
    (tmp_path / "link.txt").symlink_to(same)
    for state in (same, tmp_path / "link.txt"):
        done = primes.run("--end", "10**6", "-w", "1", "--out", same, "--state", state)
        assert done.returncode == 2, done.stderr
        assert "--state" in done.stderr
        assert "--out" in done.stderr
    assert not same.exists()  # nothing started


# --- the coordinator dying -----------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true",
                    reason="planting a file of another user needs root (chown)")
def test_a_state_file_of_another_user_is_refused(primes: Coordinators, tmp_path: Path) -> None:
    """Another user who can write where we run plants .netlet-primes-<hash>.db: its 'done'
    chunks and --out length would steer our --resume (and cut our --out file)."""
    out = tmp_path / "p.txt"
    out.write_text("2\n3\n5\n")
    state = tmp_path / "planted.db"
    with contextlib.closing(sqlite3.connect(state)) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.commit()
    os.chown(state, NOBODY_UID, NOBODY_UID)
    for resume in ([], ["--resume"]):
        done = primes.run("--end", "10**6", "-w", "1", "--out", out, "--state", state, *resume)
        assert done.returncode == 1, done.stderr
        assert f"uid {NOBODY_UID}" in done.stderr
    assert out.read_text() == "2\n3\n5\n"


def test_resume_after_the_coordinator_is_killed(primes: Coordinators, tmp_path: Path) -> None:
    args = ("--method", "naive", "--end", "2_000_000", "--chunk", "20_000", "--workers", "2")
    run = primes.start(*args, "--json")
    found = wait_until(lambda: next(tmp_path.glob(".netlet-primes-*.db"), None), STEP,
                       "the state file")
    assert found is not None
    state: Path = found
    wait_until(lambda: len(finished_chunks(state)) >= 10, STEP * 2, "ten finished chunks")

    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=STEP)
    finished = len(finished_chunks(state))
    assert 10 <= finished < 100

    refused = primes.run(*args)
    assert refused.returncode == 1
    assert "add --resume to continue it" in refused.stderr

    summary = primes.summary(*args, "--resume")

    assert summary["count"] == 148_933
    assert summary["resumed_chunks"] == finished
    assert summary["computed_chunks"] == 100 - finished
    assert sum(n["chunks"] for n in summary["nodes"]) == 100
    assert not state.exists()


@pytest.mark.timeout(60)
def test_ctrl_c_exits_130_with_every_finished_chunk_committed(primes: Coordinators,
                                                              tmp_path: Path) -> None:
    """docs/primes.md: "It is 130 after Ctrl-C", and finished chunks are committed "all
    of them when the search fails or is interrupted (Ctrl-C)": with --out, the state's
    recorded length of the file is then the file's length (nothing written uncounted)."""
    state, out = tmp_path / "s.db", tmp_path / "p.txt"
    run = primes.start("--method", "naive", "--end", "5_000_000", "--chunk", "20_000",
                       "--workers", "1", "--state", state, "--out", out)
    wait_until(lambda: len(finished_chunks(state)) >= 3, STEP * 2, "three finished chunks")
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=STEP)
    assert run.returncode == 130, err
    assert "run the same command with --resume" in err
    assert "Traceback" not in err
    with contextlib.closing(sqlite3.connect(state)) as db:
        [(offset,)] = db.execute("SELECT value FROM meta WHERE key = 'out_offset'").fetchall()
        counts = [c for (c,) in db.execute("SELECT count FROM chunks")]
    assert int(offset) == out.stat().st_size > 0
    assert len(counts) < 250  # interrupted, not finished
    assert out.read_text().count("\n") == sum(counts)


def _busiest_descendant_cpu(pid: int) -> float:
    """CPU seconds of the busiest process below ``pid`` (a worker at its chunk)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    below, stack = [], list(children.get(pid, []))
    while stack:
        p = stack.pop()
        below.append(p)
        stack.extend(children.get(p, []))
    return max((cpu.get(p, 0.0) for p in below), default=0.0)


@pytest.mark.timeout(60)
def test_ctrl_c_exits_at_once_while_a_long_chunk_runs(primes: Coordinators,
                                                      tmp_path: Path) -> None:
    # One chunk of trial division near 10**12 takes minutes. Ctrl-C waited for it to
    # finish (the executor's shutdown waits for running tasks); it now stops the
    # workers: the chunk is not committed, and --resume computes it again.
    state = tmp_path / "s.db"
    run = primes.start("--method", "naive", "--start", "10**12", "--end", "1_000_001_000_000",
                       "--chunk", "10**6", "--workers", "1", "--state", state)
    wait_until(lambda: _busiest_descendant_cpu(run.pid) > 1.0, STEP * 4,
               "a worker at its chunk")
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=STEP * 2)
    assert run.returncode == 130, err
    assert "Traceback" not in err
    assert finished_chunks(state) == []


@pytest.mark.timeout(60)
def test_on_a_terminal_the_live_view_shows_progress_primes_rate_and_shares(
        tmp_path: Path) -> None:
    """docs/primes.md: "When stderr is a terminal, a live view shows: a progress bar; the
    number of primes found so far; how many numbers are checked per second; each worker's
    share (host:pid, chunks, numbers, primes, busy time, share)." Only a terminal takes
    that path: no other test draws the view."""
    import pexpect

    # About a second of trial division: the view (redrawn 8 times a second) has chunks.
    child = pexpect.spawn(netlet_command()[0], [*netlet_command()[1:], "primes", "--method",
                                                "naive", "--end", "10**6", "--chunk", "10_000",
                                                "-w", "1"],
                          dimensions=(40, 160), encoding="utf-8", timeout=STEP * 3,
                          cwd=str(tmp_path), env=child_env())
    try:
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", child.before)
    assert child.exitstatus == 0, shown[-2000:]
    assert "Traceback" not in shown
    views = shown.split("naive [0, 1,000,000)")[1:]
    live = [v for v in views if "numbers/s" in v and "chunks " in v and "/100 of " in v]
    assert live, shown[-2000:]
    last = live[-1]
    assert re.search(r"\d+% [\d,]+ primes [\d.]+ [kMG]? ?numbers/s", last), last
    assert re.search(r"node +chunks +numbers +primes +busy +share", last), last
    assert re.search(r"\S+:\d+ +\d+ +[\d,]+ +[\d,]+ +[\d.]+ s +[\d.]+%", last), last
    assert "78,498 primes in [0, 1,000,000) by naive = the known pi(N)" in shown


@pytest.mark.timeout(60)
@pytest.mark.parametrize("resume", [False, True])
def test_a_database_that_is_not_a_state_file_is_never_written_nor_removed(
        primes: Coordinators, tmp_path: Path, resume: bool) -> None:
    """--state names a file of the user's own: if it is not a prime-search state file,
    the search refuses it ("is in the way"), with or without --resume. With --resume it
    used to add its tables to that database, run, and then delete the file."""
    precious = tmp_path / "precious.db"
    with contextlib.closing(sqlite3.connect(precious)) as db, db:
        db.execute("CREATE TABLE accounts (name TEXT, balance INTEGER)")
        db.execute("INSERT INTO accounts VALUES ('alice', 100)")
    before = precious.read_bytes()
    done = primes.run("--end", "10**6", "--workers", "1", "--state", precious,
                      *(["--resume"] if resume else []))
    assert done.returncode == 1, done.stdout
    assert "is in the way and is not a prime-search state file" in done.stderr
    assert "Traceback" not in done.stderr
    assert precious.read_bytes() == before


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message", "code"), [
    (["--end", "5", "--start", "10"], "end (5) is below start (10)", 1),
    (["--end", "-5"], "end must be 0 or more", 1),
    (["--start", "-1", "--end", "5"], "start must be 0 or more", 1),
    (["--end", "lots"], "'lots' is not a whole number", 2),
    (["--end", "10**99999"], "far too large", 2),
    # Digits past Python's int-conversion limit (4300), and a long base raised to a
    # short power: a clean "far too large", not a traceback (nor minutes of big-int work).
    (["--end", "9" * 5000], "far too large", 2),
    (["--end", "9" * 3000 + "**999"], "far too large", 2),
    (["--end", "9" * 5000 + "*10**6"], "far too large", 2),
    (["--end", "9" * 40 + "e900"], "far too large", 2),
    (["--end", "9" * 5000 + "**0"], "far too large", 2),
    (["--end", "0" * 5000 + "1"], "far too large", 2),
    (["--end", "1." + "0" * 5000], "far too large", 2),
    (["--chunk", "9" * 5000, "--end", "100"], "far too large", 2),
    (["--end", "10**17"], "the sieve method goes up to end=10**16", 1),
    (["--end", "100", "--chunk", "0"], "a chunk holds 1 to 10**10 numbers", 1),
    (["--end", "100", "--chunk", "10**11"], "a chunk holds 1 to 10**10 numbers", 1),
    (["--end", "100", "--chunk", "10**9", "--out", "p.txt"], "when writing the primes out", 1),
    (["--end", "10**12", "--method", "naive", "--chunk", "1"], "use larger chunks", 1),
    (["--end", "100", "--method", "fast"], "'fast' is not one of", 2),
    (["--end", "100", "--workers", "0"], "--workers", 2),
    (["--end", "100", "--head", "tcp://127.0.0.1:1", "--workers", "2"], "with --head", 2),
    (["--end", "100", "--key-file", "k"], "give --head too", 2),
    (["--end", "100", "--head", "nowhere"], "cannot use the head at nowhere", 1),
    (["--end", "1__0"], "'1__0' is not a whole number", 2),
    (["--end", "1.5"], "'1.5' is not a whole number", 2),
    (["--end", "1.25e1"], "'1.25e1' is not a whole number", 2),
    ([], "Missing option '--end'", 2),
])
def test_bad_input(args: list[str], message: str, code: int, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/primes.md: 2 for a command line it cannot use, 1 for values it refuses."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["primes", *args])
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir()), "nothing started, nothing written"


def test_sieve_without_numpy_says_what_to_install(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy fails; find_spec says so
    result = CliRunner().invoke(main, ["primes", "--end", "100"])
    assert result.exit_code == 1
    assert "the sieve method needs numpy: pip install 'netlet[numpy]'" in result.output
    assert not list(tmp_path.iterdir()), "nothing started"


def test_local_workers_get_one_blas_thread_unless_the_user_chose(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    with _cli._one_blas_thread():
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
        assert os.environ["MKL_NUM_THREADS"] == "3"
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    assert os.environ["MKL_NUM_THREADS"] == "3"


@pytest.mark.parametrize(("text", "value"), [
    ("300000", 300_000), ("1_000_000", 10**6), ("10**9", 10**9), ("10^9", 10**9),
    ("1e9", 10**9), ("5*10**7", 5 * 10**7), ("2 * 1e3", 2_000),
    ("1.5e6", 1_500_000), ("2.5e1", 25), ("1_000.5e1", 10_005)])
def test_numbers_can_be_written_as_powers(text: str, value: int) -> None:
    assert NUMBER.convert(text, None, None) == value


_NUMBER_PARTS = st.one_of(st.sampled_from(["*", "**", "^", "e", "E", ".", "_", " ", "-"]),
                          st.integers(0, 10**6).map(str), st.just("9" * 5000),
                          st.just("0" * 5000))


@pytest.mark.timeout(60)
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.lists(_NUMBER_PARTS, max_size=7).map("".join)))
def test_any_text_is_a_whole_number_or_a_clean_usage_error(text: str) -> None:
    """A number from the command line is read or refused with a message (exit 2), for any
    text: never another exception, never minutes of big-integer work."""
    try:
        value = NUMBER.convert(text, None, None)
    except click.BadParameter:
        return
    assert type(value) is int
    assert abs(value) < 10**101


def test_listed_in_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "primes" in result.output
