"""Statistics snapshots of the head: frozen records a dashboard or a metrics endpoint reads.

They are plain data (no live references), cheap to build (``Head.statistics()``
is O(workers), never O(tasks)) and carry only what a member may see. Over the
network they travel as dicts (``as_dict``/``from_dict``): the head's
``dashboard`` call returns them to any peer holding the cluster key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from netlet.cluster._histogram import HistogramCounter

__all__ = [
    "ClusterEvent",
    "HeadStatistics",
    "Histogram",
    "HistogramCounter",
    "NameInfo",
    "TaskAttempt",
    "TaskCounts",
    "TaskInfo",
    "TaskPage",
    "WorkerProcessStatistics",
    "WorkerStats",
    "as_dict",
    "from_dict",
]

R = TypeVar("R")


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker as the head sees it (``state`` is "alive" or "dead")."""
    node: str
    name: str
    host: str
    pid: int | None
    address: str
    state: str
    since: float
    """Wall time it joined."""
    heartbeat_age: float
    """Seconds since it was last heard from (0 for a dead one)."""
    running: int
    done: int
    failed: int
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    died: float | None = None
    """Wall time it was declared dead."""
    why: str = ""
    draining: bool = False
    """An operator drained it: it finishes what it holds and gets nothing new."""


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerProcessStatistics:
    """A worker process's own view (``Worker.statistics()``), beside the head's."""
    node: str
    name: str
    epoch: int
    done: int
    failed: int
    held: int
    """Tasks received whose result is not sent yet."""
    waiting: int
    """Received, not started."""
    running: str
    """The id of the task running now ("" when idle)."""
    unreported: int
    """Results finished, not yet sent."""
    rtt: float
    """Smoothed round trip of heartbeats, in seconds."""
    task_seconds: float | None
    """Smoothed time a task takes here (None: none ran yet)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TaskCounts:
    """Tasks by state now (queued, assigned, running) and since the head started."""
    queued: int
    assigned: int
    """Handed to a worker, not started yet."""
    running: int
    submitted: int
    done: int
    failed: int
    retried: int
    """Runs started again after their worker died."""
    cancelled: int
    refused_results: int
    stale_requests: int


@dataclasses.dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative counts of observations at or below each bound (Prometheus style)."""
    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    """One per bound, cumulative, then the total (the +Inf bucket)."""
    total: float
    """Sum of the observed values."""


@dataclasses.dataclass(frozen=True, slots=True)
class HeadStatistics:
    head: str
    address: str
    started: float
    time: float
    """Wall time of this snapshot."""
    workers: tuple[WorkerStats, ...]
    clients: int
    tasks: TaskCounts
    names: int
    actors: int
    last_event: int
    """Sequence number of the newest event (0: none yet)."""
    tracking: bool
    """Whether per-task history (timings, attempts) is kept: on once a dashboard asks."""
    task_seconds: Histogram
    dispatch_seconds: Histogram
    held_clients: tuple[str, ...] = ()
    """Clients whose queued tasks are held back: their unread results passed their
    part of the result budget."""
    results_waiting: int = 0
    """Bytes of results waiting for their clients."""
    paused: bool = False
    """No task goes out: the results waiting fill the whole result budget."""


@dataclasses.dataclass(frozen=True, slots=True)
class TaskAttempt:
    worker: str
    handed: float
    started: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task: live (queued, assigned, running) or finished ("done", "failed")."""
    id: str
    fn: str
    client: str
    state: str
    worker: str
    attempts: int
    retries: int
    submitted: float | None = None
    finished: float | None = None
    error_type: str = ""
    traceback: str = ""
    history: tuple[TaskAttempt, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPage:
    total: int
    offset: int
    limit: int
    tasks: tuple[TaskInfo, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class NameInfo:
    """A name in the head's name service; an actor's also says how it is kept."""
    name: str
    kind: str
    address: str
    node: str
    """The node that serves it (for an actor, the worker it lives on)."""
    actor: bool
    cls: str = ""
    restart: str = ""
    restarts: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterEvent:
    """A join, a death (``dead``), a leave, a retry or an actor restart."""
    seq: int
    time: float
    kind: str
    node: str
    role: str
    name: str
    detail: str = ""


def as_dict(record: Any) -> dict[str, Any]:
    """A record as plain data (what the codec and JSON carry)."""
    return dataclasses.asdict(record)


_NESTED: dict[tuple[type, str], type] = {}


def from_dict(cls: type[R], data: dict[str, Any]) -> R:
    """Rebuild a record sent as ``as_dict``; unknown keys (a newer head) are ignored."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        inner = _NESTED.get((cls, f.name))
        if inner is not None and value is not None:
            if isinstance(value, list | tuple):
                value = tuple(from_dict(inner, v) for v in value)
            else:
                value = from_dict(inner, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


_NESTED.update({
    (HeadStatistics, "workers"): WorkerStats,
    (HeadStatistics, "tasks"): TaskCounts,
    (HeadStatistics, "task_seconds"): Histogram,
    (HeadStatistics, "dispatch_seconds"): Histogram,
    (TaskInfo, "history"): TaskAttempt,
    (TaskPage, "tasks"): TaskInfo,
})
