"""Fallacy 6, "there is one administrator": a cluster key rotated without downtime.

The head runs with the new key and still accepts the old one (``netlet head
--key-file NEW --old-key-file OLD``, PROTOCOL.md 4.3). Two worker hosts
joined with the old key are moved to the new one one by one (stopped, started
again with ``--key-file NEW --old-key-file OLD``) while a client still on the
old key keeps mapping tasks: every batch comes back exact, none fails. Once
both moved, a client still on the old key calls an object placed on a moved
worker (which still accepts the old key); a client on the new key runs tasks
on both moved workers, and a key the head never had is refused.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import netlet
from netlet.cluster import Cluster
from netlet.transport import write_key
from tests.chaos.cluster import Observer, start_head, start_worker, worker_nodes
from tests.chaos.hosts import Network, Proc
from tests.chaos.tasks import pid_after
from tests.cluster.tasks import Counter, slow_square


@pytest.mark.timeout(120)
def test_a_key_rotation_moves_workers_one_by_one_without_downtime(
        network: Callable[..., Network], tmp_path: Path) -> None:
    old, new, stranger = (tmp_path / f"{name}.key" for name in ("old", "new", "stranger"))
    for path in (old, new, stranger):
        write_key(path)
    net = network()
    head_host, w1, w2 = net.add_host("head"), net.add_host("w1"), net.add_host("w2")
    head, address = start_head(head_host, new, "--old-key-file", old)
    workers = {w1: start_worker(w1, address, old), w2: start_worker(w2, address, old)}
    batches, failures = [0], []
    stop = threading.Event()

    def old_client() -> None:  # a client nobody told about the rotation yet
        with Cluster(address, key_file=str(old)) as c:
            while not stop.is_set():
                try:
                    if list(c.map(slow_square, range(20), timeout=30)) != [i * i for i in
                                                                           range(20)]:
                        failures.append("wrong results")
                    batches[0] += 1
                except netlet.NetletError as e:
                    failures.append(f"{type(e).__name__}: {e}")

    with Observer(address, new) as obs:
        def joined(proc: Proc) -> Callable[[dict[str, Any]], bool]:
            return lambda s: bool(worker_nodes(s, proc.children()))

        for proc in workers.values():
            obs.wait("a worker on the old key joined", joined(proc), timeout=20)
        client = threading.Thread(target=old_client)
        client.start()
        moves = []
        try:
            for host in (w1, w2):
                before = batches[0]
                obs.wait("the old-key client ran a batch", lambda s, b=before: batches[0] > b,
                         timeout=20)
                workers[host].signal(signal.SIGTERM)
                workers[host].wait(10)
                workers[host] = start_worker(host, address, new, 1, "--old-key-file", str(old))
                moves.append(obs.wait(f"{host.name} rejoined on the new key",
                                      joined(workers[host]), timeout=20))
            before = batches[0]
            obs.wait("the old-key client ran a batch after the moves",
                     lambda s: batches[0] > before, timeout=20)
        finally:
            stop.set()
            client.join(60)
    assert failures == [], failures
    with Cluster(address, key_file=str(old)) as c:  # a caller not moved yet
        assert c.spawn(Counter, 1).increment() == 2  # straight to a moved worker
    with Cluster(address, key_file=str(new)) as c:
        pids = set(c.map(pid_after, [0.02] * 100))
    moved = {pid for proc in workers.values() for pid in proc.children()}
    assert pids == moved, f"tasks ran on {pids}, the moved workers are {moved}"
    with pytest.raises(netlet.AuthenticationError):
        Cluster(address, key_file=str(stranger)).status()
    print(f"\nFIGURES key rotation: 2 workers moved to the new key, each back in "
          f"{', '.join(f'{m:.2f} s' for m in moves)}; the old-key client ran {batches[0]} "
          f"batches of 20 tasks meanwhile, 0 failed")
    assert head.alive()
