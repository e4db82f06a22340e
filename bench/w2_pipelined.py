"""W2: 100,000 pipelined ``echo(64 bytes)`` with up to 1,000 outstanding (quick: 10,000).

Client and server in separate processes on 127.0.0.1. Each variant makes 1,000
untimed calls the same way first; the figure is calls/s over the timed calls.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future

from bench import servers
from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params, random_payload, rate_figures, require

__all__ = ["WORKLOAD"]

PAYLOAD = 64


def _check(result: object, payload: bytes) -> None:
    if result != payload:
        raise RuntimeError(f"echo mismatch: {result!r:.80}")


def _sizes(quick: bool) -> Params:
    return {"calls": 10_000 if quick else 100_000, "window": 1_000, "warmup": 1_000}


async def _window(call: Callable[[], Awaitable[object]], calls: int, window: int) -> int:
    """``calls`` calls of ``call`` with ``window`` in flight: a pool of that many tasks."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start = time.perf_counter_ns()
    await asyncio.gather(*(worker() for _ in range(min(window, calls))))
    return time.perf_counter_ns() - start


def raw_asyncio(p: Params) -> Figures:
    """One connection, length-prefixed frames, a window of outstanding requests.

    A writer task sends a frame whenever the window has room; a reader task reads the
    replies (which come back in order) and reopens the window.
    """
    payload = random_payload(PAYLOAD)
    frame = struct.pack("!I", len(payload)) + payload

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> int:
        room = asyncio.Semaphore(p["window"])

        async def send() -> None:
            for _ in range(n):
                await room.acquire()
                writer.write(frame)
                if writer.transport.get_write_buffer_size() > 1 << 16:
                    await writer.drain()
            await writer.drain()

        async def receive() -> None:
            for _ in range(n):
                (size,) = struct.unpack("!I", await reader.readexactly(4))
                if await reader.readexactly(size) != payload:
                    raise RuntimeError("echo mismatch")
                room.release()

        start = time.perf_counter_ns()
        await asyncio.gather(send(), receive())
        return time.perf_counter_ns() - start

    async def main(address: str) -> Figures:
        reader, writer = await asyncio.open_connection(*servers.split_hostport(address))
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await run(reader, writer, p["warmup"])
            return rate_figures(p["calls"], await run(reader, writer, p["calls"]))
        finally:
            writer.close()

    with servers.start("asyncio-echo") as address:
        return asyncio.run(main(address))


def ray_batches(p: Params) -> Figures:
    """Batches of ``window`` ObjectRefs from an actor's ``echo``, then one ``ray.get``."""
    ray = require("ray", "ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:

        @ray.remote
        class Echo:
            def echo(self, data: bytes) -> bytes:
                return data

        actor = Echo.remote()
        payload = random_payload(PAYLOAD)

        def run(n: int) -> int:
            start = time.perf_counter_ns()
            for first in range(0, n, p["window"]):
                refs = [actor.echo.remote(payload) for _ in range(min(p["window"], n - first))]
                ray.get(refs)
            return time.perf_counter_ns() - start

        run(p["warmup"])
        return rate_figures(p["calls"], run(p["calls"]))
    finally:
        ray.shutdown()


def pyro5_batch(p: Params) -> Figures:
    """``Pyro5.api.BatchProxy`` (msgpack): ``window`` calls per batch, one round trip each."""
    require("Pyro5", "pyro5")
    import Pyro5
    import Pyro5.api

    Pyro5.config.SERIALIZER = "msgpack"
    payload = random_payload(PAYLOAD)
    with servers.start("pyro5") as uri, Pyro5.api.Proxy(uri) as proxy:
        proxy._pyroBind()

        def run(n: int) -> int:
            start = time.perf_counter_ns()
            for first in range(0, n, p["window"]):
                with Pyro5.api.BatchProxy(proxy) as batch:
                    for _ in range(min(p["window"], n - first)):
                        batch.echo(payload)
                    for result in batch():
                        if result != payload:
                            raise RuntimeError("echo mismatch")
            return time.perf_counter_ns() - start

        run(p["warmup"])
        return rate_figures(p["calls"], run(p["calls"]))


def netlet_async(p: Params) -> Figures:
    """``proxy.echo.aio`` from a pool of ``window`` tasks on the caller's loop."""
    netlet = require("netlet", "-e .")
    payload = random_payload(PAYLOAD)

    async def main(address: str) -> Figures:
        async with netlet.open_node() as node:
            proxy = node.proxy(address, "echo")

            async def call() -> None:
                if await proxy.echo.aio(payload) != payload:
                    raise RuntimeError("echo mismatch")

            await _window(call, p["warmup"], p["window"])
            return rate_figures(p["calls"], await _window(call, p["calls"], p["window"]))

    with servers.start("netlet") as address:
        return asyncio.run(main(address))


def netlet_futures(p: Params) -> Figures:
    """``proxy.echo.future`` from sync code; the oldest is awaited when ``window`` are out."""
    netlet = require("netlet", "-e .")
    payload = random_payload(PAYLOAD)
    with servers.start("netlet") as address:
        proxy = netlet.connect(address, "echo")

        def run(n: int) -> int:
            outstanding: collections.deque[Future[bytes]] = collections.deque()
            start = time.perf_counter_ns()
            for _ in range(n):
                if len(outstanding) >= p["window"]:
                    _check(outstanding.popleft().result(), payload)
                outstanding.append(proxy.echo.future(payload))
            while outstanding:
                _check(outstanding.popleft().result(), payload)
            return time.perf_counter_ns() - start

        run(p["warmup"])
        return rate_figures(p["calls"], run(p["calls"]))


RAW_ASYNCIO = "raw asyncio pipelined"
NETLET = "netlet async (.aio, window 1,000)"

WORKLOAD = Workload(
    id="W2",
    title="pipelined echo(64 bytes), up to 1,000 outstanding: throughput",
    summary=(
        "Client and server in separate processes on 127.0.0.1; 100,000 timed calls "
        "(quick: 10,000) after 1,000 warm-up, at most 1,000 outstanding."
    ),
    metrics=(Metric("calls_per_s", "calls/s", "higher"),),
    variants=(
        Variant(RAW_ASYNCIO, raw_asyncio),
        Variant("Ray actor (batches of 1,000 refs)", ray_batches),
        Variant("Pyro5 BatchProxy (msgpack, batches of 1,000)", pyro5_batch),
        Variant(NETLET, netlet_async, netlet=True),
        Variant("netlet futures from sync code (1,000 out)", netlet_futures, netlet=True),
    ),
    pinned=True,
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 60.0 if quick else 240.0,
    targets=(Target(NETLET, RAW_ASYNCIO, "calls_per_s", ">=", 0.4),),
)
