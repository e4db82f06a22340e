"""The records of the head protocol that are not per task (PROTOCOL.md 16.5): joining,
heartbeats, membership events, names and task output.

Like those of ``_messages`` (the per-task ones), each is a codec record: a
frozen dataclass with a wire id that never changes meaning, sent as
``[wire_id, fields...]`` and checked field by field when it arrives, so a
head refuses a malformed join or heartbeat before it changes anything. Their
wire ids start at 20. Plain scalar arguments (a node id, an epoch, a task id,
a digest, an offset) stay call arguments: a record is for a structured payload.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlet.codec import record

__all__ = ["JoinInfo", "Joined", "Load", "MemberEvent", "NameEntry", "Names", "OutputLines",
           "TaskOutput", "WorkerDesc"]


@record(20)
@dataclass(frozen=True, slots=True)
class JoinInfo:
    """What a worker or client says of itself in ``join`` (shown by status and dashboards)."""

    name: str
    """A worker's name (``--name``); "" for a client."""
    host: str
    pid: int
    address: str
    """Where the worker's node listens (objects placed on it are reached there); "" if nowhere."""
    cores: int
    """CPU cores of the worker's host; 0 for a client."""


@record(21)
@dataclass(frozen=True, slots=True)
class Joined:
    """The head's answer to ``join``."""

    head: str
    """The head's node id."""
    heartbeat: float
    """Seconds between a worker's heartbeats."""
    dead_after: float
    """Seconds of silence after which the head counts a worker dead."""
    epoch: int | None
    """A worker's new epoch (every later request carries it); None for a client."""


@record(22)
@dataclass(frozen=True, slots=True)
class Load:
    """A worker's counters in its ``heartbeat``, shown by status and dashboards."""

    done: int
    failed: int
    cpu_percent: float | None
    """CPU time used since the last heartbeat, in percent of one core (None: unknown)."""
    rss_bytes: int | None
    """Resident memory (None: unknown, e.g. not on Linux)."""


@record(23)
@dataclass(frozen=True, slots=True)
class WorkerDesc:
    """Which worker printed some output (``OutputLines.worker``)."""

    node: str
    name: str
    host: str
    pid: int


@record(24, columns=("tids", "leases", "streams", "texts"))
@dataclass(frozen=True, slots=True)
class TaskOutput:
    """Lines tasks printed, from the worker holding their leases (``task_output``).

    Columnar: entry ``i`` is task ``tids[i]`` under ``leases[i]`` writing
    ``texts[i]`` to ``streams[i]`` (1 stdout, 2 stderr); the decoder checks the
    columns are of one length.
    """

    tids: list[str]
    leases: list[str]
    streams: list[int]
    texts: list[str]


@record(25, columns=("tids", "streams", "texts"))
@dataclass(frozen=True, slots=True)
class OutputLines:
    """Lines a client's tasks printed, from the head to its sink ``output``.

    Columnar as ``TaskOutput``, without the leases; ``worker`` printed them all.
    """

    worker: WorkerDesc
    tids: list[str]
    streams: list[int]
    texts: list[str]


@record(26)
@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A member joined or left (to a subscriber's ``event``)."""

    kind: str
    """"join" or "leave"."""
    node: str
    role: str
    """"worker" or "client"."""
    info: JoinInfo
    """What the member said of itself when it joined."""
    detail: str
    """Why it left ("left", "connection lost", "silent for 3.1 s"); "" for a join."""


@record(27)
@dataclass(frozen=True, slots=True)
class NameEntry:
    """One registered name: the handle's kind and address, and the node owning it."""

    name: str
    kind: str
    """The REF's kind: "object", "channel", ... (PROTOCOL.md 8.1)."""
    address: str
    node: str
    """The member that registered it (the name goes when that member does)."""


@record(28)
@dataclass(frozen=True, slots=True)
class Names:
    """The head's answer to ``names``: every registered name, in registration order."""

    entries: list[NameEntry]
