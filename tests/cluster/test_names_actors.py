"""The name service, actors placed with ``spawn`` and membership events, across processes.

Names are owned by the node that registered them and go when it dies; an actor
spawned with ``restart="on-failure"`` comes back on another worker under the
same name, one without does not; a subscriber sees members join and leave.
"""

from __future__ import annotations

import queue
import sys
from typing import Any

import pytest

from netlet.errors import ConfigError, NetletConnectionError, NetletError
from netlet.node import Proxy
from tests.cluster import tasks
from tests.cluster.conftest import STEP, ClusterKit, wait_until

NAME_OWNER = """\
import sys, threading
from netlet.cluster import Cluster
from netlet.node import Node
from netlet.transport import find_user_key
from tests.cluster.tasks import Counter

# A node of our own joins with the key of the (keyless, hence per-user keyed) local head.
node = Node(listen="tcp://127.0.0.1:0", key=find_user_key(sys.argv[1]))
cluster = Cluster(sys.argv[1], node=node)
cluster.register("svc", Counter(100))
print("registered", flush=True)
threading.Event().wait()
"""

GONE_WITHIN = 5.0
"""Seconds within which the head must notice a dead node and act on it."""


def test_name_disappears_with_its_node(cluster_kit: ClusterKit) -> None:
    head = cluster_kit.head()
    cluster = cluster_kit.client(head.address)
    owner = cluster_kit.spawn([sys.executable, "-c", NAME_OWNER, head.address], name="owner")
    owner.stdout.wait_for("^registered$")

    svc = cluster.lookup("svc")
    assert isinstance(svc, Proxy)
    assert svc.increment() == 101
    assert svc.pid() == owner.pid
    assert "svc" in cluster.names()

    owner.kill()

    wait_until(lambda: cluster.lookup("svc") is None, GONE_WITHIN, "'svc' disappearing")
    assert "svc" not in cluster.names()
    with pytest.raises(ConfigError, match="svc"):
        cluster.actor("svc")


def test_actor_restarts_on_another_worker(cluster_kit: ClusterKit) -> None:
    _, workers, cluster = cluster_kit.start(workers=2)
    counter = cluster.spawn(tasks.Counter, 10, name="c", restart="on-failure")
    assert counter.increment() == 11
    assert cluster.actor("c").increment(5) == 16
    host = counter.pid()
    assert host in {w.pid for w in workers}
    with pytest.raises(ConfigError, match="taken"):
        cluster.spawn(tasks.Counter, name="c")

    next(w for w in workers if w.pid == host).kill()

    def restarted() -> Proxy | None:
        try:
            proxy = cluster.actor("c")
            return proxy if proxy.pid() != host else None
        except NetletError:  # not placed yet, or still the dead one's handle
            return None

    again = wait_until(restarted, GONE_WITHIN, "'c' restarting on another worker")
    (survivor,) = (w for w in workers if w.pid != host)
    assert again.pid() == survivor.pid
    assert again.get() == 10  # a new instance, made with the same arguments
    assert again.increment() == 11
    with pytest.raises(NetletConnectionError):
        counter.get()  # the old handle points at the dead worker


def test_actor_without_restart_disappears_with_its_worker(cluster_kit: ClusterKit) -> None:
    head, workers, cluster = cluster_kit.start(workers=2)
    counter = cluster.spawn(tasks.Counter, name="d")
    host = counter.pid()

    next(w for w in workers if w.pid == host).kill()

    wait_until(lambda: cluster.lookup("d") is None, GONE_WITHIN, "'d' disappearing")
    with pytest.raises(ConfigError, match="'d'"):
        cluster.actor("d")
    # A worker joining later does not bring it back; the name is free for a new actor.
    cluster_kit.worker(head.address)
    cluster_kit.wait_workers(cluster, 2)
    assert cluster.lookup("d") is None
    fresh = cluster.spawn(tasks.Counter, 7, name="d")
    assert fresh.get() == 7
    assert fresh.pid() != host


def test_membership_subscription_sees_join_and_leave(cluster_kit: ClusterKit) -> None:
    head = cluster_kit.head()
    cluster = cluster_kit.client(head.address)
    events: queue.Queue[tuple[str, str, str, dict[str, Any]]] = queue.Queue()
    cluster.subscribe(lambda kind, node, role, info: events.put((kind, node, role, info)))

    def next_event(kind: str, match: Any) -> tuple[str, str, str, dict[str, Any]]:
        seen = []
        while True:
            try:
                event = events.get(timeout=STEP)
            except queue.Empty:
                pytest.fail(f"no {kind} event within {STEP} s; saw {seen}")
            if event[0] == kind and match(event):
                return event
            seen.append(event)

    worker = cluster_kit.worker(head.address)
    _, node, role, info = next_event("join", lambda e: e[3].get("pid") == worker.pid)
    assert role == "worker"
    assert info["address"].startswith("tcp://127.0.0.1:")

    other = cluster_kit.client(head.address)
    next_event("join", lambda e: e[1] == other.node.id and e[2] == "client")

    worker.kill()
    _, _, role, info = next_event("leave", lambda e: e[1] == node)
    assert role == "worker"
    assert info["detail"] == "connection lost"  # and who it was: what it said at its join
    assert info["pid"] == worker.pid
    other.close()
    _, _, _, info = next_event("leave", lambda e: e[1] == other.node.id)
    assert info["detail"] == "left"
