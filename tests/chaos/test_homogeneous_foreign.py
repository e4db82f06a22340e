"""Fallacy 8, "the network is homogeneous": a client in another language, across hosts.

``foreign_client.mjs`` is a Node.js client written from docs/PROTOCOL.md
alone (Node's standard library, its own msgpack). On its own host it dials a
netlet node on another host (the gateway), across the bridge, with the
cluster key: it calls objects (values both ways, keyword arguments, an
exception, 200 pipelined calls), submits tasks through a served object that
hands them to a head on a third host and its worker on a fourth, and sends
and receives 300 values on a served channel with acknowledged receives.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.cluster import Observer, start_head, start_worker, worker_nodes
from tests.chaos.hosts import Network

CLIENT = Path(__file__).with_name("foreign_client.mjs")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        why = "needs Node.js (`node`; `make test` installs Debian's nodejs)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {why}")
        pytest.skip(why)
    return node


@pytest.mark.timeout(90)
def test_a_node_js_client_calls_objects_submits_tasks_and_uses_a_channel_across_hosts(
        network: Callable[..., Network], key_file: Path) -> None:
    node = _node()
    net = network()
    head_host, worker_host = net.add_host("head"), net.add_host("w1")
    gw_host, js_host = net.add_host("gw"), net.add_host("js")
    head, address = start_head(head_host, key_file)
    worker = start_worker(worker_host, address, key_file)
    with Observer(address, key_file) as obs:
        obs.wait("the worker joined", lambda s: bool(worker_nodes(s, worker.children())),
                 timeout=20)
    gateway = gw_host.spawn(sys.executable, "-m", "tests.chaos._peers", "gateway", key_file,
                            address, "7400")
    served = gateway.stdout.wait_for(r"^tcp://", timeout=20).string.strip()
    assert served == gw_host.url(7400), served  # another host's address, across the bridge
    client = js_host.spawn(node, CLIENT, key_file, served)
    assert client.wait(60) == 0, client.output()
    figures = json.loads(client.stdout.text().splitlines()[-1])
    assert figures["tasks"] == 50, figures
    assert figures["channel_values"] == 300, figures
    print(f"\nFIGURES homogeneous/node.js: handshake {figures['handshake_ms']:.0f} ms; "
          f"200 pipelined calls {figures['pipelined_calls_ms']:.0f} ms; 50 tasks through a "
          f"served object {figures['tasks_ms']:.0f} ms; 300 channel values "
          f"{figures['channel_ms']:.0f} ms")
    assert gateway.alive()
    assert head.alive()
