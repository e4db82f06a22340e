"""W7: head scale, by simulation: the real sans-I/O scheduler, no sockets.

The head's ``Scheduler`` is plain objects fed events, so a variant drives it
directly with simulated workers and measures what the head itself spends:

- ``us_task``: CPU µs per task for its whole life at the head (submit in
  batches of 10 tasks per worker, hand-out, started, result, delivered),
  workers pulling one task at a time (no prefetch: the most events per task);
- ``us_task_credit``: the same with workers that run one task at a time and
  hold up to 3 more (a worker's credit), so the head takes tasks back from
  busy workers for idle ones as it does in a real run's tail;
- ``us_task_lack``: ``us_task`` with half the workers unable to import the
  tasks' function (each such worker looks at the queue once, then waits aside
  until a task it can run comes; they were walked over on every event: about
  1 ms per task at 1,000 workers before that was fixed);
- ``B_10k``, ``B_100k``, ``B_1M``: bytes per queued task (``tracemalloc``) as
  the queue grows to 10k, 100k and 1M tasks (id, function name and a 32-byte
  body each, as a client sends them);
- ``ms_lost100``: CPU ms for the scheduler to requeue what 100 of the
  workers held (4 tasks each, 2 started) when they all die at once;
- ``ms_detect100``: the same through the real head: the CPU ms of its sweep
  pass that finds the 100 silent past ``dead_after`` (its other way to know,
  a closed link, skips the search) and carries out their deaths (requeue,
  log, dashboard records); ``ms_sweep``: one such pass with every worker
  alive, what watching them costs per heartbeat period (0.5 s);
- ``us_heartbeat``: CPU µs per heartbeat of an idle worker;
  ``us_heartbeat_lacks`` the same once one worker said it cannot import some
  function (each event while workers waited looked at every waiting worker:
  32 µs per heartbeat at 1,000 workers before that was fixed).

Rows are the same scheduler with 1,000 and with 10 workers: a per-task cost
that grew with the number of workers would show as a gap between them. Dask
documents 200 µs to 1 ms of scheduler overhead per task; Ray's single-node
envelope is 1M queued tasks.
"""

from __future__ import annotations

import gc
import itertools
import time
import tracemalloc
from typing import Any

from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params

__all__ = ["WORKLOAD"]

BATCH = 1000
"""Tasks per submit while filling the queue, as a client's batching sends them."""
PER_WORKER = 10
"""Tasks per submit in the cycle, per worker: each worker runs as many tasks (and
pulls in vain as often) per submit with 10 workers as with 1,000."""
WANT = 1
"""Tasks a worker asks for at a time: the one it runs (no prefetch), so each hand-out
carries one task whatever the number of workers: the worst case per task."""
BODY = bytes(32)


def _scheduler() -> Any:
    from netlet.cluster._scheduler import Scheduler

    counter = itertools.count()
    return Scheduler(token=lambda: f"{next(counter):024x}")


def _specs(prefix: str, start: int, n: int) -> list[tuple[str, str, bytes, int]]:
    return [(f"{prefix}{i}", "bench.w7:noop", BODY, 3) for i in range(start, start + n)]


def _cycle(workers: int, tasks: int, lacking: int = 0) -> float:
    """CPU µs per task through submit, hand-out, started, result and delivered.

    A simulated worker starts and finishes all it was handed at once, then
    pulls again; asked to give tasks back (for an idle worker), it returns
    those it has not started yet.
    """
    from netlet.cluster._scheduler import Deliver, Handout, Reclaim, Task

    s = _scheduler()
    epochs: dict[str, int] = {}
    for i in range(workers):
        epochs[f"worker-{i:04d}"], _ = s.join(f"worker-{i:04d}", 0.0)
    for i in range(workers):
        node = f"worker-{i:04d}"
        if i < lacking:  # it cannot import the function of every task to come
            s.submit("probe", [(f"probe-{i}", "bench.w7:noop", BODY, 0)], 0.0)
            [h] = [a for a in s.pull(node, epochs[node], 1, 0.0)
                   if isinstance(a, Handout) and a.worker == node]
            s.unrunnable(node, f"probe-{i}", h.tasks[0].lease, "No module named 'bench'", 0.0)
            s.cancel(None, [f"probe-{i}"])
        s.pull(node, epochs[node], WANT, 0.0)  # nothing queued: parked
    holding: dict[str, list[Task]] = {node: [] for node in epochs}
    todo: list[str] = []
    reclaims: list[Reclaim] = []
    delivered: list[str] = []

    def act(actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Handout):
                if a.tasks:
                    if not holding[a.worker]:
                        todo.append(a.worker)
                    holding[a.worker] += a.tasks
            elif isinstance(a, Deliver):
                delivered.append(a.result[0])
            elif isinstance(a, Reclaim):
                reclaims.append(a)

    prefix = "0123456789abcdef:"
    gc.collect()
    t0 = time.process_time()
    batch = PER_WORKER * (workers - lacking)
    for start in range(0, tasks, batch):
        act(s.submit("client", _specs(prefix, start, min(batch, tasks - start)), 0.0)[1])
        while todo or reclaims:
            while reclaims:
                r = reclaims.pop()
                wanted = set(r.tasks)
                back = [t.id for t in holding[r.worker] if t.id in wanted]
                holding[r.worker] = [t for t in holding[r.worker] if t.id not in wanted]
                act(s.gave_back(r, back)[1])
            if not todo:
                break
            node = todo.pop()
            mine, holding[node] = holding[node], []
            if not mine:
                continue
            e = epochs[node]
            act(s.started(node, e, [t.id for t in mine]))
            act(s.results(node, e, [(t.id, True, b"", t.lease) for t in mine]))
            act(s.pull(node, e, WANT, 0.0))
            if delivered:
                s.delivered(delivered)
                delivered.clear()
    spent = time.process_time() - t0
    assert not s.tasks, len(s.tasks)
    assert s.queued == 0, s.queued
    return spent / tasks * 1e6


