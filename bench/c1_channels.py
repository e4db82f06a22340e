"""C1 (inside one process): one sender, one receiver, 100,000 small messages.

Messages are ``("msg", i)`` tuples. Threads for the blocking variants, tasks on
one loop for the async ones. The figure is messages/s from the first timed send
until the last message is received.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any

from bench._harness import Metric, Variant, Workload
from bench._measure import Figures, Params, require

__all__ = ["WORKLOAD"]


def _sizes(quick: bool) -> Params:
    return {"messages": 10_000 if quick else 100_000, "buffer": 1_000}


def _threads(put: Any, get: Any, n: int) -> Figures:
    def consume() -> None:
        for _ in range(n):
            get()

    start = time.perf_counter_ns()
    receiver = threading.Thread(target=consume)
    receiver.start()
    for i in range(n):
        put(("msg", i))
    receiver.join()
    return {"msgs_per_s": n / ((time.perf_counter_ns() - start) / 1e9)}


def netlet_threads(p: Params) -> Figures:
    netlet = require("netlet", "-e .")
    ch = netlet.channel(p["buffer"])
    return _threads(ch.send, ch.receive, p["messages"])


def netlet_rendezvous(p: Params) -> Figures:
    netlet = require("netlet", "-e .")
    ch = netlet.channel(0)
    return _threads(ch.send, ch.receive, p["messages"])


def queue_threads(p: Params) -> Figures:
    q: queue.Queue[Any] = queue.Queue(p["buffer"])
    return _threads(q.put, q.get, p["messages"])


async def _tasks(put: Any, get: Any, n: int) -> Figures:
    async def consume() -> None:
        for _ in range(n):
            await get()

    start = time.perf_counter_ns()
    receiver = asyncio.ensure_future(consume())
    for i in range(n):
        await put(("msg", i))
    await receiver
    return {"msgs_per_s": n / ((time.perf_counter_ns() - start) / 1e9)}


def netlet_tasks(p: Params) -> Figures:
    netlet = require("netlet", "-e .")

    async def main() -> Figures:
        ch = netlet.channel(p["buffer"])
        return await _tasks(ch.send.aio, ch.receive.aio, p["messages"])

    return asyncio.run(main())


def asyncio_queue(p: Params) -> Figures:
    async def main() -> Figures:
        q: asyncio.Queue[Any] = asyncio.Queue(p["buffer"])
        return await _tasks(q.put, q.get, p["messages"])

    return asyncio.run(main())


NETLET = "netlet channel(buffer=1000), threads"

WORKLOAD = Workload(
    id="C1",
    title="channel throughput inside one process: one sender, one receiver",
    summary="100,000 ('msg', i) tuples (quick: 10,000); buffers of 1,000 where there is one.",
    metrics=(Metric("msgs_per_s", "messages/s", "higher"),),
    variants=(
        Variant(NETLET, netlet_threads, netlet=True),
        Variant("netlet channel(0) rendezvous, threads", netlet_rendezvous, netlet=True),
        Variant("queue.Queue(1000), threads", queue_threads),
        Variant("netlet channel(buffer=1000), asyncio tasks", netlet_tasks, netlet=True),
        Variant("asyncio.Queue(1000), tasks", asyncio_queue),
    ),
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 60.0 if quick else 180.0,
)
