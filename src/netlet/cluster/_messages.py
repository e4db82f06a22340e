"""The records of the head protocol (PROTOCOL.md 16): what travels between head,
workers and clients per task.

Each is a codec record (``netlet.codec.record``): a frozen dataclass with a
wire id that never changes meaning, sent as ``[wire_id, fields...]`` and
checked field by field when it arrives. Wire ids 1-99 belong to the cluster.
A change of fields is a new record with a new wire id, never an edit: ids 2-7
(a record per task: ``HandOut``, ``WorkerResult``, ``TaskResult``, and the
``Pulled``, ``Report`` and ``Delivery`` that listed them) are retired.

The per-task records are columnar: task i is the i-th item of each column
(``ids[i]``, ``bodies[i]``, ...), and the decoder checks the columns are of
equal length. No object is built per task on the wire path; inside a process
a task travels as a plain tuple (``Job``, ``Done``, ``Finished``, ``Spec``),
which ``rows`` and ``columns`` convert.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netlet.codec import record

__all__ = ["Delivery", "Done", "Finished", "Job", "Pulled", "Report", "Spec", "Tasks",
           "columns"]

Spec = tuple[str, str, bytes, int]
"""A task a client submits: ``(id, fn, body, retries)``."""
Job = tuple[str, str, bytes, str]
"""A task handed to a worker: ``(id, fn, body, lease)``."""
Done = tuple[str, bool, bytes, str, str | None, str | None]
"""A worker's result: ``(id, ok, body, lease, error_type, traceback)``."""
Finished = tuple[str, bool, bytes | None, BaseException | None]
"""A result for a client: ``(id, ok, body, error)``."""


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """``width`` lists, the i-th holding item i of every row (C speed: ``zip``)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*rows, strict=True)]


@record(30, columns=("ids", "fns", "bodies", "retries"))
@dataclass(frozen=True, slots=True)
class Tasks:
    """Tasks a client submits (``submit``'s third argument)."""

    ids: list[str]
    fns: list[str]
    """Function ids (an import path, maybe with a code suffix, PROTOCOL.md 17)."""
    bodies: list[bytes]
    """Each task's encoded ``[args, kwargs(, options)]``, opaque to the head."""
    retries: list[int]

    @classmethod
    def of(cls, specs: Sequence[Spec]) -> Tasks:
        return cls(*columns(specs, 4))

    def rows(self) -> Iterable[Spec]:
        return zip(self.ids, self.fns, self.bodies, self.retries, strict=True)


@record(31, columns=("ids", "fns", "bodies", "leases"))
@dataclass(frozen=True, slots=True)
class Pulled:
    """The head's answer to ``pull`` and ``exchange``: tasks in queue order."""

    ids: list[str]
    fns: list[str]
    bodies: list[bytes]
    leases: list[str]
    """The fencing token each task's result must carry."""
    functions: dict[str, bytes]
    """The pickled functions these tasks need, by function id."""
    seq: int
    """Numbers this hand-out; the worker acknowledges it in its heartbeats."""

    def rows(self) -> Iterable[Job]:
        return zip(self.ids, self.fns, self.bodies, self.leases, strict=True)


@record(32, columns=("ids", "oks", "bodies", "leases", "error_types", "tracebacks"))
@dataclass(frozen=True, slots=True)
class Report:
    """What a worker sends in ``report`` and ``exchange``: tasks it finished and started."""

    ids: list[str]
    oks: list[bool]
    bodies: list[bytes]
    """The encoded return value when ok, the encoded exception otherwise."""
    leases: list[str]
    error_types: list[str | None]
    """A failure's exception class name (the head logs it, never decodes the body)."""
    tracebacks: list[str | None]
    """A failure's traceback text, its last 8 KiB, kept for a dashboard."""
    started: list[str]
    """Ids of tasks it began running (a result implies its task started)."""

    @classmethod
    def of(cls, results: Sequence[Done], started: list[str]) -> Report:
        ids, oks, bodies, leases, error_types, tracebacks = columns(results, 6)
        return cls(ids, oks, bodies, leases, error_types, tracebacks, started)

    def rows(self) -> Iterable[Done]:
        return zip(self.ids, self.oks, self.bodies, self.leases, self.error_types,
                   self.tracebacks, strict=True)


@record(33, columns=("ids", "oks", "bodies", "errors"))
@dataclass(frozen=True, slots=True)
class Delivery:
    """Finished tasks, from the head to a client's sink ``results``."""

    ids: list[str]
    oks: list[bool]
    bodies: list[bytes | None]
    """As ``Report.bodies``; None when the task's ``error`` is set."""
    errors: list[BaseException | None]
    """The head's own verdict (``WorkerLost``, ``ConfigError``, ``CallCancelled``)."""

    @classmethod
    def of(cls, results: Sequence[Finished]) -> Delivery:
        return cls(*columns(results, 4))

    def rows(self) -> Iterable[Finished]:
        return zip(self.ids, self.oks, self.bodies, self.errors, strict=True)
