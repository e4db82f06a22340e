"""CPU time per local channel send/receive pair, between two threads and two asyncio tasks.

``python -m bench.channel_cpu [PAIRS [RUNS]]``: PAIRS values (default 200,000) go
from a sender to a receiver on one channel, rendezvous (buffer 0) and buffered
(buffer 64), once between two threads and once between two tasks on one loop;
each case runs RUNS times (default 3) and the median, min and max of the
process's CPU microseconds per pair are printed. CPU time is what a pair costs
whatever else the machine runs (C1 reports wall-clock throughput instead). To
compare two trees, run it with ``PYTHONPATH=<tree>/src`` for each, interleaved.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time

from netlet import Channel


def threads(pairs: int, buffer: int) -> float:
    ch = Channel(buffer)

    def receive_all() -> None:
        receive = ch.receive
        for _ in range(pairs):
            receive()

    receiver = threading.Thread(target=receive_all)
    t0 = time.process_time()
    receiver.start()
    send = ch.send
    for i in range(pairs):
        send(i)
    receiver.join()
    return (time.process_time() - t0) / pairs * 1e6


def tasks(pairs: int, buffer: int) -> float:
    ch = Channel(buffer)

    async def main() -> float:
        async def receive_all() -> None:
            receive = ch.receive.aio
            for _ in range(pairs):
                await receive()

        t0 = time.process_time()
        receiver = asyncio.create_task(receive_all())
        send = ch.send.aio
        for i in range(pairs):
            await send(i)
        await receiver
        return (time.process_time() - t0) / pairs * 1e6

    return asyncio.run(main())


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    for buffer in (0, 64):
        for name, case in (("threads", threads), ("tasks", tasks)):
            cpu = [case(pairs, buffer) for _ in range(runs)]
            print(f"{name:7} buffer={buffer:<3} {statistics.median(cpu):6.2f} us CPU per pair "
                  f"(min {min(cpu):.2f}, max {max(cpu):.2f}, {runs} runs of {pairs:,})")


if __name__ == "__main__":
    main()
