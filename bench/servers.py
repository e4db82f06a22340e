"""Server processes the client-server workloads talk to, and ``start`` to run one.

``python -m bench.servers KIND`` serves one kind on 127.0.0.1 with an ephemeral
port, prints ``READY <address>`` on stdout once it accepts connections, and serves
until killed (SIGTERM). ``start(KIND)`` runs that as a child process of the variant
and always stops it, so a server never outlives the variant that needed it.

Kinds:

- ``raw-echo``: blocking sockets, a thread per connection; frames are a 4-byte
  big-endian length then that many bytes, echoed back unchanged.
- ``raw-length``: blocking sockets; an 8-byte length then the payload, received
  with ``recv_into`` a preallocated bytearray; replies with the 8-byte length.
- ``asyncio-echo``: an ``asyncio.Protocol`` echoing ``raw-echo`` frames, one write per frame.
- ``mpconn-echo``: ``multiprocessing.connection.Listener``; echoes ``recv_bytes``.
- ``pyro5``: a Pyro5 daemon serving ``echo`` and ``length`` as object "echo"; the
  client picks the serializer.
- ``netlet``: a ``netlet.Node`` serving ``echo`` and ``length`` as "echo", and the
  same as ``async def`` methods as "aecho".
- ``netlet-big``: the same with ``big_limits()``: frames up to 256 MiB.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "BIG_FRAME",
    "PIN_ENV",
    "ServerFailed",
    "big_limits",
    "placement",
    "split_hostport",
    "start",
]

PIN_ENV = "BENCH_PIN"
"""How ``start`` places client and server on CPUs: "split", "same" or "none"."""
_CPU_ENV = "BENCH_SERVER_CPU"
_HDR4 = struct.Struct("!I")
_HDR8 = struct.Struct("!Q")


class ServerFailed(RuntimeError):
    """A server process did not come up; the message carries its last words."""


@contextlib.contextmanager
def start(kind: str, startup_timeout: float = 60.0) -> Iterator[str]:
    """Run ``python -m bench.servers kind``; yield its address; stop it on exit.

    Placement follows ``$BENCH_PIN`` (set by the harness from ``--pin``): "split" pins
    the calling thread (so the threads it starts later) to one CPU and the server to
    another, "same" pins both to one CPU, "none" leaves it to the scheduler.
    """
    env = dict(os.environ)
    client_cpu, server_cpu = placement(os.environ.get(PIN_ENV, "none"))
    if client_cpu is not None and server_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
        env[_CPU_ENV] = str(server_cpu)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.servers", kind],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        yield _await_ready(proc, kind, startup_timeout)
    finally:
        _stop(proc)


def placement(pin: str) -> tuple[int | None, int | None]:
    """(client CPU, server CPU) for a pin mode, or (None, None) to leave both free."""
    if pin == "none" or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "same" or len(cpus) < 2:
        return cpus[0], cpus[0]
    return cpus[0], cpus[1]


def _await_ready(proc: subprocess.Popen[str], kind: str, timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerFailed(f"{kind} server not ready after {timeout:.0f} s")
            if not sel.select(remaining):
                continue
            line = proc.stdout.readline()
            if not line:
                code = proc.wait()
                raise ServerFailed(f"{kind} server exited with code {code} before READY")
            if line.startswith("READY "):
                return line.split(None, 1)[1].strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def split_hostport(address: str) -> tuple[str, int]:
    """``"127.0.0.1:4000"`` (optionally with a scheme) -> ``("127.0.0.1", 4000)``."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def _ready(address: str) -> None:
    print(f"READY {address}", flush=True)


# ---------------------------------------------------------------------------- raw sockets


