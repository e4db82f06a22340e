"""W1: sequential ``echo(64 random bytes)``, client and server in separate processes.

1,000 warm-up calls, then 20,000 timed ones (quick: 100 and 2,000), one at a time;
figures are p50 and p99 latency in µs and calls/s over the timed loop.
"""

from __future__ import annotations

import socket
import struct

from bench import servers
from bench._harness import Metric, Target, Variant, Workload
from bench._measure import (
    Figures,
    Params,
    random_payload,
    require,
    time_async_calls,
    time_sync_calls,
)

__all__ = ["WORKLOAD"]

PAYLOAD = 64


def _sizes(quick: bool) -> Params:
    return {"warmup": 100, "calls": 2_000} if quick else {"warmup": 1_000, "calls": 20_000}


def raw_socket(p: Params) -> Figures:
    """Blocking socket, 4-byte length prefix, ``sendall`` then ``recv_into`` exactly."""
    payload = random_payload(PAYLOAD)
    frame = struct.pack("!I", len(payload)) + payload
    reply = bytearray(len(frame))
    view = memoryview(reply)
    with servers.start("raw-echo") as address:
        sock = socket.create_connection(servers.split_hostport(address))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def call() -> bytes:
            sock.sendall(frame)
            got = 0
            while got < 4:
                got += sock.recv_into(view[got:4])
            (n,) = struct.unpack_from("!I", reply)
            while got < 4 + n:
                got += sock.recv_into(view[got : 4 + n])
            return bytes(view[4 : 4 + n])

        assert call() == payload
        with sock:
            return time_sync_calls(call, p["warmup"], p["calls"])


def raw_asyncio(p: Params) -> Figures:
    """asyncio streams against an ``asyncio.Protocol`` echo server, one call outstanding."""
    import asyncio

    payload = random_payload(PAYLOAD)
    frame = struct.pack("!I", len(payload)) + payload

    async def main(address: str) -> Figures:
        reader, writer = await asyncio.open_connection(*servers.split_hostport(address))
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def call() -> bytes:
            writer.write(frame)
            (n,) = struct.unpack("!I", await reader.readexactly(4))
            return await reader.readexactly(n)

        assert await call() == payload
        try:
            return await time_async_calls(call, p["warmup"], p["calls"])
        finally:
            writer.close()

    with servers.start("asyncio-echo") as address:
        return asyncio.run(main(address))


def mp_connection(p: Params) -> Figures:
    """``multiprocessing.connection.Client``: ``send_bytes`` then ``recv_bytes``."""
    from multiprocessing.connection import Client

    payload = random_payload(PAYLOAD)
    with servers.start("mpconn-echo") as address, Client(servers.split_hostport(address)) as conn:

        def call() -> bytes:
            conn.send_bytes(payload)
            return conn.recv_bytes()

        assert call() == payload
        return time_sync_calls(call, p["warmup"], p["calls"])


def pyro5(p: Params) -> Figures:
    """A Pyro5 proxy call, with the serializer named in ``p["serializer"]``."""
    require("Pyro5", "pyro5")
    import Pyro5
    import Pyro5.api

    Pyro5.config.SERIALIZER = p["serializer"]
    payload = random_payload(PAYLOAD)
    with servers.start("pyro5") as uri, Pyro5.api.Proxy(uri) as proxy:
        proxy._pyroBind()
        first = proxy.echo(payload)
        if p["serializer"] == "serpent":
            import serpent

            first = serpent.tobytes(first)  # serpent carries bytes as base64 dicts
        assert first == payload, first
        return time_sync_calls(lambda: proxy.echo(payload), p["warmup"], p["calls"])


def ray_actor(p: Params) -> Figures:
    """``ray.get(actor.echo.remote(b))`` against an actor in its own worker process."""
    ray = require("ray", "ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:

        @ray.remote
        class Echo:
            def echo(self, data: bytes) -> bytes:
                return data

        actor = Echo.remote()
        payload = random_payload(PAYLOAD)
        assert ray.get(actor.echo.remote(payload)) == payload
        return time_sync_calls(lambda: ray.get(actor.echo.remote(payload)), p["warmup"], p["calls"])
    finally:
        ray.shutdown()


def netlet_blocking(p: Params) -> Figures:
    """``netlet.connect(...)`` proxy on the default client node; a blocking call each time."""
    netlet = require("netlet", "-e .")
    payload = random_payload(PAYLOAD)
    with servers.start("netlet") as address:
        proxy = netlet.connect(address, p["object"])
        assert proxy.echo(payload) == payload
        return time_sync_calls(lambda: proxy.echo(payload), p["warmup"], p["calls"])


def netlet_async(p: Params) -> Figures:
    """``await proxy.echo.aio(b)`` on the caller's own event loop (``netlet.open_node``)."""
    import asyncio

    netlet = require("netlet", "-e .")
    payload = random_payload(PAYLOAD)

    async def main(address: str) -> Figures:
        async with netlet.open_node() as node:
            proxy = node.proxy(address, p["object"])
            assert await proxy.echo.aio(payload) == payload
            return await time_async_calls(lambda: proxy.echo.aio(payload), p["warmup"], p["calls"])

    with servers.start("netlet") as address:
        return asyncio.run(main(address))


RAW_SOCKET = "raw blocking socket"
PYRO_MSGPACK = "Pyro5 (msgpack)"
NETLET = "netlet (blocking proxy)"

WORKLOAD = Workload(
    id="W1",
    title="sequential echo(64 random bytes): latency",
    summary=(
        "Client and server in separate processes on 127.0.0.1; one call outstanding; "
        "20,000 timed calls after 1,000 warm-up (quick: 2,000 after 100)."
    ),
    metrics=(
        Metric("p50_us", "p50 µs", "lower", digits=1),
        Metric("p99_us", "p99 µs", "lower", digits=1),
        Metric("calls_per_s", "calls/s", "higher"),
    ),
    variants=(
        Variant(RAW_SOCKET, raw_socket),
        Variant("raw asyncio", raw_asyncio),
        Variant("multiprocessing.connection", mp_connection),
        Variant(PYRO_MSGPACK, pyro5, {"serializer": "msgpack"}),
        Variant("Pyro5 (serpent, default)", pyro5, {"serializer": "serpent"}),
        Variant("Ray actor", ray_actor),
        Variant(NETLET, netlet_blocking, {"object": "echo"}, netlet=True),
        Variant("netlet async (.aio)", netlet_async, {"object": "echo"}, netlet=True),
        Variant("netlet (async method)", netlet_blocking, {"object": "aecho"}, netlet=True),
    ),
    pinned=True,
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 60.0 if quick else 180.0,
    targets=(
        Target(NETLET, RAW_SOCKET, "p50_us", "<=", 1.3),
        Target(NETLET, PYRO_MSGPACK, "p50_us", "<", 1.0),
    ),
)
