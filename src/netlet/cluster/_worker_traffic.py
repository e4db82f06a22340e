"""What a worker sends its head, and when: results, started notices, pulls, heartbeats.

Results go out the moment they are worth a message and never wait for the
next task: the running thread sends when it needs work (one pull is kept in
flight while there is room, so the trip is hidden behind local tasks), is
about to idle, or holds ``REPORT_BATCH`` results; a timer on the node's loop
sends whatever waits longer than ``HOLD`` (the loop gets the GIL when the
task blocks, or within the switch interval when it computes). A started notice
goes at once for tasks that take a while; for short ones their result says it.
Every message stays within the frame limits, carries the worker's epoch, and
the heartbeat names every task held (see PROTOCOL.md §16).

What to send and when is decided by the worker's book (``_worker_book``, no
threads or I/O); this module is the shell that carries it out: it holds the
lock, arms the timer on the node's loop and makes the calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from netlet.clock import Clock
from netlet.cluster._member_messages import Load
from netlet.cluster._messages import Done, Job, Pulled, Report
from netlet.cluster._worker_book import HOLD, WorkerBook
from netlet.codec import short
from netlet.errors import NetletError, NoSuchObject, ProtocolError

if TYPE_CHECKING:
    from netlet.cluster._functions import FunctionCache
    from netlet.cluster._stats import WorkerProcessStatistics
    from netlet.node import Node, Proxy

__all__ = ["WorkerTraffic"]

log = logging.getLogger("netlet.cluster")

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
    """The sending half of ``Worker`` (which runs the tasks); both call the book
    under ``_lock``."""

    node: Node
    head: Proxy
    functions: FunctionCache
    stop: threading.Event
    opts: Any
    done: int
    failed: int
    book: WorkerBook[Job, Done]
    _lock: threading.Condition
    _jobs: set[asyncio.Task[None]]
    clock: Clock

    def statistics(self) -> WorkerProcessStatistics:
        """A snapshot of this worker's counters (any thread)."""
        # Imported when first asked: the records cost a worker's start-up ~5 ms.
        from netlet.cluster._stats import WorkerProcessStatistics

        with self._lock:
            b = self.book
            return WorkerProcessStatistics(
                self.node.id, str(self.opts.name), b.epoch, self.done, self.failed,
                len(b.held), len(b.local), b.running or "", len(b.outbox), b.rtt, b.task_time)

    async def _join(self) -> None:
        raise NotImplementedError

    def _fatal(self, why: str = "") -> None:
        raise NotImplementedError

    def _arm(self) -> None:
        """The book armed its timer (something waits to be sent): flush within ``HOLD``.

        The timer runs on the loop, which gets the GIL when the running task
        blocks, or within the interpreter's switch interval when it computes:
        a result never waits for the next task to end.
        """
        try:
            loop = self.node.get_loop()
            loop.call_soon_threadsafe(self.clock.call_later, loop, HOLD, self._tick)
        except RuntimeError:  # the loop is closed: we are stopping
            pass

    def _tick(self) -> None:
        """Send what waited; keep ticking while a task runs (no wake-up from the
        running thread then: the loop's own timer suffices)."""
        self._flush()
        with self._lock:
            started, busy = self.book.tick()
            epoch = self.book.epoch
        if started:
            self._report(epoch, [], started)
        if busy and not self.stop.is_set():
            self.clock.call_later(asyncio.get_running_loop(), HOLD, self._tick)

    def _flush(self) -> None:
        """Report what finished, and ask for work if the local queue runs low.

        Called by the running thread (when it needs work, is about to idle, or
        holds many results), and by the timer (``_arm``) for what waits longer.
        """
        with self._lock:
            first, chunks, started, need = self.book.flush()
            epoch = self.book.epoch
        for chunk in chunks:
            self._report(epoch, chunk, [])
        if need > 0:
            self._pull(epoch, first, started, need)

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
            fns, seq = pulled.functions, pulled.seq
        except BaseException as e:  # every failure means: rejoin, or stop
            self._keep(results, started)
            task = asyncio.get_running_loop().create_task(self._recover(e))
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)
            return
        self.functions.add_payloads(fns)
        with self._lock:  # leased to this node, whatever epoch asked for them
            again = self.book.pulled(pulled.ids, pulled.rows(), seq)
            self._lock.notify()
        if again:  # the pull timed out at the head: ask again at once
            self._flush()

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
                self.book.pull_over()
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
                self.book.sent(results)

    def _keep(self, results: list[Done], started: list[str]) -> None:
        """A report did not go out: send it again on the next connection."""
        with self._lock:
            self.book.kept(results, started)

    def give_back(self, tids: list[str]) -> list[str]:
        """The head takes back tasks for an idle worker: those not started yet go."""
        with self._lock:
            back = self.book.give_back(tids)
        self._flush()
        return back

    async def _heartbeats(self) -> None:
        while not self.stop.is_set():
            await self.clock.sleep(0.5)
            with self._lock:
                epoch, holding, seen = self.book.heartbeat()
            try:
                t0 = time.perf_counter()
                known = await self.head.with_options(timeout=2).heartbeat.aio(
                    self.node.id, Load(self.done, self.failed, *_usage()), epoch, holding, seen)
                # Heartbeats are answered at once: they measure the round trip that
                # credit="auto" covers (a pull may wait at the head for work).
                with self._lock:
                    self.book.measured_rtt(time.perf_counter() - t0)
                if not known:
                    await self._join()
            except (NetletError, OSError):
                if self.opts.exit_with_head:
                    self._fatal()
