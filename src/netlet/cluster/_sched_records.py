"""The scheduler's records: tasks, workers' slots and the actions it returns.

Plain data, shared by the sans-I/O ``Scheduler`` and the shells that carry out
its actions (the head; the worker's batching of results).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "ASSIGNED", "DONE", "QUEUED", "RUNNING",
    "Action", "Deliver", "Handout", "Reclaim", "StaleEpoch", "Started", "Task", "TaskQueue",
    "WorkerSlot",
]

QUEUED, ASSIGNED, RUNNING, DONE = "queued", "assigned", "running", "done"


class StaleEpoch(Exception):
    """A request from a worker's old epoch, or from a worker the scheduler does not know."""


@dataclass(slots=True)
class Task:
    id: str
    client: str
    fn: str
    body: bytes
    retries: int
    attempts: int = 0
    """Runs lost with their worker so far (a task lost before it started costs none)."""
    state: str = QUEUED
    worker: str = ""
    lease: str = ""
    """The current hand-out's fencing token ("" while not handed out)."""
    seq: int = 0
    """Which hand-out of its worker carried it (heartbeats acknowledge hand-outs)."""


@dataclass(slots=True)
class WorkerSlot:
    node: str
    epoch: int
    assigned: dict[str, None] = field(default_factory=dict)
    """Handed out, not started yet (in hand-out order)."""
    running: set[str] = field(default_factory=set)
    reclaiming: set[str] = field(default_factory=set)
    kept: set[str] = field(default_factory=set)
    """Assigned tasks it declined to give back: it has started them, or ended them with
    the word on its way (or never got them, which its heartbeat settles). Never asked
    for again: asking at once would find the same answer, over and over."""
    parked: int = 0
    """How many tasks its parked pull wants (0: no pull is parked)."""
    parked_at: float = 0.0
    seq: int = 0
    done: int = 0
    failed: int = 0
    lacks: dict[str, str] = field(default_factory=dict)
    """Functions it cannot import (never offered again), and its message why."""
    blocked: bool = False
    """Its last take found queued tasks, but only of functions it lacks..."""
    blocked_at: int = 0
    """...when the queue had seen this many pushes (more since: look again)."""
    draining: bool = False
    """An operator drained it: it finishes what it holds and is handed nothing new."""


# -- actions --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Handout:
    """Answer ``worker``'s pull with ``tasks`` (maybe none: the pull timed out)."""
    worker: str
    tasks: tuple[Task, ...]
    seq: int


@dataclass(frozen=True, slots=True)
class Reclaim:
    """Ask ``worker`` to give back those of ``tasks`` it has not started."""
    worker: str
    epoch: int
    tasks: tuple[str, ...]
    cancel: bool = False
    """Those given back are cancelled (else they go back to the queue)."""


@dataclass(frozen=True, slots=True)
class Started:
    """Tell ``client`` these tasks started: their futures turn RUNNING."""
    client: str
    tasks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send ``client`` a finished task: ``[id, ok, body, error]``."""
    client: str
    result: tuple[str, bool, bytes | None, BaseException | None]


Action = Handout | Reclaim | Started | Deliver


class TaskQueue:
    """Queued tasks in order, each leaving in O(1); a held client's set aside.

    A task leaves by changing state (a cancel marks it; its entry is skipped
    when reached), and dead entries are swept once they outnumber live ones,
    so no step scans the queue per task. The tasks of a held client stay
    queued but are not handed out: ``pop`` moves each entry it meets to that
    client's side line (O(1)), and ``release`` puts the line back in front,
    in order, so a hold costs each task at most one move.
    """

    def __init__(self, tasks: dict[str, Task]) -> None:
        self._tasks = tasks
        self._ids: deque[str] = deque()
        self._count = 0
        self._of: dict[str, int] = {}
        """Queued tasks per client."""
        self._held: dict[str, deque[str]] = {}
        """Held clients, and the entries of theirs ``pop`` set aside."""
        self._held_count = 0
        """Queued tasks of held clients."""

    def __len__(self) -> int:
        """Tasks that may be handed out: queued, and not of a held client."""
        return self._count - self._held_count

    @property
    def total(self) -> int:
        """Tasks in QUEUED state, held ones too (entries of tasks that left are not counted)."""
        return self._count

    @property
    def held(self) -> int:
        """Queued tasks of held clients."""
        return self._held_count

    def is_held(self, client: str) -> bool:
        return client in self._held

    def push(self, task: Task, front: bool = False) -> None:
        task.state, task.worker, task.lease = QUEUED, "", ""
        self._count += 1
        client = task.client
        self._of[client] = self._of.get(client, 0) + 1
        if self._held and client in self._held:
            self._held_count += 1
        if front:
            self._ids.appendleft(task.id)
        else:
            self._ids.append(task.id)

    def pop(self) -> Task | None:
        while self._ids:
            tid = self._ids.popleft()
            task = self._tasks.get(tid)
            if task is None or task.state != QUEUED:
                continue
            if self._held and task.client in self._held:
                self._held[task.client].append(tid)  # back in line when released
                continue
            self._gone(task)
            return task
        return None

    def _gone(self, task: Task) -> None:
        self._count -= 1
        n = self._of[task.client] - 1
        if n:
            self._of[task.client] = n
        else:
            del self._of[task.client]
        if self._held and task.client in self._held:
            self._held_count -= 1

    def left(self, task: Task) -> None:
        """A queued task left otherwise (cancelled, its client gone): the caller
        changes its state; its entry goes when reached or swept."""
        self._gone(task)

    def hold(self, client: str) -> bool:
        """Hand out none of ``client``'s tasks until ``release``; False if held already."""
        if client in self._held:
            return False
        self._held[client] = deque()
        self._held_count += self._of.get(client, 0)
        return True

    def release(self, client: str) -> bool:
        """Hand out ``client``'s tasks again, those set aside first; False if not held."""
        line = self._held.pop(client, None)
        if line is None:
            return False
        self._held_count -= self._of.get(client, 0)
        self._ids.extendleft(reversed(line))
        return True

    def compact(self) -> None:
        """Sweep dead entries once they outnumber live ones (amortised O(1) per task)."""
        if len(self._ids) > 2 * self._count + 1024:
            live = [t for t in self._ids if (x := self._tasks.get(t)) is not None
                    and x.state == QUEUED]
            self._ids = deque(dict.fromkeys(live))
