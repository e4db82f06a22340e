"""C1 across two processes: a sender process, a receiver process, small messages.

For netlet the receiver owns the channel and serves it; the sender uses it by
address (``netlet.connect_channel``), so every message crosses a real socket.
The figure is messages/s at the receiver over the timed messages, after warm-up.
"""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time
from typing import Any

from bench._harness import Metric, Target, Variant, Workload
from bench._measure import Figures, Params, require

__all__ = ["WORKLOAD"]

WARMUP = 1_000


def _sizes(quick: bool) -> Params:
    return {"messages": 10_000 if quick else 100_000, "buffer": 1_000}


def _receive(get: Any, n: int) -> Figures:
    for _ in range(WARMUP):
        get()
    start = time.perf_counter_ns()
    for _ in range(n):
        get()
    return {"msgs_per_s": n / ((time.perf_counter_ns() - start) / 1e9)}


def _netlet(p: Params, buffer: int) -> Figures:
    netlet = require("netlet", "-e .")
    with netlet.Node(listen="tcp://127.0.0.1:0") as node:
        inbox = netlet.channel(buffer)
        node.serve(inbox, "inbox")
        total = WARMUP + p["messages"]
        sender = subprocess.Popen([sys.executable, "-m", "bench.c1x_channels", "send",
                                   str(node.address), str(total)])
        try:
            return _receive(inbox.receive, p["messages"])
        finally:
            sender.wait(60)


def netlet_buffered(p: Params) -> Figures:
    return _netlet(p, p["buffer"])


def netlet_rendezvous(p: Params) -> Figures:
    return _netlet(p, 0)


def _mp_queue_sender(q: Any, n: int) -> None:
    for i in range(n):
        q.put(("msg", i))


def mp_queue(p: Params) -> Figures:
    q: Any = mp.Queue()
    sender = mp.Process(target=_mp_queue_sender, args=(q, WARMUP + p["messages"]))
    sender.start()
    try:
        return _receive(q.get, p["messages"])
    finally:
        sender.join(60)


def _mp_pipe_sender(conn: Any, n: int) -> None:
    for i in range(n):
        conn.send(("msg", i))


def mp_pipe(p: Params) -> Figures:
    receiver, sender_end = mp.Pipe(duplex=False)
    sender = mp.Process(target=_mp_pipe_sender, args=(sender_end, WARMUP + p["messages"]))
    sender.start()
    try:
        return _receive(receiver.recv, p["messages"])
    finally:
        sender.join(60)


def _send(address: str, n: int) -> None:
    import netlet

    ch = netlet.connect_channel(address, "inbox")
    for i in range(n):
        ch.send(("msg", i))
    if hasattr(ch, "flush"):
        ch.flush()


NETLET = "netlet channel(buffer=1000), remote sender"
MP_QUEUE = "multiprocessing.Queue"

WORKLOAD = Workload(
    id="C1x",
    title="channel throughput across two processes: one sender, one receiver",
    summary=("100,000 ('msg', i) tuples (quick: 10,000) after 1,000 warm-up, sender and "
             "receiver in separate processes."),
    metrics=(Metric("msgs_per_s", "messages/s", "higher"),),
    variants=(
        Variant(NETLET, netlet_buffered, netlet=True),
        Variant("netlet channel(0) rendezvous, remote sender", netlet_rendezvous, netlet=True),
        Variant(MP_QUEUE, mp_queue),
        Variant("multiprocessing.Pipe", mp_pipe),
    ),
    reference=NETLET,
    sizes=_sizes,
    timeout=lambda quick: 60.0 if quick else 240.0,
    targets=(Target(NETLET, MP_QUEUE, "msgs_per_s", ">="),),
)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        _send(sys.argv[2], int(sys.argv[3]))
