"""Fallacy 5, "topology doesn't change": the head goes away and comes back.

The head runs with ``--state`` on its host. While a client (on the bridge) waits
for tasks with exact results, the head is SIGKILLed and restarted on the same
host, port and state file. Workers and the client reconnect by themselves,
every future gets its exact result, and no result is counted twice.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netlet.cluster import Cluster
from tests.chaos.cluster import HEAD_PORT, Observer, start_head, start_worker, worker_nodes
from tests.chaos.hosts import Network
from tests.cluster.tasks import read_trace, square_and_record

TASKS = 40


@pytest.mark.timeout(90)
def test_a_head_killed_and_restarted_from_its_state_loses_nothing(
        network: Callable[..., Network], key_file: Path, tmp_path: Path) -> None:
    net = network()
    head_host, w1, w2 = net.add_host("head"), net.add_host("w1"), net.add_host("w2")
    state, trace = tmp_path / "head.db", tmp_path / "trace"
    head, address = start_head(head_host, key_file, "--state", state)
    workers = [start_worker(w, address, key_file) for w in (w1, w2)]
    with Cluster(address, key_file=str(key_file)) as client:
        with Observer(address, key_file) as obs:
            obs.wait("both workers joined", lambda s: all(
                worker_nodes(s, w.children()) for w in workers))
        futures = [client.submit(square_and_record, str(trace), i, 0.2) for i in range(TASKS)]
        deadline = time.monotonic() + 30
        while sum(f.done() for f in futures) < TASKS // 4:
            assert time.monotonic() < deadline, "no progress before the kill"
            time.sleep(0.05)  # polling the futures, with a deadline
        head.kill()
        killed_at = time.monotonic()
        done_at_kill = sum(f.done() for f in futures)
        head, again = start_head(head_host, key_file, "--state", state)
        restarted = time.monotonic() - killed_at
        assert again == address
        with Observer(address, key_file) as obs:
            back = obs.wait("both workers back", lambda s: all(
                worker_nodes(s, w.children()) for w in workers), timeout=30)
            results = [f.result(timeout=60) for f in futures]
            finished = time.monotonic() - killed_at
            refused = obs.status()["refused_results"]
    assert results == [i * i for i in range(TASKS)]
    ran = [int(words[2]) for words in read_trace(trace)]
    assert set(ran) == set(range(TASKS))
    print(f"\nFIGURES topology/head restart: {done_at_kill}/{TASKS} done at the kill; head up "
          f"again {restarted:.2f} s after SIGKILL; both workers back {back:.2f} s after that; "
          f"all {TASKS} results exact {finished:.2f} s after the kill; {len(ran) - TASKS} "
          f"task run(s) repeated, refused results {refused}, 0 counted twice")


@pytest.mark.timeout(90)
def test_a_client_the_head_cannot_dial_back_works_through_the_advertised_address(
        network: Callable[..., Network], key_file: Path) -> None:
    """The head is published behind a forwarder (``--advertise`` its address), and
    nothing of the cluster can send a packet to the client's host: the client's own
    connection carries everything (clients need not listen)."""
    net = network()
    head_host, worker_host, nat, cli = (net.add_host("head"), net.add_host("w1"),
                                        net.add_host("nat"), net.add_host("cli"))
    head, address = start_head(head_host, key_file, "--advertise", nat.ip)
    assert address == nat.url(HEAD_PORT)  # what the head tells the world to dial
    start_worker(worker_host, head_host.url(HEAD_PORT), key_file, 2)
    relay = nat.spawn(sys.executable, "-m", "tests.chaos.relay", f"{nat.ip}:{HEAD_PORT}",
                      head_host.ip, str(HEAD_PORT), "0")
    relay.stdout.wait_for(r"^tcp://", timeout=20)
    head_host.drop_to(cli)
    worker_host.drop_to(cli)
    client = cli.spawn(sys.executable, "-m", "tests.chaos._peers", "pipeline", key_file,
                       address, "500")
    assert client.wait(60) == 0, client.output()
    figures = json.loads(client.stdout.text().splitlines()[-1])
    assert figures["task_value"] == 9
    print(f"\nFIGURES topology/advertise: 500 tasks through {address} in "
          f"{figures['seconds']:.2f} s, head unable to reach the client's host")
    assert head.alive()


@pytest.mark.timeout(90)
def test_a_worker_host_that_changes_its_address_mid_run_rejoins(
        network: Callable[..., Network], key_file: Path, tmp_path: Path) -> None:
    net = network()
    head_host, w1, w2 = net.add_host("head"), net.add_host("w1"), net.add_host("w2")
    head, address = start_head(head_host, key_file)
    workers = [start_worker(w, address, key_file) for w in (w1, w2)]
    trace = tmp_path / "trace"
    with Cluster(address, key_file=str(key_file)) as client, \
            Observer(address, key_file) as obs:
        obs.wait("both workers joined", lambda s: all(
            worker_nodes(s, w.children()) for w in workers))
        futures = [client.submit(square_and_record, str(trace), i, 0.2) for i in range(TASKS)]
        pids = workers[1].children()
        obs.wait("w2 busy", lambda s: any(n["done"] > 0 for n in worker_nodes(s, pids)))
        old = w2.ip
        new = w2.readdress(200)

        def rejoined(s: dict[str, Any]) -> bool:
            return any(n["role"] == "worker" and n["alive"]
                       and n["address"].startswith(f"tcp://{new}:") for n in s["nodes"])

        back = obs.wait(f"a worker serving on w2's new address {new}", rejoined, timeout=40)
        results = [f.result(timeout=60) for f in futures]
        status = obs.status()
    assert results == [i * i for i in range(TASKS)]
    print(f"\nFIGURES topology/new address: w2 moved {old} -> {new}; a worker serves on the "
          f"new address {back:.2f} s later; {TASKS} results exact, refused results "
          f"{status['refused_results']}")
    assert head.alive()
