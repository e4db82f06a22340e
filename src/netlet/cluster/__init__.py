"""A cluster: head (names, membership, scheduler), workers, tasks with futures, actors."""

from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait

from netlet.cluster._client import Cluster
from netlet.cluster._embedded import EmbeddedCluster
from netlet.cluster._executor import Executor
from netlet.cluster._functions import function_ref, resolve_path
from netlet.cluster._head import Head, HeadConfig
from netlet.cluster._stats import (
    ClusterEvent,
    HeadStatistics,
    Histogram,
    HistogramCounter,
    NameInfo,
    TaskAttempt,
    TaskCounts,
    TaskInfo,
    TaskPage,
    WorkerProcessStatistics,
    WorkerStats,
)
from netlet.cluster._store import HeadStore
from netlet.cluster._worker import WorkerOptions, run_worker, worker_key

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
    "wait",
    "worker_key",
]
