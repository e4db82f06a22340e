"""CPython's own concurrent.futures tests, run against ``netlet.Executor``.

The mixins (``ExecutorTest``, ``WaitTests``, ``AsCompletedTests``,
``ExecutorShutdownTest``) are vendored in :mod:`tests.cluster._cpython.futures_mixins`
(source, version and license in its header). This module plays the part of
CPython's ``ExecutorMixin``/``BaseTestCase`` and runs every mixin twice:

* ``Embedded``: ``netlet.Executor(max_workers=5)``, a head in this process and
  five worker processes, as ``ProcessPoolExecutor(5)`` would start;
* ``Remote``: a ``netlet head`` and five ``python -m netlet.cluster`` workers in
  subprocesses (one set for the module, a shared key, pickles allowed), each
  test making its own ``Executor(ADDR)`` on them.

A test that does not apply to netlet is skipped with its reason in :data:`SKIPS`.
"""

from __future__ import annotations

import os
import unittest
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import netlet
from netlet.transport import generate_key
from tests.cluster._cpython import futures_mixins as cp
from tests.cluster._remote_executor import HEAD_ENV, KEY_ENV, RemoteExecutor
from tests.cluster.conftest import REPO, ClusterKit

SKIPS: dict[str, str] = {}
"""``"Class.test_name"`` -> why that test does not apply to netlet."""


@pytest.fixture(scope="module", autouse=True)
def _workers_import_the_mixins() -> Iterator[None]:
    """Worker processes and CPython's ``python -c`` scripts import the vendored mixins."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
        yield


@pytest.fixture(scope="module")
def remote_head(tmp_path_factory: pytest.TempPathFactory,
                _workers_import_the_mixins: None) -> Iterator[str]:
    """A ``netlet head`` and 5 workers for the whole module; ``$NETLET_TEST_HEAD`` names it."""
    tmp: Path = tmp_path_factory.mktemp("remote-head")
    key = generate_key()
    key_file = tmp / "cluster.key"
    key_file.write_text(key.hex() + "\n")
    key_file.chmod(0o600)
    kit = ClusterKit(tmp)
    try:
        head = kit.head(key_file=key_file, extra=["--allow-pickle"])
        kit.workers(head.address, 5, key=key, extra=["--pickle"])
        client = kit.client(head.address, key_file=str(key_file), allow_pickle=True)
        kit.wait_workers(client, 5, timeout=60)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(HEAD_ENV, head.address)
            mp.setenv(KEY_ENV, str(key_file))
            yield head.address
    finally:
        kit.close()


class NetletExecutorMixin:
    """CPython's ``ExecutorMixin`` for netlet: an executor per test, shut down after it."""

    worker_count = 5
    executor_type: ClassVar[Callable[..., Any]]
    executor: Any

    def setUp(self) -> None:
        name = f"{type(self).__name__}.{self._testMethodName}"  # type: ignore[attr-defined]
        if name in SKIPS:
            raise unittest.SkipTest(SKIPS[name])
        super().setUp()  # type: ignore[misc]
        self.executor = self.executor_type(max_workers=self.worker_count)

    def tearDown(self) -> None:
        self.executor.shutdown(wait=True)
        self.executor = None
        super().tearDown()  # type: ignore[misc]


class EmbeddedMixin(NetletExecutorMixin):
    executor_type = netlet.Executor


@pytest.mark.usefixtures("remote_head")
class RemoteMixin(NetletExecutorMixin):
    executor_type = RemoteExecutor


def _tests(mixin: type, flavour: type) -> type:
    name = flavour.__name__.removesuffix("Mixin") + mixin.__name__.removesuffix("s")
    return type(name, (mixin, flavour, unittest.TestCase), {})


EmbeddedExecutorTest = _tests(cp.ExecutorTest, EmbeddedMixin)
EmbeddedWaitTest = _tests(cp.WaitTests, EmbeddedMixin)
EmbeddedAsCompletedTest = _tests(cp.AsCompletedTests, EmbeddedMixin)
EmbeddedExecutorShutdownTest = _tests(cp.ExecutorShutdownTest, EmbeddedMixin)
RemoteExecutorTest = _tests(cp.ExecutorTest, RemoteMixin)
RemoteWaitTest = _tests(cp.WaitTests, RemoteMixin)
RemoteAsCompletedTest = _tests(cp.AsCompletedTests, RemoteMixin)
RemoteExecutorShutdownTest = _tests(cp.ExecutorShutdownTest, RemoteMixin)
