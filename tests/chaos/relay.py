"""A userspace TCP relay that delays every byte: latency for hosts without ``tc netem``.

``python -m tests.chaos.relay LISTEN_HOST:PORT UPSTREAM_HOST UPSTREAM_PORT DELAY``
listens on ``LISTEN_HOST:PORT`` (port 0: any free port) of the host it runs on,
prints ``tcp://LISTEN_HOST:PORT``, and forwards each connection to the upstream,
holding what it reads in each direction for ``DELAY`` seconds before writing
it on (order kept, bytes never merged across the delay). So a peer dialling the
relay sees a round trip of ``2 x DELAY`` on top of the link's own; throughput
is not capped (a reader keeps reading while earlier bytes wait). With a delay
of 0 it is a plain forwarder: a NAT the far end cannot dial through.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    queue.put_nowait((loop.time() + delay, b""))
    with contextlib.suppress(OSError):
        await sender


async def main(listen: str, host: str, upstream_port: int, delay: float) -> None:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(host, upstream_port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(_pump(cr, uw, delay), _pump(ur, cw, delay),
                             return_exceptions=True)
        for w in (cw, uw):
            w.close()

    bind, _, port = listen.rpartition(":")
    server = await asyncio.start_server(handle, bind, int(port))
    print(f"tcp://{bind}:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
