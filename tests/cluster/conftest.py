"""Fixtures for cluster tests that run a real head and real workers on loopback.

``cluster_kit``
    A :class:`ClusterKit`: starts ``netlet head`` and ``python -m netlet.cluster``
    processes and ``Cluster`` clients, and at the end of the test closes every
    client and SIGKILLs and reaps every process it started, whatever happened::

        def test_x(cluster_kit):
            head = cluster_kit.head()                  # waits for its address
            workers = cluster_kit.workers(head.address, 2)
            cluster = cluster_kit.client(head.address)
            cluster_kit.wait_workers(cluster, 2)       # polls status() with a deadline
            head.stderr.wait_for(r"is gone")           # the head's log (it runs with -v)

Processes run with ``PYTHONUNBUFFERED=1``, the repository root on
``PYTHONPATH`` (so workers import :mod:`tests.cluster.tasks`) and a wide
``COLUMNS`` (so the head's log lines are not wrapped).

Helpers
-------

:func:`wait_until`, :func:`free_port`, :class:`Proc`, ``STEP``
    From :mod:`tests._support`, re-exported here.

:func:`netlet_command`
    The argv prefix that runs the ``netlet`` console script.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from netlet.cluster import Cluster
from netlet.errors import NetletError
from tests._support import STEP, Proc, free_port, wait_until

__all__ = [
    "REPO",
    "STEP",
    "ClusterKit",
    "Proc",
    "child_env",
    "free_port",
    "netlet_command",
    "wait_until",
]

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]


def netlet_command() -> list[str]:
    """How to run ``netlet``: the console script installed beside this interpreter."""
    beside = Path(sys.executable).parent / "netlet"
    if not beside.exists():
        pytest.fail(f"the netlet console script is not installed at {beside} "
                    "(pip install -e '.[dev]')")
    return [str(beside)]


def child_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    # PYTHONFAULTHANDLER: a child that hangs is aborted by ``Proc.wait`` and prints where
    # each of its threads was.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, "COLUMNS": "250",
            "PYTHONFAULTHANDLER": "1", **extra}


class ClusterKit:
    """Starts heads, workers, CLI commands and clients; cleans all of them up."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []
        self.clients: list[Cluster] = []

    # -- processes ---------------------------------------------------------------------

    def spawn(self, argv: Sequence[str], *, stdin_text: str | None = None,
              name: str = "") -> Proc:
        """Start ``argv`` with piped output (and ``stdin_text`` written to stdin, then EOF)."""
        p = Proc.spawn(argv, env=child_env(), cwd=REPO, stdin_text=stdin_text, name=name)
        self.procs.append(p)
        return p

    def head(self, port: int = 0, *, state: Path | str | None = None,
             key_file: Path | str | None = None, extra: Sequence[str] = ()) -> Proc:
        """``netlet -v head --listen tcp://127.0.0.1:PORT``; returns once it printed its address."""
        argv = [*netlet_command(), "-v", "head", "--listen", f"tcp://127.0.0.1:{port}", *extra]
        if state is not None:
            argv += ["--state", str(state)]
        if key_file is not None:
            argv += ["--key-file", str(key_file)]
        p = self.spawn(argv, name="head")
        try:
            p.address = p.stdout.wait_for(r"^tcp://\S+$").group(0).strip()
        except BaseException:
            print(p.stderr.text(), file=sys.stderr)
            raise
        return p

    def worker(self, address: str, *, key: bytes | None = None,
               credit: int | str | None = None, extra: Sequence[str] = ()) -> Proc:
        """``python -m netlet.cluster --join ADDR`` (the key, if any, on stdin)."""
        argv = [sys.executable, "-m", "netlet.cluster", "--join", address, *extra]
        if credit is not None:
            argv += ["--credit", str(credit)]
        if key is not None:
            argv.append("--key-stdin")
        return self.spawn(argv, stdin_text=None if key is None else key.hex() + "\n",
                          name="worker")

    def workers(self, address: str, n: int, **options: Any) -> list[Proc]:
        return [self.worker(address, **options) for _ in range(n)]

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``netlet ARGS...`` to completion."""
        return subprocess.run([*netlet_command(), *args], capture_output=True, text=True,
                              env=child_env(), cwd=REPO, timeout=timeout, check=False)

    # -- clients -----------------------------------------------------------------------

    def client(self, address: str | None = None, **options: Any) -> Cluster:
        cluster = Cluster(address, **options)
        self.clients.append(cluster)
        return cluster

    @staticmethod
    def alive_workers(cluster: Cluster) -> list[dict[str, Any]]:
        return [n for n in cluster.status()["nodes"] if n["role"] == "worker" and n["alive"]]

    def wait_workers(self, cluster: Cluster, n: int, timeout: float = STEP) -> list[dict[str, Any]]:
        """Poll the head until exactly ``n`` workers are alive; returns them."""
        def enough() -> list[dict[str, Any]] | None:
            try:
                alive = self.alive_workers(cluster)
            except NetletError:  # the head is (re)starting
                return None
            return alive if len(alive) == n else None

        return wait_until(enough, timeout, f"{n} alive worker(s)")

    def start(self, workers: int, **head_options: Any) -> tuple[Proc, list[Proc], Cluster]:
        """A head, ``workers`` workers joined to it, and a client; waits for the joins."""
        head = self.head(**head_options)
        procs = self.workers(head.address, workers)
        cluster = self.client(head.address)
        self.wait_workers(cluster, workers)
        return head, procs, cluster

    # -- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        for cluster in self.clients:
            with contextlib.suppress(Exception):
                cluster.close()
        for p in self.procs:
            p.kill()


@pytest.fixture
def cluster_kit(tmp_path: Path) -> Iterator[ClusterKit]:
    kit = ClusterKit(tmp_path)
    try:
        yield kit
    finally:
        kit.close()
