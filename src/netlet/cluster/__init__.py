"""A cluster: head (names, membership, scheduler), workers, tasks with futures, actors.

Each name is imported on first use (PEP 562 ``__getattr__``): a worker process
(``python -m netlet.cluster``) loads only the worker, not the head, its
scheduler, its store or the statistics records, and ``netlet.Executor`` only
what an executor needs. Type checkers see the imports below as usual.
"""

from __future__ import annotations

import importlib
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netlet.cluster._client import Cluster
    from netlet.cluster._cpus import usable_cpus
    from netlet.cluster._embedded import EmbeddedCluster
    from netlet.cluster._executor import Executor
    from netlet.cluster._functions import function_ref, resolve_path
    from netlet.cluster._head import Head, HeadConfig
    from netlet.cluster._histogram import HistogramCounter
    from netlet.cluster._stats import (
        ClusterEvent,
        HeadStatistics,
        Histogram,
        NameInfo,
        TaskAttempt,
        TaskCounts,
        TaskInfo,
        TaskPage,
        WorkerProcessStatistics,
        WorkerStats,
    )
    from netlet.cluster._store import HeadStore
    from netlet.cluster._worker import WorkerOptions, worker_key
    from netlet.cluster._worker_main import run_worker

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Cluster",
    "ClusterEvent",
    "EmbeddedCluster",
    "Executor",
    "Head",
    "HeadConfig",
    "HeadStatistics",
    "HeadStore",
    "Histogram",
    "HistogramCounter",
    "NameInfo",
    "TaskAttempt",
    "TaskCounts",
    "TaskInfo",
    "TaskPage",
    "WorkerOptions",
    "WorkerProcessStatistics",
    "WorkerStats",
    "as_completed",
    "function_ref",
    "resolve_path",
    "run_worker",
    "usable_cpus",
    "wait",
    "worker_key",
]

_WHERE = {
    "Cluster": "_client",
    "ClusterEvent": "_stats",
    "EmbeddedCluster": "_embedded",
    "Executor": "_executor",
    "Head": "_head",
    "HeadConfig": "_head",
    "HeadStatistics": "_stats",
    "HeadStore": "_store",
    "Histogram": "_stats",
    "HistogramCounter": "_histogram",
    "NameInfo": "_stats",
    "TaskAttempt": "_stats",
    "TaskCounts": "_stats",
    "TaskInfo": "_stats",
    "TaskPage": "_stats",
    "WorkerOptions": "_worker",
    "WorkerProcessStatistics": "_stats",
    "WorkerStats": "_stats",
    "function_ref": "_functions",
    "resolve_path": "_functions",
    "run_worker": "_worker_main",
    "usable_cpus": "_cpus",
    "worker_key": "_worker",
}


def __getattr__(name: str) -> object:
    """Import the module that defines ``name`` on first use, then keep the name here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'netlet.cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"netlet.cluster.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