def _cycle_prefetch(workers: int, tasks: int, credit: int = 3) -> float:
    """The same with workers as they run: one task at a time, ``credit`` more held.

    In turn, each busy worker reports its running task's result, starts the
    next one it holds and, holding fewer than ``credit``, asks for more; a
    worker asked to give tasks back returns those it has not started. The
    client keeps the queue topped up, 10 tasks per worker at a time.
    """
    from collections import deque

    from netlet.cluster._scheduler import Deliver, Handout, Reclaim, Task

    s = _scheduler()
    epochs = {f"worker-{i:04d}": s.join(f"worker-{i:04d}", 0.0)[0] for i in range(workers)}
    local: dict[str, list[Task]] = {node: [] for node in epochs}
    running: dict[str, Task | None] = dict.fromkeys(epochs)
    waiting: set[str] = set()
    turn: deque[str] = deque()
    queued: set[str] = set()
    """Workers in ``turn``."""
    reclaims: list[Reclaim] = []

    def act(actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Handout):
                waiting.discard(a.worker)
                if a.tasks:
                    if a.worker not in queued:
                        queued.add(a.worker)
                        turn.append(a.worker)
                    local[a.worker] += a.tasks
            elif isinstance(a, Deliver):
                s.delivered([a.result[0]])
            elif isinstance(a, Reclaim):
                reclaims.append(a)

    def ask(node: str) -> None:
        out = s.pull(node, epochs[node], credit + 1 - len(local[node]), 0.0)
        if not any(isinstance(a, Handout) and a.worker == node for a in out):
            waiting.add(node)
        act(out)

    prefix, submitted = "0123456789abcdef:", 0
    gc.collect()
    t0 = time.process_time()
    for node in epochs:
        ask(node)
    while submitted < tasks or s.tasks:
        if submitted < tasks and s.queued < 5 * workers:
            n = min(10 * workers, tasks - submitted)
            act(s.submit("client", _specs(prefix, submitted, n), 0.0)[1])
            submitted += n
        while reclaims:
            r = reclaims.pop()
            wanted = set(r.tasks)
            back = [t.id for t in local[r.worker] if t.id in wanted]
            local[r.worker] = [t for t in local[r.worker] if t.id not in wanted]
            act(s.gave_back(r, back)[1])
        if not turn:
            continue
        node = turn.popleft()
        queued.discard(node)
        e, done = epochs[node], running[node]
        running[node] = local[node].pop(0) if local[node] else None
        if running[node] is not None:
            act(s.started(node, e, [running[node].id]))  # type: ignore[union-attr]
        if done is not None:
            act(s.results(node, e, [(done.id, True, b"", done.lease)]))
        if len(local[node]) < credit and node not in waiting:
            ask(node)
        if (running[node] is not None or local[node]) and node not in queued:
            queued.add(node)
            turn.append(node)
    spent = time.process_time() - t0
    assert not s.tasks, len(s.tasks)
    return spent / tasks * 1e6


def _bytes_per_queued(sizes: list[int]) -> dict[int, float]:
    """Bytes per queued task at each size of the queue (one run, growing)."""
    out: dict[int, float] = {}
    gc.collect()
    tracemalloc.start()
    s = _scheduler()
    base = tracemalloc.get_traced_memory()[0]
    have = 0
    for size in sorted(sizes):
        for start in range(have, size, BATCH * 10):
            s.submit("client", _specs("0123456789abcdef:", start, min(BATCH * 10, size - start)),
                     0.0)
        have = size
        gc.collect()
        out[size] = (tracemalloc.get_traced_memory()[0] - base) / size
    tracemalloc.stop()
    assert s.queued == have
    return out


