"""Pickled functions run only when every side agreed: client, head, worker, keyed hops.

Unpickling runs code, so a ``pickle:`` payload is a remote code execution by
design. It used to be loaded by any worker whatever was agreed: a head
started without ``--allow-pickle`` forwarded it, a worker without
``--allow-pickle`` loaded it. Each test here sends a payload whose mere
unpickling would create a marker file (``os.system`` in ``__reduce__``)
through a real head to a real worker, with one side not agreeing, and checks
the refusal names that side and the marker never appears.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from netlet import Cluster
from netlet.errors import ConfigError
from netlet.transport import load_key
from tests.conftest import STEP
from tests.security._spawn import Servers, servers

__all__ = ["servers"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.timeout(120)


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="netlet-pickle-")) / "unpickled"
    yield path
    path.unlink(missing_ok=True)
    path.parent.rmdir()


@pytest.fixture
def key_file(servers: Servers, tmp_path: Path) -> Path:
    path = tmp_path / "cluster.key"
    assert servers.run("keygen", path).returncode == 0
    return path


def _cluster(servers: Servers, key_file: Path, *, head_pickle: bool, worker_pickle: bool,
             client_pickle: bool) -> Cluster:
    """A real head and one real worker (each with or without --allow-pickle), and a client."""
    key = ["--key-file", str(key_file)]
    head = servers.start("head", "--listen", "tcp://127.0.0.1:0", *key,
                         *(["--allow-pickle"] if head_pickle else []))
    servers.start("worker", "--join", head.address, "-n", "1", *key,
                  *(["--allow-pickle"] if worker_pickle else []), ready=None)
    cluster = Cluster(head.address, key=load_key(key_file), allow_pickle=client_pickle)
    for _ in range(int(STEP * 40)):
        if any(n["role"] == "worker" and n["alive"] for n in cluster.status()["nodes"]):
            return cluster
        cluster.node._closed.wait(0.05)
    cluster.close()
    raise AssertionError("the worker did not join")


def _payload(marker: Path) -> tuple[str, bytes]:
    payload = pickle.dumps(_Payload(marker))
    return "pickle:" + hashlib.sha256(payload).hexdigest()[:24], payload


def _submit_pickled(cluster: Cluster, marker: Path) -> Future[Any]:
    """What a client that skips its own checks sends: a task whose function is a pickle."""
    fn_id, payload = _payload(marker)
    return cluster._submit(fn_id, payload, [[], None], 0)


def _refused(fut: Future[Any]) -> str:
    with pytest.raises(ConfigError) as info:
        fut.result(STEP * 3)
    return str(info.value)


def test_a_head_without_allow_pickle_does_not_forward_pickles(
        servers: Servers, key_file: Path, marker: Path) -> None:
    with _cluster(servers, key_file, head_pickle=False, worker_pickle=True,
                  client_pickle=True) as cluster:
        why = _refused(_submit_pickled(cluster, marker))
        assert "head" in why
        assert "--allow-pickle" in why
        with pytest.raises(ConfigError, match=r"head .* did not agree to pickle"):
            cluster.submit(lambda: 1)  # the honest client is told at once
    assert not marker.exists()


def test_a_worker_without_allow_pickle_refuses_to_unpickle(
        servers: Servers, key_file: Path, marker: Path) -> None:
    with _cluster(servers, key_file, head_pickle=True, worker_pickle=False,
                  client_pickle=True) as cluster:
        why = _refused(_submit_pickled(cluster, marker))
        assert "worker" in why
        assert "was not started with --allow-pickle" in why
        assert cluster.submit(abs, -3).result(STEP) == 3  # by import path it still works
    assert not marker.exists()


def test_a_client_that_did_not_opt_in_cannot_send_pickles(
        servers: Servers, key_file: Path, marker: Path) -> None:
    with _cluster(servers, key_file, head_pickle=True, worker_pickle=True,
                  client_pickle=False) as cluster:
        why = _refused(_submit_pickled(cluster, marker))
        assert "client did not agree to pickle" in why
    assert not marker.exists()


def test_a_pickled_actor_class_needs_the_heads_consent(
        servers: Servers, key_file: Path, marker: Path) -> None:
    with _cluster(servers, key_file, head_pickle=False, worker_pickle=True,
                  client_pickle=True) as cluster:
        fn_id, payload = _payload(marker)
        body = cluster._codec.encode_value([[], None])
        with pytest.raises(ConfigError, match="head was not started with --allow-pickle"):
            cluster._head.spawn(fn_id, body, "evil", None, {fn_id: payload})
    assert not marker.exists()


def test_pickles_run_when_every_side_agreed(servers: Servers, key_file: Path) -> None:
    with _cluster(servers, key_file, head_pickle=True, worker_pickle=True,
                  client_pickle=True) as cluster:
        base = 40
        assert cluster.submit(lambda: base + 2).result(STEP * 3) == 42
