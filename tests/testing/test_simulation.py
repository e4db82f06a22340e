"""``netlet.testing.simulate``: seeds that must pass, runs that must repeat, checks that
must fire.

``make test`` runs 300 seeds (about 30 s of CPU); ``make soak`` runs 10,000.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netlet.cluster._worker_book import WorkerBook
from netlet.codec import Codec
from netlet.errors import WorkerLost
from netlet.testing import SimConfig, SimReport, simulate
from netlet.testing._loop import Livelock, SimLoop, Stalled
from netlet.testing._peers import Ledger, SimClient
from netlet.testing._sim import _World
from tests.testing._seeds import failures

SEEDS = 300
CHUNK = 25

FOUND_BUGS = [1, 101, 236, 332, 539, 574, 1361, 2107, 3109, 3467, 3627, 3754]
"""Seeds that found a defect (each fixed, each with its own test): a worker that pulled
right after giving tasks back, so a task bounced between two busy workers (1, once the
simulated worker ran the real worker book), a dead worker's
parked pull never answered (101, 332, 539), a restored error sent as text (236),
a cancelled or finished task run again by a late copy of its submit, or a finished
one claimed by a cancel (1361, 2107, 3109, 3467, 3627, 3754);
and two of the simulation's own (a killed head that still wrote its store, 236; the
simulated client resubmitting a task whose result came meanwhile, 574)."""



def _failures(seeds: list[int], config: Any = None) -> list[str]:
    return failures(simulate, seeds, config)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_seeds_find_no_violation(first: int) -> None:
    failures = _failures(list(range(first, first + CHUNK)))
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(60)
def test_the_seeds_that_found_bugs_pass() -> None:
    failures = _failures(FOUND_BUGS)
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(60)
def test_a_baseline_with_no_faults_ends_every_task_without_refusals() -> None:
    report = simulate(3, SimConfig(faults=False))
    assert report.ok, report.violations
    assert report.tasks == 80
    assert report.ended_ok + report.raised + report.cancelled == 80
    assert report.raised == 6  # 13, 26 and 39 of each client
    assert report.worker_lost == report.refused_results == 0


@pytest.mark.timeout(60)
def test_the_same_seed_gives_the_same_run_event_for_event() -> None:
    a, b = simulate(11), simulate(11)
    assert a.trace == b.trace
    assert len(a.trace) > 50
    assert simulate(12).digest != a.digest


@pytest.mark.timeout(60)
def test_a_seed_replays_in_another_process_with_another_hash_seed() -> None:
    """Iteration over sets of strings depends on PYTHONHASHSEED: nothing may hang on it."""
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-m", "netlet.testing", "--seed", "7"],
                              env=env, capture_output=True, text=True, timeout=50,
                              check=True)
        [digest] = re.findall(r"trace ([0-9a-f]{16})", done.stdout)
        digests.add(digest)
    assert digests == {simulate(7).digest}


@pytest.mark.timeout(60)
def test_a_task_still_open_at_the_deadline_is_reported_lost() -> None:
    """No time to settle: tasks still running at the calm must count as lost."""
    report = simulate(5, SimConfig(settle=0.0, chaos=2.0, tasks=400))
    assert not report.ok
    assert any("never ended" in v for v in report.violations)
    assert "--settle 0.0" in report.replay
    assert "--chaos 2.0" in report.replay
    assert "--tasks 400" in report.replay


class _Rec:
    def __init__(self) -> None:
        self.violations: list[str] = []

    def note(self, what: str) -> None:
        pass

    def violation(self, what: str) -> None:
        self.violations.append(what)


def _client() -> tuple[SimClient, Ledger, _Rec]:
    ledger, rec = Ledger(), _Rec()
    client = SimClient("c1", "mem://nowhere", ledger, net=None, clock=None,  # type: ignore[arg-type]
                       rec=rec)
    client.expected["c1:1"] = 9
    return client, ledger, rec


def test_the_client_checks_catch_a_wrong_value_a_stale_lease_and_two_endings() -> None:
    codec = Codec()
    client, ledger, rec = _client()
    ledger.received["c1:1"] = [(1, 4, "old"), (1, 9, "new")]
    client.on_results([("c1:1", True, codec.encode_value([10, "new"]), None)])
    assert any("wrong value" in v for v in rec.violations)
    client, ledger, rec = _client()
    ledger.received["c1:1"] = [(1, 4, "old"), (1, 9, "new")]
    client.on_results([("c1:1", True, codec.encode_value([9, "old"]), None)])
    assert any("lease old" in v for v in rec.violations)
    client, ledger, rec = _client()
    ledger.received["c1:1"] = [(1, 4, "a"), (2, 1, "b")]  # a restarted head numbers anew
    client.on_results([("c1:1", True, codec.encode_value([9, "b"]), None)])
    client.on_results([("c1:1", True, codec.encode_value([9, "b"]), None)])  # resent
    assert rec.violations == []
    assert client.duplicates == 1
    client.on_results([("c1:1", False, None, WorkerLost("died"))])
    assert any("ended twice" in v for v in rec.violations)
    client, ledger, rec = _client()
    client.on_results([("c1:1", False, None, RuntimeError("?"))])
    assert any("undeclared error" in v for v in rec.violations)


@pytest.mark.timeout(60)
def test_a_heartbeat_that_leaves_out_a_task_its_worker_holds_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulated worker runs the real book; a book whose heartbeat forgot a task
    it holds (PROTOCOL.md 16.1) is a violation."""
    heartbeat = WorkerBook.heartbeat

    def forgetful(book: WorkerBook[Any, Any]) -> tuple[int, list[str], int]:
        epoch, holding, seen = heartbeat(book)
        return epoch, sorted(holding)[1:], seen

    monkeypatch.setattr(WorkerBook, "heartbeat", forgetful)
    report = simulate(3, SimConfig(faults=False))
    assert any("heartbeat leaves out" in v for v in report.violations), report.violations


