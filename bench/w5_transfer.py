"""W5: send 64 MiB to a remote function that returns its length (quick: 6.4 MiB).

Two payloads of the same size: ``bytes`` and a float64 numpy array. In each run a
variant sends each payload once untimed (connections, imports, buffers), then three
times timed, alternating payloads; the run's figure is the median MB/s (10^6 bytes
per second) of its timed calls, round trip included. The remote side is a separate
process: a server, or the peer's worker.
"""

from __future__ import annotations

import gc
import os
import socket
import statistics
import struct
from collections.abc import Callable, Iterator
from typing import Any

from bench import servers
from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params, random_payload, require, transfer_mbps

__all__ = ["WORKLOAD"]

MiB = 1024 * 1024


def _sizes(quick: bool) -> Params:
    nbytes = 64 * MiB // 10 if quick else 64 * MiB
    return {"nbytes": nbytes - nbytes % 8, "transfers": 5 if quick else 3}  # whole float64s


def _payloads(nbytes: int) -> Iterator[tuple[str, Any]]:
    yield "bytes_MBps", random_payload(nbytes)
    try:
        import numpy as np
    except ImportError:
        yield "numpy_MBps", None
        return
    yield "numpy_MBps", np.random.default_rng(0).random(nbytes // 8)


def _measure(send: Callable[[Any], object], p: Params) -> Figures:
    """Both payloads through ``send``: one untimed call each, then ``p["transfers"]``
    timed calls each, alternating payloads; the figure is the median of the timed ones.
    A payload the peer cannot carry is n/a alone."""
    figures: Figures = {}
    rates: dict[str, list[float]] = {}
    payloads = dict(_payloads(p["nbytes"]))
    for key, data in payloads.items():
        if data is None:
            figures[key] = "numpy not installed"
            continue
        try:
            transfer_mbps(send, data, p["nbytes"])
            rates[key] = []
        except Exception as exc:
            figures[key] = f"{type(exc).__name__}: {str(exc)[:200]}"
    if not rates:
        raise RuntimeError("; ".join(f"{k}: {v}" for k, v in figures.items()))
    gc.collect()
    for _ in range(p["transfers"]):
        for key, samples in rates.items():
            samples.append(transfer_mbps(send, payloads[key], p["nbytes"]))
    figures.update({key: statistics.median(samples) for key, samples in rates.items()})
    return figures


def raw_socket(p: Params) -> Figures:
    """8-byte length then the payload's buffer via ``sendall``; the server replies the length."""
    hdr = struct.Struct("!Q")
    reply = bytearray(8)
    with servers.start("raw-length") as address:
        sock = socket.create_connection(servers.split_hostport(address))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def send(data: Any) -> int:
            view = memoryview(data).cast("B")
            sock.sendall(hdr.pack(view.nbytes))
            sock.sendall(view)
            got = 0
            while got < 8:
                n = sock.recv_into(memoryview(reply)[got:])
                if not n:
                    raise ConnectionError("server closed")
                got += n
            return int(hdr.unpack(reply)[0])

        with sock:
            return _measure(send, p)


def pyro5(p: Params) -> Figures:
    """A Pyro5 proxy ``length(data)`` call with the msgpack serializer (bytes travel raw)."""
    require("Pyro5", "pyro5")
    import Pyro5
    import Pyro5.api

    Pyro5.config.SERIALIZER = "msgpack"
    with servers.start("pyro5") as uri, Pyro5.api.Proxy(uri) as proxy:
        proxy._pyroBind()
        return _measure(proxy.length, p)


def ray_task(p: Params) -> Figures:
    """``ray.get(length.remote(data))``: Ray puts a large argument in its object store."""
    ray = require("ray", "ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:

        @ray.remote
        def length(data: Any) -> int:
            return len(data)

        return _measure(lambda data: ray.get(length.remote(data)), p)
    finally:
        ray.shutdown()


def dask_submit(p: Params) -> Figures:
    """``client.submit(len, data, pure=False).result()`` on a one-worker LocalCluster."""
    require("distributed", "'dask[distributed]'")
    import logging
    import warnings

    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*Large object.*")
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        return _measure(lambda data: client.submit(len, data, pure=False).result(), p)


def process_pool(p: Params) -> Figures:
    """``ProcessPoolExecutor(1).submit(len, data).result()``."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1) as pool:
        pool.submit(len, b"").result()
        return _measure(lambda data: pool.submit(len, data).result(), p)


def netlet_blocking(p: Params) -> Figures:
    """A blocking ``netlet.connect(...)`` proxy: ``proxy.length(data)``."""
    netlet = require("netlet", "-e .")
    with servers.start("netlet") as address:
        proxy = netlet.connect(address, "echo")
        proxy.length(b"")
        return _measure(proxy.length, p)


def netlet_big_limits(p: Params) -> Figures:
    """As ``netlet_blocking``, both nodes with ``max_frame`` raised to 256 MiB."""
    netlet = require("netlet", "-e .")
    with servers.start("netlet-big") as address, netlet.Node(limits=servers.big_limits()) as node:
        proxy = node.proxy(address, "echo")
        proxy.length(b"")
        return _measure(proxy.length, p)


def netlet_shared_memory(p: Params) -> Figures:
    """As ``netlet_blocking``, both nodes keyed with ``shared_memory`` at 1 MiB: the
    payload goes through a sealed memfd, not the socket (same host, same user)."""
    netlet = require("netlet", "-e .")
    key = os.urandom(32)
    os.environ[servers.SHM_KEY_ENV] = key.hex()
    with (servers.start("netlet-shm") as address,
          netlet.Node(key=key, shared_memory=1 << 20) as node):
        proxy = node.proxy(address, "echo")
        proxy.length(b"")
        from netlet.transport._shm import TOTALS

        sent = TOTALS.sent
        figures = _measure(proxy.length, p)
        if TOTALS.sent == sent:
            raise RuntimeError("the payloads went through the socket, not shared memory")
        return figures


RAW_SOCKET = "raw socket"
NETLET = "netlet (blocking proxy)"
NETLET_BIG = "netlet (max_frame 256 MiB)"
NETLET_SHM = "netlet (shared memory, keyed)"

WORKLOAD = Workload(
    id="W5",
    title="send 64 MiB to a remote length(): throughput",
    summary=(
        "64 MiB (quick: 6.4 MiB) of bytes, and a float64 numpy array of the same size, "
        "to a function in another process that returns its length. Per run: one untimed "
        "call per payload, then 3 timed (quick: 5) alternating payloads, median taken. "
        "MB/s = 10^6 bytes per second."
    ),
    metrics=(
        Metric("bytes_MBps", "bytes MB/s", "higher"),
        Metric("numpy_MBps", "numpy MB/s", "higher"),
    ),
    variants=(
        Variant(RAW_SOCKET, raw_socket),
        Variant("Pyro5 (msgpack)", pyro5),
        Variant("Ray remote function", ray_task),
        Variant("Dask LocalCluster submit", dask_submit),
        Variant("ProcessPoolExecutor submit", process_pool),
        Variant(NETLET, netlet_blocking, netlet=True),
        Variant(NETLET_BIG, netlet_big_limits, netlet=True),
        Variant(NETLET_SHM, netlet_shared_memory, netlet=True),
    ),
    pinned=True,
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 90.0 if quick else 180.0,
    targets=(
        Target(NETLET, RAW_SOCKET, "bytes_MBps", ">=", 0.7),
        Target(NETLET, RAW_SOCKET, "numpy_MBps", ">=", 0.7),
        Target(NETLET_BIG, RAW_SOCKET, "bytes_MBps", ">=", 0.7),
        Target(NETLET_BIG, RAW_SOCKET, "numpy_MBps", ">=", 0.7),
    ),
)
