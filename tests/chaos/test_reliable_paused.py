"""Fallacy 1 again, the paused process: a worker frozen by SIGSTOP past its lease.

Tasks with exact expected results (``square_and_record``, which also writes a
line per run) go to two worker hosts. One worker process is SIGSTOPped while it
runs a task: the head declares it dead after ``dead_after`` (3 s) and hands
its tasks to the other worker; every future gets its exact result. Then the
frozen worker is resumed: it finishes its stale task and sends the result,
which the head refuses (``refused_results``), and it rejoins. Each result is
delivered once; a task may have *run* twice (at-least-once execution), never
been *counted* twice.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netlet.cluster import Cluster
from tests.chaos.cluster import Observer, start_head, start_worker, worker_nodes
from tests.chaos.hosts import Network
from tests.cluster.tasks import read_trace, square_and_record

TASKS = 10
DEAD_AFTER = 3.0


@pytest.mark.timeout(90)
def test_a_worker_paused_past_its_lease_has_its_late_result_refused(
        network: Callable[..., Network], key_file: Path, tmp_path: Path) -> None:
    net = network()
    head_host, w1, w2 = net.add_host("head"), net.add_host("w1"), net.add_host("w2")
    head, address = start_head(head_host, key_file)
    workers = [start_worker(w, address, key_file) for w in (w1, w2)]
    trace = tmp_path / "trace"
    with Observer(address, key_file) as obs, \
            Cluster(address, key_file=str(key_file)) as client:
        obs.wait("both workers joined", lambda s: all(
            worker_nodes(s, w.children()) for w in workers))
        futures = [client.submit(square_and_record, str(trace), i, 0.5) for i in range(TASKS)]
        paused = workers[1].children()
        obs.wait("w2 running a task", lambda s: any(
            n["running"] > 0 for n in worker_nodes(s, paused)), timeout=20)
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        detected = obs.wait("the head drops the paused worker",
                            lambda s: not worker_nodes(s, paused), timeout=20)
        results = [f.result(timeout=60) for f in futures]
        refused_before = obs.status()["refused_results"]
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        obs.wait("the late result refused", lambda s: s["refused_results"] > refused_before,
                 timeout=20)
        refused = time.monotonic() - resumed_at
        obs.wait("the resumed worker rejoins", lambda s: bool(worker_nodes(s, paused)),
                 timeout=20)
        rejoined = time.monotonic() - resumed_at
        paused_for = resumed_at - stopped_at
    assert results == [i * i for i in range(TASKS)]  # each future resolved once, exactly
    runs = read_trace(trace)
    ran = sorted(int(words[2]) for words in runs)
    assert set(ran) == set(range(TASKS))
    twice = len(ran) - TASKS
    assert twice >= 1, "the paused worker's task should have run again elsewhere"
    assert detected <= DEAD_AFTER + 2.0, f"the head took {detected:.1f} s"
    print(f"\nFIGURES paused: head dropped the frozen worker {detected:.2f} s after SIGSTOP; "
          f"paused {paused_for:.1f} s; late result refused {refused:.2f} s after SIGCONT; "
          f"rejoined {rejoined:.2f} s after SIGCONT; {TASKS} results exact, {twice} task run(s) "
          f"repeated, 0 counted twice")
    assert head.alive()
