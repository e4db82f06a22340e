"""A worker's scheduling state and decisions: events in, what to send out.

No locks, threads, event loop, sockets or clock reads (issue 13): the shell
(``Worker`` and ``WorkerTraffic``) holds the lock, runs the tasks and the
loop, passes in the time where it matters, and carries out what the book
says; the simulation's worker (``netlet.testing``) drives the same book on
its loop, so the seeded runs check this code, not a copy of it.

The book never looks inside a task or a result past its first item, so the
wire's shapes can change under it: a task and a result are tuples (the rows
of the columnar records, PROTOCOL.md §16.5) whose first item is the task's
id; the rest (function, body, lease; ok, error) is the shell's.

It keeps the rules of PROTOCOL.md §16: ``held`` names every task received
whose result was not written yet (a result leaves it only in ``sent``, and
comes back with ``kept`` when the message did not go out); ``give_back``
drops only tasks not started; ``seen`` only grows.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Collection, Iterable
from operator import itemgetter
from typing import Any, Generic, TypeVar

from netlet.cluster._batches import batches

__all__ = ["ARM", "HOLD", "REPORT_BATCH", "SEND", "WAIT", "WorkerBook", "want"]

HOLD = 0.002
"""Seconds a result or started notice may wait to share a message with others."""
REPORT_BATCH = 64
"""Results sent together at most, when nothing else sends them sooner."""

WAIT = 0
"""What the shell does next: nothing (a send or a timer is already on its way)."""
ARM = 1
"""What the shell does next: arm the ``HOLD`` timer, then ``tick`` when it fires."""
SEND = 2
"""What the shell does next: ``flush`` now (after ``take_next``: ``take_started``)."""

T = TypeVar("T", bound=tuple[Any, ...])
"""A task: a tuple whose first item is its id."""
R = TypeVar("R", bound=tuple[Any, ...])
"""A result: a tuple whose first item is its task's id."""

_first = itemgetter(0)


def want(credit: int | str, rtt: float, task_time: float | None) -> int:
    """How many tasks to hold: the one running plus the credit.

    With ``credit="auto"``, prefetch what covers a round trip to the head, and
    nothing for tasks far longer than one (or not measured yet): that costs
    them under 5 % and lets a worker that joins a moment later take its share
    instead of finding it held here.
    """
    if credit == "auto":
        ratio = 0.0 if task_time is None else rtt / max(task_time, 1e-6)
        credit = 0 if ratio < 0.05 else min(64, math.ceil(ratio))
    return int(credit) + 1