def _lost(workers: int, dying: int, held: int) -> float:
    """CPU ms to requeue what ``dying`` workers held (``held`` each, half started)."""
    from netlet.cluster._scheduler import Handout

    s = _scheduler()
    epochs = {f"worker-{i:04d}": s.join(f"worker-{i:04d}", 0.0)[0] for i in range(workers)}
    s.submit("client", _specs("0123456789abcdef:", 0, workers * held * 2), 0.0)
    for node, e in epochs.items():
        [h] = [a for a in s.pull(node, e, held, 0.0) if isinstance(a, Handout) and a.tasks]
        s.started(node, e, [t.id for t in h.tasks[: held // 2]])
    gc.collect()
    t0 = time.process_time()
    for node in list(epochs)[:dying]:
        s.worker_lost(node)
    spent = time.process_time() - t0
    assert s.queued == workers * held + dying * held, s.queued
    return spent * 1e3


def _head_sweep(workers: int, dying: int, held: int = 4) -> tuple[float, float]:
    """CPU ms of the real head's sweep: one pass with every worker alive, and the
    pass that finds ``dying`` of them silent past ``dead_after`` and requeues what
    they held (``held`` each, half started).

    A ``Head`` on a node that listens nowhere (no sockets) and runs on a
    ``VirtualClock``: each pass is one ``advance`` of its clock. The CPU is the
    process's, so the node's watchdog pass (every 50 ms of its clock) is in it.
    """
    import asyncio

    import netlet
    from netlet.cluster import Head, HeadConfig
    from netlet.cluster._head_tasks import Member
    from netlet.cluster._member_messages import JoinInfo
    from netlet.cluster._messages import Report, Tasks
    from netlet.testing import VirtualClock

    clock = VirtualClock()
    node = netlet.Node(clock=clock, keepalive=None)
    try:
        config = HeadConfig()
        head = Head(node, config)
        loop = node.get_loop()

        async def setup() -> list[Member]:
            now = clock.monotonic()
            await head.submit("client", None, Tasks.of([
                (f"0123456789abcdef:{i}", "bench.w7:noop", BODY, 3)
                for i in range(workers * held * 2)]), {})
            for i in range(workers):
                nid = f"worker-{i:04d}"
                info = JoinInfo(nid, "", 0, "", 1)
                head._members[nid] = Member(nid, "worker", info, None, 0.0, now)
                epoch, _ = head.scheduler.join(nid, now)
                batch = (await head.pull(nid, epoch, held)).ids
                await head.report(nid, epoch, Report.of([], batch[: held // 2]))
            return list(head._members.values())

        members = asyncio.run_coroutine_threadsafe(setup(), loop).result(60)
        head.start()
        while clock.pending < 2:  # the head's sweep and the node's watchdog wait on it
            time.sleep(0.001)
        period = min(config.heartbeat, config.pull_wait / 2)

        def heard(which: list[Member]) -> None:
            async def now_seen() -> None:
                for m in which:
                    m.last_seen = clock.monotonic()

            asyncio.run_coroutine_threadsafe(now_seen(), loop).result(10)

        passes = []
        for _ in range(5):
            heard(members)
            t0 = time.process_time()
            clock.advance(period)
            passes.append(time.process_time() - t0)
        heard(members[dying:])
        clock.advance(config.dead_after - period * 1.01)  # not dead yet
        heard(members[dying:])
        queued = head.scheduler.queued
        t0 = time.process_time()
        clock.advance(period * 1.02)  # now silent for dead_after: found, requeued
        spent = time.process_time() - t0
        assert head.scheduler.queued == queued + dying * held, (head.scheduler.queued, queued)
        return sorted(passes)[len(passes) // 2] * 1e3, spent * 1e3
    finally:
        node.close()


def _heartbeats(workers: int, rounds: int, lack: bool = False) -> float:
    """CPU µs per heartbeat of an idle worker (nothing queued, nothing held); with
    ``lack``, one worker said it cannot import some function."""
    from netlet.cluster._scheduler import Handout

    s = _scheduler()
    epochs = {f"worker-{i:04d}": s.join(f"worker-{i:04d}", 0.0)[0] for i in range(workers)}
    if lack:
        node = "worker-0000"
        s.submit("client", [("probe", "bench.w7:gone", BODY, 0)], 0.0)
        [h] = [a for a in s.pull(node, epochs[node], 1, 0.0) if isinstance(a, Handout)]
        s.unrunnable(node, "probe", h.tasks[0].lease, "No module named 'bench.w7'", 0.0)
        s.cancel(None, ["probe"])
    for node, e in epochs.items():
        s.pull(node, e, WANT, 0.0)
    beats = list(epochs.items())
    gc.collect()
    t0 = time.process_time()
    for r in range(rounds):
        for node, e in beats:
            s.heartbeat(node, e, (), 0, float(r))
    return (time.process_time() - t0) / (rounds * workers) * 1e6


def scheduler(p: Params) -> Figures:
    workers = int(p["workers"])
    figures: Figures = {"us_task": _cycle(workers, int(p["tasks"])),
                        "us_task_credit": _cycle_prefetch(workers, int(p["tasks"])),
        "us_task_lack": _cycle(workers, int(p["tasks"]), lacking=workers // 2)}
    # tracemalloc counts exact bytes, the same in every run: the first run measures them.
    if p.get("memory", True) and int(p.get("repetition", 0)) == 0:
        per = _bytes_per_queued([int(n) for n in p["queue_sizes"]])
        for n, key in ((10_000, "B_10k"), (100_000, "B_100k"), (1_000_000, "B_1M")):
            figures[key] = per.get(n, "not at this size (--quick)")
    elif not p.get("memory", True):
        for key in ("B_10k", "B_100k", "B_1M"):
            figures[key] = "measured in the 1,000-worker row"
    figures["ms_lost100"] = _lost(workers, min(100, workers), 4)
    figures["ms_sweep"], figures["ms_detect100"] = _head_sweep(workers, min(100, workers))
    figures["us_heartbeat"] = _heartbeats(workers, max(1, 20_000 // workers))
    figures["us_heartbeat_lacks"] = _heartbeats(workers, max(1, 20_000 // workers), lack=True)
    return figures


def _sizes(quick: bool) -> Params:
    if quick:
        return {"tasks": 20_000, "queue_sizes": [10_000, 100_000]}
    return {"tasks": 200_000, "queue_sizes": [10_000, 100_000, 1_000_000]}


NETLET = "1,000 workers"

WORKLOAD = Workload(
    id="W7",
    title="head scale: the real scheduler, simulated workers (no sockets)",
    summary=("CPU per task through submit, hand-out, started, result, delivered; bytes per "
             "queued task as the queue grows (first run only: exact, the same each run); "
             "requeueing what 100 workers dying at once held (all 10 in the 10-worker row), "
             "and the head's sweep finding them; a sweep with all alive; "
             "an idle heartbeat. Dask documents 200 µs-1 ms of scheduler overhead per task."),
    metrics=(
        Metric("us_task", "µs/task", "lower", digits=1),
        Metric("us_task_credit", "µs/task, credit 3", "lower", digits=1),
        Metric("us_task_lack", "µs/task, half lack fn", "lower", digits=1),
        Metric("B_10k", "B/task 10k", "lower", ratio=False),
        Metric("B_100k", "B/task 100k", "lower", ratio=False),
        Metric("B_1M", "B/task 1M", "lower", ratio=False),
        Metric("ms_lost100", "ms lost 100", "lower", digits=2, ratio=False),
        Metric("ms_detect100", "ms detect+lost 100", "lower", digits=2, ratio=False),
        Metric("ms_sweep", "ms sweep", "lower", digits=2, ratio=False),
        Metric("us_heartbeat", "µs heartbeat", "lower", digits=2, ratio=False),
        Metric("us_heartbeat_lacks", "µs heartbeat, 1 fn lacked", "lower", digits=2,
               ratio=False),
    ),
    variants=(
        Variant(NETLET, scheduler, {"workers": 1000}, netlet=True),
        Variant("10 workers", scheduler, {"workers": 10, "memory": False}, netlet=True),
    ),
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 120.0 if quick else 300.0,
    targets=(
        Target(NETLET, "", "us_task", "<=", 20.0),
        Target(NETLET, "", "B_1M", "<=", 1024.0),
        Target(NETLET, "", "B_100k", "<=", 1024.0),
        Target(NETLET, "", "us_task_credit", "<=", 20.0),
        Target(NETLET, "", "us_task_lack", "<=", 20.0),
        Target(NETLET, "10 workers", "us_task_lack", "<=", 2.0,
               text="half the workers lacking the tasks' function costs each task about "
                    "the same with 1,000 workers as with 10"),
        Target(NETLET, "10 workers", "us_heartbeat_lacks", "<=", 2.0,
               text="an idle heartbeat costs about the same with 1,000 workers as with 10, "
                    "even once a function is lacked"),
        Target(NETLET, "10 workers", "us_task", "<=", 1.5,
               text="no per-task cost that grows with the workers: 1,000 within 1.5x of 10"),
        Target(NETLET, "10 workers", "us_task_credit", "<=", 1.5,
               text="the same with workers holding 3 tasks ahead"),
    ),
)
