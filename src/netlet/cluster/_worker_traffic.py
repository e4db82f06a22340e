"""What a worker sends its head, and when: results, started notices, pulls, heartbeats.

Results go out the moment they are worth a message and never wait for the
next task: the running thread sends when it needs work (one pull is kept in
flight while there is room, so the trip is hidden behind local tasks), is
about to idle, or holds ``_REPORT_BATCH`` results; a timer on the node's loop
sends whatever waits longer than ``_HOLD`` (the loop gets the GIL when the
task blocks, or within the switch interval when it computes). A started notice
goes at once for tasks that take a while; for short ones their result says it.
Every message stays within the frame limits, carries the worker's epoch, and
the heartbeat names every task held (see PROTOCOL.md §16).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from netlet.clock import Clock
from netlet.cluster._member_messages import Load
from netlet.cluster._messages import Done, Job, Pulled, Report
from netlet.codec import short
from netlet.errors import NetletError, NoSuchObject, ProtocolError

if TYPE_CHECKING:
    from netlet.cluster._functions import FunctionCache
    from netlet.cluster._stats import WorkerProcessStatistics
    from netlet.node import Node, Proxy

__all__ = ["WorkerTraffic"]

log = logging.getLogger("netlet.cluster")

_HOLD = 0.002
"""Seconds a result or started notice may wait to share a message with others."""
_REPORT_BATCH = 64
"""Results sent together at most, when nothing else sends them sooner."""


_last_usage = [time.process_time(), time.monotonic()]


def _usage() -> tuple[float, int | None]:
    """CPU use since the last heartbeat (percent of one core) and resident memory."""
    cpu, now = time.process_time(), time.monotonic()
    used, span = cpu - _last_usage[0], now - _last_usage[1]
    _last_usage[:] = [cpu, now]
    rss = None
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass  # not Linux: no RSS shown
    return (round(100.0 * used / span, 1) if span > 0 else 0.0), rss


class WorkerTraffic:
    """The sending half of ``Worker`` (which holds the state and runs the tasks)."""

    node: Node
    head: Proxy
    functions: FunctionCache
    stop: threading.Event
    opts: Any
    done: int
    failed: int
    _rtt: float
    _lock: threading.Condition
    _local: collections.deque[Job]
    _running: str | None
    _starting: dict[str, None]
    _outbox: list[Done]
    _held: set[str]
    _seen: int
    _epoch: int
    _pulling: bool
    _armed: bool
    _jobs: set[asyncio.Task[None]]
    clock: Clock
    _task_time: float | None

    def statistics(self) -> WorkerProcessStatistics:
        """A snapshot of this worker's counters (any thread)."""
        # Imported when first asked: the records cost a worker's start-up ~5 ms.
        from netlet.cluster._stats import WorkerProcessStatistics

        with self._lock:
            return WorkerProcessStatistics(
                self.node.id, str(self.opts.name), self._epoch, self.done, self.failed,
                len(self._held), len(self._local), self._running or "", len(self._outbox),
                self._rtt, self._task_time)

    def _want(self) -> int:
        raise NotImplementedError

    async def _join(self) -> None:
        raise NotImplementedError

    def _fatal(self, why: str = "") -> None:
        raise NotImplementedError

    def _arm(self) -> None:
        """Something waits to be sent: flush it within ``_HOLD`` seconds (once per batch).

        The timer runs on the loop, which gets the GIL when the running task
        blocks, or within the interpreter's switch interval when it computes:
        a result never waits for the next task to end.
        """
        if not self._armed:
            self._armed = True
            try:
                loop = self.node.get_loop()
                loop.call_soon_threadsafe(self.clock.call_later, loop, _HOLD, self._tick)
            except RuntimeError:  # the loop is closed: we are stopping
                pass

    def _tick(self) -> None:
        """Send what waited; keep ticking while a task runs (no wake-up from the
        running thread then: the loop's own timer suffices)."""
        self._flush()
        with self._lock:
            started = list(self._starting)
            self._starting.clear()
            epoch = self._epoch
            busy = self._running is not None or bool(self._outbox)
            if not busy:
                self._armed = False
        if started:
            self._report(epoch, [], started)
        if busy and not self.stop.is_set():
            self.clock.call_later(asyncio.get_running_loop(), _HOLD, self._tick)

    def _flush(self) -> None:
        """Report what finished, and ask for work if the local queue runs low.

        Called by the running thread (when it needs work, is about to idle, or
        holds many results), and by the timer (``_arm``) for what waits longer.
        """
        with self._lock:
            results, self._outbox = self._outbox, []
            for r in results:
                self._starting.pop(r[0], None)  # a result says it started
            want = self._want()
            held = len(self._local) + (self._running is not None)
            need = want - held  # one pull in flight whenever there is room: it hides the trip
            epoch = self._epoch
            if need > 0 and not self._pulling and not self.stop.is_set():
                self._pulling = True
                started = list(self._starting)
                self._starting.clear()
            else:
                need, started = 0, []
        chunks = self._batches(results)
        first = chunks.pop(0) if chunks and need > 0 else []
        for chunk in chunks:
            self._report(epoch, chunk, [])
        if need > 0:
            self._pull(epoch, first, started, need)

    def _batches(self, results: list[Done]) -> list[list[Done]]:
        """``results`` in messages within the frame limits (the scheduler's ``batches``).

        No result or one makes at most one message: the scheduler's module, ~3 ms of
        a worker's start-up, is loaded only when several results wait at once.
        """
        if len(results) <= 1:
            return [results] if results else []
        from netlet.cluster._batches import batches

        limits = self.node.config.transport.limits
        return batches(results, lambda r: 64 + len(r[2]), limits.max_frame // 4,
                       max(1, limits.max_buffers // 2), limits.oob_threshold)

    def _pull(self, epoch: int, results: list[Done], started: list[str],
              want: int) -> None:
        """Send results and ask for ``want`` tasks in one round trip (any thread)."""
        try:
            fut = self.head.with_options(timeout=None).exchange.future(
                self.node.id, epoch, Report.of(results, started), want)
        except (NetletError, OSError) as e:
            fut = concurrent.futures.Future()
            fut.set_exception(e)
        else:
            self._sent(results)
        loop = self.node.get_loop()

        def done(f: concurrent.futures.Future[Any]) -> None:
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:
                here = False
            if here:  # the reply is handled on the loop: no wake-up needed
                self._pulled(f, results, started)
            else:
                loop.call_soon_threadsafe(self._pulled, f, results, started)

        fut.add_done_callback(done)

    def _pulled(self, fut: concurrent.futures.Future[Any], results: list[Done],
                started: list[str]) -> None:
        """The hand-out came (on the loop): queue it here, or recover from the error."""
        try:
            pulled = fut.result()
            if type(pulled) is not Pulled:
                raise ProtocolError(f"a pull is answered with a Pulled record, not {short(pulled)}")
            ids, fns, seq = pulled.ids, pulled.functions, pulled.seq
        except BaseException as e:  # every failure means: rejoin, or stop
            self._keep(results, started)
            task = asyncio.get_running_loop().create_task(self._recover(e))
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)
            return
        self.functions.add_payloads(fns)
        with self._lock:  # leased to this node, whatever epoch asked for them
            self._local.extend(pulled.rows())
            self._held.update(ids)
            self._seen = max(self._seen, seq)
            self._pulling = False
            self._lock.notify()
        if not ids:  # the pull timed out at the head: ask again at once
            self._flush()
        # Otherwise the running thread asks for more after its next task, with
        # that task's result riding along: one message, not two.

    async def _recover(self, e: BaseException) -> None:
        """A pull failed: join again (the head forgot us, or the link broke), or stop."""
        try:
            if not isinstance(e, NoSuchObject):
                if self.opts.exit_with_head or self.stop.is_set():
                    self._fatal()
                    return
                log.warning("lost the head (%s); rejoining", e)
                await self.clock.sleep(0.1)
            await self._join()
        finally:
            with self._lock:
                self._pulling = False
            self._flush()

    def _report(self, epoch: int, results: list[Done], started: list[str]) -> None:
        try:
            self.head.report.oneway(self.node.id, epoch, Report.of(results, started))
        except (NetletError, OSError) as e:
            log.warning("could not report to the head (%s); will send again", e)
            self._keep(results, started)
            return
        self._sent(results)

    def _sent(self, results: list[Done]) -> None:
        """These results are on the wire, ahead of any later heartbeat: no longer held."""
        if results:
            with self._lock:
                self._held.difference_update(r[0] for r in results)

    def _keep(self, results: list[Done], started: list[str]) -> None:
        """A report did not go out: send it again on the next connection."""
        with self._lock:
            self._outbox[:0] = results
            self._held.update(r[0] for r in results)
            for t in started:
                self._starting[t] = None

    def give_back(self, tids: list[str]) -> list[str]:
        """The head takes back tasks for an idle worker: those not started yet go."""
        wanted = set(tids)
        with self._lock:
            keep = collections.deque(t for t in self._local if t[0] not in wanted)
            back = [t[0] for t in self._local if t[0] in wanted]
            self._local = keep
            self._held.difference_update(back)
        self._flush()
        return back

    async def _heartbeats(self) -> None:
        while not self.stop.is_set():
            await self.clock.sleep(0.5)
            with self._lock:
                epoch, seen = self._epoch, self._seen
                holding = list(self._held)
            try:
                t0 = time.perf_counter()
                known = await self.head.with_options(timeout=2).heartbeat.aio(
                    self.node.id, Load(self.done, self.failed, *_usage()), epoch, holding, seen)
                # Heartbeats are answered at once: they measure the round trip that
                # credit="auto" covers (a pull may wait at the head for work).
                self._rtt = 0.8 * self._rtt + 0.2 * (time.perf_counter() - t0)
                if not known:
                    await self._join()
            except (NetletError, OSError):
                if self.opts.exit_with_head:
                    self._fatal()