@pytest.mark.timeout(60)
def test_a_cancelled_task_started_on_a_live_worker_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that says it gave a task back but keeps it (and starts it later)
    breaks PROTOCOL.md 16.4's promise to the client that cancelled it: seeds 76
    and 223 cancel tasks held unstarted on a live worker."""

    def liar(book: WorkerBook[Any, Any], ids: list[str]) -> list[str]:
        wanted = set(ids)
        return [t[0] for t in book.local if t[0] in wanted]  # and keeps them

    monkeypatch.setattr(WorkerBook, "give_back", liar)
    for seed in (76, 223):
        report = simulate(seed)
        assert any("started after the head said it cancelled" in v
                   for v in report.violations), (seed, report.violations)


def test_a_worker_the_head_presumed_dead_may_start_a_task_cancelled_meanwhile() -> None:
    """Seed 6153: a worker silent past dead_after (a clock jump, then a partition)
    starts a task from its own queue after the head, taking it for dead, requeued
    and cancelled it. PROTOCOL.md 16.4 allows that (the head cannot reach it; its
    result is refused); the check once counted such a worker alive until it joined
    again, and called this a violation."""
    assert simulate(6153).violations == []


@pytest.mark.timeout(30)
def test_a_busy_loop_is_caught_not_run_for_ever() -> None:
    loop = SimLoop(spins=10_000)

    async def spin() -> None:
        while True:  # the busy loop under test  # noqa: ASYNC110
            await asyncio.sleep(0)

    with pytest.raises(Livelock, match="without time moving on"):
        loop.run_until_complete(spin())
    loop.close()


@pytest.mark.timeout(30)
def test_a_world_with_nothing_left_to_happen_is_caught_not_hung() -> None:
    loop = SimLoop()

    async def wait_for_nothing() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(Stalled, match="no timer is armed"):
        loop.run_until_complete(wait_for_nothing())
    loop.close()


@pytest.mark.timeout(30)
def test_time_jumps_to_the_next_timer() -> None:
    loop = SimLoop()

    async def sleeper() -> float:
        await asyncio.sleep(3600)
        return asyncio.get_running_loop().time()

    assert loop.run_until_complete(sleeper()) == pytest.approx(1000.0 + 3600)
    loop.close()


@pytest.mark.timeout(60)
def test_the_command_line_says_what_is_wrong_and_replays() -> None:
    bad = subprocess.run([sys.executable, "-m", "netlet.testing", "--seeds", "9-3"],
                         capture_output=True, text=True, timeout=50)
    assert bad.returncode == 2
    assert "ends before it starts" in bad.stderr
    lost = subprocess.run([sys.executable, "-m", "netlet.testing", "--seed", "5",
                           "--settle", "0", "--chaos", "2", "--tasks", "400"],
                          capture_output=True, text=True, timeout=50)
    assert lost.returncode == 1
    assert "replay: python -m netlet.testing --seed 5" in lost.stdout


@pytest.mark.timeout(60)
def test_a_prime_search_under_faults_counts_exactly() -> None:
    for seed in (3, 4):
        report = simulate(seed, SimConfig(primes=1.0))
        assert report.ok, report.violations
        assert any("primes below 300,000: 25,997, exact" in line for line in report.trace)


@pytest.mark.timeout(30)
def test_the_prime_check_catches_a_wrong_or_missing_count(tmp_path: Path) -> None:
    for counts, wanted in (({(0, 10): 4, (10, 20): 5}, "counted 9 primes"),
                           ({(0, 10): 4}, "never counted [(10, 20)]")):
        report = SimReport(1, SimConfig())
        world = _World(1, SimConfig(), SimLoop(), report, str(tmp_path / "head.db"))
        client = SimClient("c1", "mem://nowhere", world.ledger, net=world.net,
                           clock=world.clock, rec=world)
        world.clients.append(client)
        world.searched = [(0, 10), (10, 20)]
        client.prime_counts.update(counts)
        world._check()
        assert any(wanted in v for v in report.violations), report.violations
        world.loop.close()


@pytest.mark.timeout(30)
def test_a_thread_that_wakes_the_loop_is_counted() -> None:
    """Work finished on a real thread arrives at a moment the virtual clock cannot order:
    the loop counts it, and a simulation reports it as a violation."""
    import threading

    loop = SimLoop()
    woken: list[int] = []

    async def hand_off() -> None:
        here = asyncio.get_running_loop()
        here.call_soon_threadsafe(woken.append, 1)  # from the loop's own thread: fine
        thread = threading.Thread(target=here.call_soon_threadsafe, args=(woken.append, 2),
                                  name="elsewhere")
        thread.start()
        thread.join()
        await asyncio.sleep(0)

    loop.run_until_complete(hand_off())
    loop.close()
    assert sorted(woken) == [1, 2]
    assert len(loop.foreign_wakeups) == 1
    assert "from thread elsewhere" in loop.foreign_wakeups[0]