def _recv_exact(conn: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from ``conn``; False on a clean end of stream before any byte."""
    got, size = 0, len(view)
    while got < size:
        n = conn.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return False
            raise ConnectionError("peer closed mid-frame")
        got += n
    return True


def _serve_threads(handler: Callable[[socket.socket], None]) -> None:
    lsock = socket.create_server(("127.0.0.1", 0))
    _ready("{}:{}".format(*lsock.getsockname()[:2]))
    while True:
        conn, _ = lsock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_guarded, args=(handler, conn), daemon=True).start()


def _guarded(handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with conn, contextlib.suppress(ConnectionError):
        handler(conn)


def _raw_echo(conn: socket.socket) -> None:
    hdr = bytearray(4)
    buf = bytearray(1 << 16)
    while _recv_exact(conn, memoryview(hdr)):
        (n,) = _HDR4.unpack(hdr)
        if n > len(buf):
            buf = bytearray(n)
        body = memoryview(buf)[:n]
        _recv_exact(conn, body)
        conn.sendall(hdr + body)


def _raw_length(conn: socket.socket) -> None:
    hdr = bytearray(8)
    buf = bytearray(0)
    while _recv_exact(conn, memoryview(hdr)):
        (n,) = _HDR8.unpack(hdr)
        if n > len(buf):
            buf = bytearray(n)
        _recv_exact(conn, memoryview(buf)[:n])
        conn.sendall(_HDR8.pack(n))


# ---------------------------------------------------------------------------- asyncio


def _asyncio_echo() -> None:
    import asyncio

    class EchoProtocol(asyncio.Protocol):
        def __init__(self) -> None:
            self.buf = bytearray()
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            assert self.transport is not None
            buf = self.buf
            buf += data
            pos, end = 0, len(buf)
            while end - pos >= 4:
                n = int.from_bytes(buf[pos : pos + 4], "big")
                if end - pos - 4 < n:
                    break
                self.transport.write(bytes(buf[pos : pos + 4 + n]))
                pos += 4 + n
            if pos:
                del buf[:pos]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        _ready("{}:{}".format(*server.sockets[0].getsockname()[:2]))
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ---------------------------------------------------------------------------- multiprocessing


def _mpconn_echo() -> None:
    from multiprocessing.connection import Listener

    with Listener(("127.0.0.1", 0)) as listener:
        _ready("{}:{}".format(*listener.address))
        while True:
            conn = listener.accept()
            with conn, contextlib.suppress(EOFError, ConnectionError):
                while True:
                    conn.send_bytes(conn.recv_bytes())


# ---------------------------------------------------------------------------- Pyro5


def _pyro5() -> None:
    import Pyro5.api

    @Pyro5.api.expose
    class PyroEcho:
        def echo(self, data: object) -> object:
            return data

        def length(self, data: bytes) -> int:
            return len(data)

    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(PyroEcho(), "echo")
    _ready(str(uri))
    daemon.requestLoop()


# ---------------------------------------------------------------------------- netlet


BIG_FRAME = 256 * 1024 * 1024
"""``Limits.max_frame``/``max_bin`` of the ``netlet-big`` kind (the default is 64 MiB)."""


SHM_KEY_ENV = "BENCH_NETLET_SHM_KEY"
"""The cluster key (hex) of the ``netlet-shm`` server: shared memory needs a keyed peer
over TCP."""


def _netlet(big: bool = False, shm: bool = False) -> None:
    import netlet

    @netlet.expose
    class Echo:
        def echo(self, data: bytes) -> bytes:
            return data

        def length(self, data: bytes) -> int:
            return len(data)

    @netlet.expose
    class AsyncEcho:
        async def echo(self, data: bytes) -> bytes:
            return data

        async def length(self, data: bytes) -> int:
            return len(data)

    options: dict[str, Any] = {"limits": big_limits()} if big else {}
    if shm:
        options.update(key=bytes.fromhex(os.environ[SHM_KEY_ENV]), shared_memory=1 << 20)
    node = netlet.Node(listen="tcp://127.0.0.1:0", **options)
    node.serve(Echo(), "echo")
    node.serve(AsyncEcho(), "aecho")
    _ready(str(node.address))
    node.wait()


def big_limits() -> Any:
    """netlet limits that let a 64 MiB payload through (plus its message header)."""
    import netlet

    return netlet.Limits(max_frame=BIG_FRAME, max_bin=BIG_FRAME)


_KINDS: dict[str, Callable[[], None]] = {
    "raw-echo": lambda: _serve_threads(_raw_echo),
    "raw-length": lambda: _serve_threads(_raw_length),
    "asyncio-echo": _asyncio_echo,
    "mpconn-echo": _mpconn_echo,
    "pyro5": _pyro5,
    "netlet": _netlet,
    "netlet-big": lambda: _netlet(big=True),
    "netlet-shm": lambda: _netlet(shm=True),
}


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in _KINDS:
        sys.exit(f"usage: python -m bench.servers {{{','.join(_KINDS)}}}")
    # Die with the variant that started us even if it is killed without cleaning up.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        sys.exit("parent already gone")
    if cpu := os.environ.get(_CPU_ENV):
        os.sched_setaffinity(0, {int(cpu)})  # before any thread starts: all inherit it
    _KINDS[argv[0]]()


if __name__ == "__main__":
    main(sys.argv[1:])