class WorkerBook(Generic[T, R]):
    """What a worker holds, runs and owes its head, and when it says so.

    A task handed in is in exactly one place: queued here (``local``),
    running, its result waiting (``outbox``), its result sent, or given back.
    """

    __slots__ = ("_fixed", "_limits", "_result_size", "armed",
                 "credit", "epoch", "gave_back", "held", "held_since", "local", "outbox",
                 "pulling", "rtt", "running", "seen", "starting", "step", "stopping", "task_time")

    def __init__(self, result_size: Callable[[R], int], limits: tuple[int, int, int],
                 credit: int | str = 1) -> None:
        """``limits``: a message's bytes of bodies at most, its big bodies at most, and
        the size that makes a body big (PROTOCOL.md §16.2: each travels out of band)."""
        self._result_size = result_size
        self._limits = limits
        self.credit = credit
        self._fixed = credit + 1 if isinstance(credit, int) else 0
        self.rtt = 0.001
        """The round trip to the head, smoothed (``measured_rtt``)."""
        self.task_time: float | None = None
        """A task's run time, smoothed; None until one ran: assume long."""
        self.local: collections.deque[T] = collections.deque()
        """Tasks received and not started, in hand-out order."""
        self.running: str | None = None
        self.starting: dict[str, None] = {}
        """Tasks started whose started notice was not sent (in order)."""
        self.outbox: list[R] = []
        """Results not sent yet."""
        self.held: set[str] = set()
        """Every task received whose result was not written (a heartbeat's ``holding``)."""
        self.seen = 0
        """The largest hand-out ``seq`` received."""
        self.epoch = 0
        self.pulling = False
        """A pull (or exchange) is in flight: never two."""
        self.armed = False
        """The ``HOLD`` timer is armed (or ticking while a task runs)."""
        self.held_since = 0.0
        """When the oldest result in ``outbox`` finished."""
        self.gave_back = False
        """Tasks were given back since the last task ended: no prefetch until one does."""
        self.stopping = False
        """The worker stops: no more pulls."""
        self.step = WAIT
        """What the shell does after ``take_next`` (``SEND``, ``ARM`` or ``WAIT``)."""

    def want(self) -> int:
        """How many tasks to hold (the module's ``want`` with this worker's figures)."""
        return self._fixed or want(self.credit, self.rtt, self.task_time)

    # -- events from the head -------------------------------------------------------

    def rejoined(self, epoch: int) -> None:
        """The head gave this worker a new epoch (larger than any before, §16.1)."""
        self.epoch = epoch

    def pulled(self, ids: Collection[str], tasks: Iterable[T], seq: int) -> bool:
        """A hand-out came: queue its ``tasks``, whose ids are ``ids`` (in order; a
        columnar hand-out has them as a list already). True when it brought none
        (the pull waited at the head for nothing): ask again at once. Otherwise
        the next result asks, riding along: one message, not two."""
        held = self.held
        n = len(held)
        held.update(ids)
        if len(held) - n != len(ids):  # some were held already
            self._handed_again(ids)
        self.local.extend(tasks)
        if seq > self.seen:
            self.seen = seq
        self.pulling = False
        return not ids

    def _handed_again(self, ids: Collection[str]) -> None:
        """Tasks this worker holds came again: the head took it for dead (its link
        broke, or it was silent too long), requeued them, and handed them back after
        it joined again, under new leases. Older copies queued here, and their
        results waiting, carry a lease the head no longer takes: they go (a run of
        an older copy goes on; its result is refused). Rare: a pull only counts."""
        again = set(ids)
        self.local = collections.deque(t for t in self.local if t[0] not in again)
        self.outbox = [r for r in self.outbox if r[0] not in again]
        for tid in again:  # the new copies have not started
            self.starting.pop(tid, None)

    def stopped(self) -> None:
        """The worker stops: results still go, but it asks for no more work."""
        self.stopping = True

    def pull_over(self) -> None:
        """A failed pull was dealt with (the worker joined again): pulls may go."""
        self.pulling = False

    def give_back(self, tids: Iterable[str]) -> list[str]:
        """The head takes back tasks (for an idle worker, or a cancel): those not
        started go, and are no longer held; a started one stays. The shell
        flushes after: a worker left with nothing to run pulls again at once,
        but one still running a task does not pull until it ends. The head
        took those tasks for a worker with a pull waiting; pulling them straight
        back would make the head take them back again for that one, and so on
        at the speed of the round trip while both run a task (the simulation
        found it, seed 1)."""
        wanted = set(tids)
        local = self.local
        back = [t[0] for t in local if t[0] in wanted]
        if back:
            self.local = collections.deque(t for t in local if t[0] not in wanted)
            self.held.difference_update(back)
            self.gave_back = True
        return back

    def heartbeat(self) -> tuple[int, list[str], int]:
        """What a heartbeat says: the epoch, every task held, and ``seen``.

        Every task queued or running is named, even when ``sent`` took its id out
        of ``held`` for an older copy's result (a task handed again, see
        ``_handed_again``); looked at twice a second, not per task.
        """
        holding = self.held.union(map(_first, self.local))
        if self.running is not None:
            holding.add(self.running)
        return self.epoch, list(holding), self.seen

    def measured_rtt(self, seconds: float) -> None:
        """A heartbeat's round trip (answered at once, unlike a pull that may wait)."""
        self.rtt = 0.8 * self.rtt + 0.2 * seconds

    # -- events from the running thread ---------------------------------------------

    def take_next(self) -> T | None:
        """The next task to run, now running (None: none here); ``step`` then says
        what the shell does (one call per task, not two).

        Its started notice waits in ``starting``. For tasks that take a while
        it goes now (``SEND``: ``take_started``), so their futures turn RUNNING
        at once; else it waits up to ``HOLD`` for the result, which says it too
        (``ARM`` the timer, or ``WAIT``: it is armed).
        """
        local = self.local
        if not local:
            return None
        task = local.popleft()
        tid = task[0]
        self.running = tid
        self.starting[tid] = None
        task_time = self.task_time
        if task_time is None or task_time > HOLD:
            self.step = SEND
        elif self.armed:
            self.step = WAIT
        else:
            self.armed = True
            self.step = ARM
        return task

    def take_started(self) -> list[str]:
        """The started notices to send now (``kept`` puts them back if they do not go)."""
        started = list(self.starting)
        self.starting.clear()
        return started

    def finished(self, result: R, now: float, took: float | None) -> int:
        """The running task ended with ``result`` at ``now`` after ``took`` seconds
        (None: not measured). ``SEND`` when the worker needs work, is about to
        idle, holds many results or held one for ``HOLD``; else the timer sends it."""
        self.running = None
        if self.gave_back:
            self.gave_back = False
        if took is not None:
            t = self.task_time
            self.task_time = took if t is None else 0.8 * t + 0.2 * took
        outbox = self.outbox
        if not outbox:
            self.held_since = now
        outbox.append(result)
        local = self.local
        if (not local or len(outbox) >= REPORT_BATCH or now - self.held_since >= HOLD
                or (not self.pulling and len(local) + 1
                    < (self._fixed or want(self.credit, self.rtt, self.task_time)))):
            return SEND
        return self._arm()

    def unrunnable(self, tid: str) -> int:
        """The running task went back to the head without a result (its function
        cannot be imported here, or its code could not be fetched): no longer held.
        ``SEND`` when the worker would idle (a pull is due)."""
        self.running = None
        self.gave_back = False
        self.held.discard(tid)
        self.starting.pop(tid, None)
        return SEND if not self.local and not self.pulling else WAIT

    def _arm(self) -> int:
        if self.armed:
            return WAIT
        self.armed = True
        return ARM

    # -- what to send ---------------------------------------------------------------

    def flush(self) -> tuple[list[R], list[list[R]], list[str], int]:
        """What to send now: ``(first, reports, started, pull)``.

        The results waiting, cut into messages within the frame limits. When
        there is room for ``pull`` > 0 more tasks and no pull is in flight, the
        shell sends ``first`` (the first cut, maybe empty) and ``started`` with
        a pull of that many (one exchange: a pull kept in flight hides the round
        trip behind local tasks), else ``first`` and ``started`` are empty. Each
        of ``reports`` goes in a report. The shell then says ``sent`` or ``kept``
        for each message.
        """
        results, self.outbox = self.outbox, []
        starting = self.starting
        if starting and results:
            for r in results:
                starting.pop(r[0], None)  # a result says it started
        need = ((self._fixed or want(self.credit, self.rtt, self.task_time))
                - len(self.local) - (self.running is not None))
        if self.gave_back:  # see give_back
            if self.running is not None or self.local:
                need = 0
            else:
                self.gave_back = False
        if need > 0 and not self.pulling and not self.stopping:
            self.pulling = True
            started = list(starting)
            starting.clear()
        else:
            need, started = 0, []
        if len(results) <= 1:
            chunks = [results] if results else []
        else:
            chunks = batches(results, self._result_size, *self._limits)
        first = chunks.pop(0) if chunks and need > 0 else []
        return first, chunks, started, need

    def tick(self) -> tuple[list[str], bool]:
        """The ``HOLD`` timer fired (after a ``flush``): the started notices to send,
        and whether to tick again (a task runs or results wait: the running thread
        will not wake the timer then). Not ticking again disarms it."""
        started = self.take_started()
        busy = self.running is not None or bool(self.outbox)
        if not busy:
            self.armed = False
        return started, busy

    def sent(self, results: list[R]) -> None:
        """These results were written to the connection, ahead of any later
        heartbeat: no longer held."""
        if len(results) == 1:
            self.held.discard(results[0][0])
        elif results:
            self.held.difference_update(map(_first, results))

    def kept(self, results: list[R], started: list[str]) -> None:
        """A message did not go out (or its exchange failed): send it again, first."""
        self.outbox[:0] = results
        self.held.update(map(_first, results))
        for t in started:
            self.starting[t] = None
