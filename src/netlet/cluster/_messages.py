"""The records of the head protocol (PROTOCOL.md 16): what travels between head,
workers and clients per task.

Each is a codec record (``netlet.codec.record``): a frozen dataclass with a
wire id that never changes meaning, sent as ``[wire_id, fields...]`` and
checked field by field when it arrives. Wire ids 1-99 belong to the cluster.
A change of fields is a new record with a new wire id, never an edit.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlet.codec import record

__all__ = ["Delivery", "HandOut", "Pulled", "Report", "TaskResult", "WorkerResult"]


@record(2)
@dataclass(frozen=True, slots=True)
class HandOut:
    """One task the head hands a worker: run ``fn`` on ``body`` under ``lease``."""

    id: str
    fn: str
    """The function id (an import path, maybe with a code suffix, PROTOCOL.md 17)."""
    body: bytes
    """The encoded ``[args, kwargs(, options)]``, opaque to the head."""
    lease: str
    """The fencing token the task's result must carry."""


@record(3)
@dataclass(frozen=True, slots=True)
class Pulled:
    """The head's answer to ``pull`` and ``exchange``: tasks in queue order."""

    tasks: list[HandOut]
    functions: dict[str, bytes]
    """The pickled functions these tasks need, by function id."""
    seq: int
    """Numbers this hand-out; the worker acknowledges it in its heartbeats."""


@record(4)
@dataclass(frozen=True, slots=True)
class WorkerResult:
    """A finished task, from the worker that held its lease (in ``report``, ``exchange``)."""

    id: str
    ok: bool
    body: bytes
    """The encoded return value when ``ok``, the encoded exception otherwise."""
    lease: str
    error_type: str | None = None
    """A failure's exception class name (the head logs it, never decodes ``body``)."""
    traceback: str | None = None
    """A failure's traceback text, its last 8 KiB, kept for a dashboard."""


@record(5)
@dataclass(frozen=True, slots=True)
class TaskResult:
    """A finished task, from the head to its client's sink."""

    id: str
    ok: bool
    body: bytes | None
    """As ``WorkerResult.body``; None when ``error`` is set."""
    error: BaseException | None
    """The head's own verdict (``WorkerLost``, ``ConfigError``, ``CallCancelled``)."""


@record(6)
@dataclass(frozen=True, slots=True)
class Report:
    """What a worker sends in ``report`` and ``exchange``: tasks it started and finished."""

    results: list[WorkerResult]
    started: list[str]
    """Ids of tasks it began running (a result implies its task started)."""


@record(7)
@dataclass(frozen=True, slots=True)
class Delivery:
    """Finished tasks, from the head to a client's sink ``results``."""

    results: list[TaskResult]
