"""A simulated worker and client: each speaks the head protocol (PROTOCOL.md 16) as netlet's
own do, on the simulation's loop instead of threads.

The worker is a shell around netlet's own worker book (``netlet.cluster._worker_book``,
the scheduling state and decisions ``Worker`` runs on): what it holds, when it pulls and
how many, when results and started notices go and in which batches, what it gives back
and what its heartbeats say. So the seeded runs check the worker's real scheduling. The
shell, like ``Worker``'s, sends its epoch with every request, joins again when told
``NoSuchObject``, when its link breaks or when a heartbeat is not known, and runs the
tasks it holds meanwhile. A task squares its argument after a random virtual time; its
value also carries the lease it ran under, so the client can tell which hand-out's
result the head accepted.

The client submits tasks, and when its link to the head breaks it joins again,
asks the head which of its pending tasks it does not know (``resume``), and
submits those again, as ``Cluster`` does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from typing import Any

from netlet.apps.primes._tasks import TASK as PRIME_TASK
from netlet.apps.primes._tasks import search_chunk
from netlet.clock import Backoff
from netlet.cluster._member_messages import Joined, JoinInfo, MemberEvent, OutputLines
from netlet.cluster._messages import Delivery, Done, Finished, Job, Report, Spec, Tasks
from netlet.cluster._worker_book import ARM, HOLD, SEND, WorkerBook
from netlet.codec import Codec, Limits
from netlet.errors import NetletError, NoSuchObject, WorkerLost
from netlet.node import Proxy, expose
from netlet.testing._process import Process

__all__ = ["Ledger", "SimClient", "SimWorker"]

HEAD = "netlet.head"
_ERRORS = (NetletError, OSError, TimeoutError)


class Ledger:
    """What the simulation knows for its checks: every lease a worker received, in order.

    ``received[tid]`` lists ``(incarnation, seq, lease)``: the head's incarnation
    (it restarts from its store), and the hand-out's number within it.
    """

    def __init__(self) -> None:
        self.received: dict[str, list[tuple[int, int, str]]] = {}
        self.incarnation = 0
        self.ran: dict[str, list[tuple[float, SimWorker, bool]]] = {}
        """Each run of a task: when it started, on which worker, and whether the head
        then counted that worker alive under the epoch of the hand-out that brought it
        (a worker the head presumed dead may run it, PROTOCOL.md 16.4)."""
        self.head_epoch: Callable[[str], int | None] = lambda node: None
        """The epoch the running head counts a worker's node alive under (the world
        sets it; None: no head, or not a live member of it)."""

    def latest(self, tid: str) -> str | None:
        leases = self.received.get(tid)
        return max(leases)[2] if leases else None


@expose(concurrent=True)
class _Control:
    """What the head may ask of a worker."""

    def __init__(self, worker: SimWorker) -> None:
        self._worker = worker

    async def give_back(self, epoch: int, tids: list[str]) -> list[str]:
        return self._worker.give_back(tids)


class SimWorker(Process):
    """A worker of the simulated cluster (see the module docstring)."""

    head: Proxy
    me: str
    control: _Control

    def __init__(self, name: str, head: str, ledger: Ledger, rng: random.Random,
                 credit: int | str, announce: bool, task_time: float = 0.05,
                 **kw: Any) -> None:
        super().__init__(name, **kw)
        self.announce = announce
        """Send ``started`` notices (a SHOULD; a result says so anyway): a worker that
        does not drops those its book gives it."""
        self.head_address = head
        self.ledger = ledger
        self.rng = rng
        self.credit = credit
        self.task_time = task_time
        """A task's mean run time (virtual seconds, exponentially distributed): under
        the book's ``HOLD``, results and started notices wait for its timer."""
        self.codec = Codec()
        limits = Limits()
        self.book: WorkerBook[Job, Done] = WorkerBook(
            lambda r: 64 + len(r[2]),
            (limits.max_frame // 4, max(1, limits.max_buffers // 2), limits.oob_threshold),
            credit)
        self.handed_in: dict[str, int] = {}
        """tid -> the epoch whose pull brought it."""
        self.joined = asyncio.Event()
        self._arrived = asyncio.Event()
        self._joining = asyncio.Lock()

    @property
    def held(self) -> set[str]:
        """The tasks this worker's heartbeats name (its book's)."""
        return self.book.held

    async def start(self) -> None:
        node = await self.start_node()
        self.me = node.id
        self.head = node.proxy(self.head_address, HEAD, timeout=10)
        self.control = _Control(self)
        self.spawn(self._work())
        self.spawn(self._heartbeats())

    async def _join(self) -> None:
        """Join (again), with backoff, until the head answers; a new epoch each time."""
        async with self._joining:
            self.joined.clear()
            backoff = Backoff(0.05, 2.0)
            while True:
                try:
                    reply = await self.head.join.aio(
                        self.me, "worker", JoinInfo(self.name, "sim", 1, "", 1), self.control)
                except _ERRORS:
                    await self.clock.sleep(backoff.next())
                    continue
                if type(reply) is not Joined or reply.epoch is None:
                    self.rec.violation(f"{self.name} joined with the answer {reply!r}")
                    return
                epoch = reply.epoch
                if epoch <= self.book.epoch:  # PROTOCOL.md 16.1: larger than any before
                    self.rec.violation(f"{self.name} joined with epoch {epoch}, after "
                                       f"{self.book.epoch}: an epoch went back")
                self.book.rejoined(epoch)
                self.rec.note(f"{self.name} joined epoch {epoch}")
                self.joined.set()
                return

    async def _work(self) -> None:
        """Run the tasks the book hands over, one at a time, and do what it says after
        each start and each end (as ``Worker.run``)."""
        await self._join()
        book = self.book
        self._flush()  # the first pull
        while True:
            task = book.take_next()
            if task is None:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            tid, fn, body, lease = task
            self.ledger.ran.setdefault(tid, []).append(
                (self.clock.monotonic(), self,
                 self.ledger.head_epoch(self.me) == self.handed_in.get(tid, -1)))
            step = book.step
            if step == SEND:
                self._report(book.epoch, [], book.take_started())
            elif step == ARM:
                self.spawn(self._timer())
            args, _ = self.codec.decode_value(body)
            took = self.rng.expovariate(1 / self.task_time)
            await self.clock.sleep(took)
            step = book.finished(self._run(tid, fn, args, lease), self.clock.monotonic(), took)
            if step == SEND:
                self._flush()
            elif step == ARM:
                self.spawn(self._timer())

    def _run(self, tid: str, fn: str, args: list[Any], lease: str) -> Done:
        """A prime search's chunk runs the search's own code; any other task squares its
        argument, or raises ``ValueError`` for a multiple of 13 (a task's own error)."""
        if fn == PRIME_TASK:
            answer = search_chunk(*args)["count"]
        elif args[0] % 13 == 0:
            error = ValueError(f"{args[0]} under {lease}")
            return (tid, False, self.codec.encode_value(error), lease, "ValueError", None)
        else:
            answer = args[0] * args[0]
        return (tid, True, self.codec.encode_value([answer, lease]), lease, None, None)

    async def _timer(self) -> None:
        """The book's ``HOLD`` timer: flush, send the started notices that waited, and
        tick again while a task runs or results wait (``WorkerTraffic._tick``)."""
        while True:
            await self.clock.sleep(HOLD)
            self._flush()
            started, busy = self.book.tick()
            if started:
                self._report(self.book.epoch, [], started)
            if not busy:
                return

    def _flush(self) -> None:
        first, chunks, started, need = self.book.flush()
        epoch = self.book.epoch
        for chunk in chunks:
            self._report(epoch, chunk, [])
        if need > 0:
            self.spawn(self._exchange(epoch, first, started, need))

    def _report(self, epoch: int, results: list[Done], started: list[str]) -> None:
        if not self.announce:
            started = []
        if not results and not started:
            return
        try:
            self.head.report.oneway(self.me, epoch, Report.of(results, started))
        except _ERRORS:
            self.book.kept(results, started)  # send again on the next connection
            return
        self.book.sent(results)  # written: no longer held

    async def _exchange(self, epoch: int, results: list[Done], started: list[str],
                        want: int) -> None:
        """Send results and ask for ``want`` tasks in one round trip; on a failure, join
        again and pull anew (``WorkerTraffic._pull``, ``_recover``)."""
        if not self.announce:
            started = []
        try:
            call = self.head.with_options(timeout=None).exchange.aio(
                self.me, epoch, Report.of(results, started), want)
            self.book.sent(results)
            pulled = await call
            batch, seq = list(pulled.rows()), int(pulled.seq)
        except _ERRORS as e:
            self.book.kept(results, started)
            if not isinstance(e, NoSuchObject):
                await self.clock.sleep(0.1)
            await self._join()
            self.book.pull_over()
            self._flush()
            return
        for tid, _, _, lease in batch:
            self.ledger.received.setdefault(tid, []).append(
                (self.ledger.incarnation, seq, lease))
        if batch:
            self.rec.note(f"{self.name} got hand-out {seq}: {[t[0] for t in batch]}")
        self.handed_in.update((t[0], epoch) for t in batch)
        again = self.book.pulled([t[0] for t in batch], batch, seq)
        self._arrived.set()
        if again:  # the pull waited at the head for nothing: ask again at once
            self._flush()

    def give_back(self, tids: list[str]) -> list[str]:
        back = self.book.give_back(tids)
        self._flush()
        return back

    async def _heartbeats(self) -> None:
        while True:
            await self.clock.sleep(0.5)
            if not self.joined.is_set():
                continue
            epoch, holding, seen = self.book.heartbeat()
            here = {t[0] for t in self.book.local}
            if self.book.running is not None:
                here.add(self.book.running)
            if not here <= set(holding):  # PROTOCOL.md 16.1: every task it holds
                self.rec.violation(f"{self.name}'s heartbeat leaves out "
                                   f"{sorted(here - set(holding))}, which it holds")
            t0 = self.clock.monotonic()
            try:
                known = await self.head.with_options(timeout=2).heartbeat.aio(
                    self.me, None, epoch, sorted(holding), seen)
            except _ERRORS:
                continue
            self.book.measured_rtt(self.clock.monotonic() - t0)
            if not known:
                self.spawn(self._join())


@expose(concurrent=True)
class _Sink:
    """Where the head sends a client's results."""

    def __init__(self, client: SimClient) -> None:
        self._client = client

    async def results(self, delivery: Delivery) -> None:
        self._client.on_results(delivery.rows())

    async def started(self, tids: list[str]) -> None:
        pass

    async def output(self, lines: OutputLines) -> None:
        pass

    async def event(self, event: MemberEvent) -> None:
        pass


class SimClient(Process):
    """A client of the simulated cluster (see the module docstring)."""

    head: Proxy
    me: str
    sink: _Sink

    def __init__(self, name: str, head: str, ledger: Ledger, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.head_address = head
        self.ledger = ledger
        self.codec = Codec()
        self.specs: dict[str, Spec] = {}
        self.expected: dict[str, int | None] = {}
        """tid -> its value; None for a prime search's chunk (checked as a whole)."""
        self.chunks: dict[str, tuple[int, int]] = {}
        self.prime_counts: dict[tuple[int, int], int] = {}
        self.retries = 3
        self.outcome: dict[str, tuple[str, str | None]] = {}
        """tid -> ("ok" or the error's type name, the lease of the accepted result)."""
        self.duplicates = 0
        self.cancelled: dict[str, float] = {}
        """tid -> when the head said it cancelled it."""
        self.unsure: set[str] = set()
        """Tasks named in a cancel whose answer never came."""
        self.head_node = ""
        self._next = 0
        self._reconnecting = False

    async def start(self) -> None:
        node = await self.start_node()
        self.me = node.id
        self.head = node.proxy(self.head_address, HEAD, timeout=10)
        self.sink = _Sink(self)
        node.on_peer_change(self._peer_changed)
        await self._connect()

    async def _connect(self) -> None:
        """Join (again) and resubmit what the head does not know, until it works."""
        backoff = Backoff(0.05, 2.0)
        while True:
            try:
                reply = await self.head.join.aio(
                    self.me, "client", JoinInfo("", "sim", 1, "", 0), None)
                if type(reply) is not Joined:
                    self.rec.violation(f"{self.name} joined with the answer {reply!r}")
                self.head_node = reply.head
                pending = [t for t in self.specs if t not in self.outcome]  # unsure too
                unknown = set(await self.head.resume.aio(self.me, self.sink, pending))
                # A result may have come while we asked (the head then forgot it).
                again = [self.specs[t] for t in pending if t in unknown
                         and t not in self.outcome]
                if again:
                    await self.head.submit.aio(self.me, self.sink, Tasks.of(again), {})
                    self.rec.note(f"{self.name} resubmitted {len(again)}")
                return
            except _ERRORS:
                await self.clock.sleep(backoff.next())

    def _peer_changed(self, node: str, connected: bool) -> None:
        if not connected and node == self.head_node and self.alive:
            self.spawn(self._reconnect())

    async def _reconnect(self) -> None:
        if self._reconnecting:
            return
        self._reconnecting = True
        try:
            await self._connect()
        finally:
            self._reconnecting = False

    async def submit(self, count: int, retries: int) -> None:
        """Submit ``count`` new tasks; if the head does not take them, reconnecting does."""
        batch: list[Spec] = []
        for _ in range(count):
            self._next += 1
            tid = f"{self.name}:{self._next}"
            x = self._next
            spec = (tid, "sim:square", self.codec.encode_value([[x], None]), retries)
            self.specs[tid] = spec
            self.expected[tid] = x * x
            batch.append(spec)
        self.rec.note(f"{self.name} submits {count}")
        try:
            await self.head.submit.aio(self.me, self.sink, Tasks.of(batch), {})
        except _ERRORS:
            await self._reconnect()

    async def search_primes(self, ranges: list[tuple[int, int]]) -> None:
        """Count the primes in each range, one task each (``search_chunk``, what ``netlet
        primes`` submits); a chunk that ends ``WorkerLost`` is submitted again, as the
        search's coordinator does."""
        batch: list[Spec] = []
        for start, end in ranges:
            self._next += 1
            tid = f"{self.name}:p{self._next}"
            body = self.codec.encode_value([["naive", start, end], None])
            spec = (tid, PRIME_TASK, body, self.retries)
            self.specs[tid] = spec
            self.expected[tid] = None
            self.chunks[tid] = (start, end)
            batch.append(spec)
        self.rec.note(f"{self.name} searches {len(ranges)} chunk(s) for primes")
        try:
            await self.head.submit.aio(self.me, self.sink, Tasks.of(batch), {})
        except _ERRORS:
            await self._reconnect()

    def on_results(self, batch: Iterable[Finished]) -> None:
        for tid, ok, body, error in batch:
            self._result(tid, ok, body, error)

    def _result(self, tid: str, ok: bool, body: bytes | None, error: Any) -> None:
        if tid not in self.expected:
            self.rec.violation(f"{self.name} got a result for {tid!r}, which it never submitted")
            return
        lease: str | None = None
        if error is not None:
            kind = type(error).__name__
            if not isinstance(error, WorkerLost):
                self.rec.violation(f"{tid} ended with an undeclared error: {error!r}")
            elif tid in self.chunks and tid not in self.outcome:
                self.spawn(self.search_primes([self.chunks[tid]]))
        elif not ok:  # the task raised: its exception travels in the body
            exc = self.codec.decode_value(body or b"")
            kind = type(exc).__name__
            x = int(tid.rpartition(":")[2]) if tid not in self.chunks else -1
            said, _, lease = str(exc).partition(" under ")
            if not isinstance(exc, ValueError) or said != str(x) or x % 13:
                self.rec.violation(f"{tid} raised {exc!r}, which its task never does")
            self._check_lease(tid, lease)
        else:
            value, lease = self.codec.decode_value(body or b"")
            kind = "ok"
            chunk = self.chunks.get(tid)
            if chunk is not None:
                if tid not in self.outcome and chunk in self.prime_counts:
                    self.rec.violation(f"the primes in {chunk} were counted twice")
                self.prime_counts.setdefault(chunk, value)
            elif value != self.expected[tid]:
                self.rec.violation(f"{tid}: wrong value {value!r}, expected "
                                   f"{self.expected[tid]!r}")
            self._check_lease(tid, lease)
        first = self.outcome.get(tid)
        if first is None:
            self.outcome[tid] = (kind, lease)
            self.rec.note(f"{tid} {kind}")
        elif first != (kind, lease):
            self.rec.violation(f"{tid} ended twice: {first} then {(kind, lease)}")
        else:
            self.duplicates += 1

    def _check_lease(self, tid: str, lease: str | None) -> None:
        latest = self.ledger.latest(tid)
        if lease != latest:
            self.rec.violation(f"{tid}: the head accepted the result of lease {lease}, "
                               f"but the task's latest hand-out was lease {latest}")

    async def cancel_some(self, count: int) -> None:
        """Cancel our ``count`` latest unfinished tasks. PROTOCOL.md 16.4: an id the head
        returns never ran, and never ends otherwise; the others end as usual."""
        tids = [t for t in self.pending if t not in self.chunks][-count:]  # not the search's
        if not tids:
            return
        try:
            cancelled = await self.head.cancel.aio(tids)
        except _ERRORS:  # it may or may not have happened: they may end, or not
            self.unsure.update(tids)
            return
        self.rec.note(f"{self.name} cancelled {sorted(cancelled)} of {len(tids)}")
        for tid in cancelled:
            if tid in self.outcome:  # cancelling twice is no news; after an ending it is
                if self.outcome[tid][0] != "cancelled":
                    self.rec.violation(f"{tid} was cancelled after it ended "
                                       f"{self.outcome[tid]}")
                continue
            self.outcome[tid] = ("cancelled", None)
            self.cancelled[tid] = self.clock.monotonic()

    @property
    def pending(self) -> list[str]:
        """Tasks not ended (those a failed cancel may have dropped left out)."""
        return [t for t in self.specs if t not in self.outcome and t not in self.unsure]
