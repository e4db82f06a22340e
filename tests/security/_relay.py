"""A man in the middle: a real TCP relay that can rewrite or inject whole frames.

It accepts on 127.0.0.1, dials the real server for each connection and pumps
frames both ways, parsed (header, body, buffers) so a rewrite sees one body at
a time. ``rewrite_up(index, body)`` and ``rewrite_down(index, body)`` get the
index of the frame on that connection, in that direction, and return the body
to forward. ``inject_up(index)`` returns frames (bodies) to slip in before
client frame ``index``.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

_HEAD = struct.Struct(">II")

Rewrite = Callable[[int, bytes], bytes]
Inject = Callable[[int], list[bytes]]


def _frame(body: bytes, buffers: list[bytes]) -> bytes:
    lens = b"".join(struct.pack(">I", len(b)) for b in buffers)
    return _HEAD.pack(len(body), len(buffers)) + lens + body + b"".join(buffers)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionResetError("EOF")
        out += chunk
    return bytes(out)


def _read_frame(sock: socket.socket) -> tuple[bytes, list[bytes]]:
    body_len, nbufs = _HEAD.unpack(_recv_exact(sock, 8))
    lens = struct.unpack(f">{nbufs}I", _recv_exact(sock, 4 * nbufs)) if nbufs else ()
    body = _recv_exact(sock, body_len)
    return body, [_recv_exact(sock, n) for n in lens]


class Relay:
    """Forward every connection to ``upstream`` (``tcp://host:port``), frame by frame."""

    def __init__(self, upstream: str, *, rewrite_up: Rewrite | None = None,
                 rewrite_down: Rewrite | None = None, inject_up: Inject | None = None) -> None:
        host, _, port = upstream.removeprefix("tcp://").rpartition(":")
        self.upstream = (host, int(port))
        self.rewrite_up = rewrite_up
        self.rewrite_down = rewrite_down
        self.inject_up = inject_up
        self.connections = 0
        self.errors: list[BaseException] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.address = f"tcp://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            with self._lock:
                if self._closed:
                    down.close()
                    up.close()
                    return
                self.connections += 1
                self._socks += [down, up]
            threading.Thread(target=self._pump, args=(down, up, self.rewrite_up, self.inject_up),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, self.rewrite_down, None),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, rewrite: Rewrite | None,
              inject: Inject | None) -> None:
        index = 0
        try:
            while True:
                body, buffers = _read_frame(src)
                if inject is not None:
                    for extra in inject(index):
                        dst.sendall(_frame(extra, []))
                if rewrite is not None:
                    body = rewrite(index, body)
                dst.sendall(_frame(body, buffers))
                index += 1
        except (OSError, struct.error):
            pass
        except BaseException as e:  # a bug in a rewrite: the test reports it
            self.errors.append(e)
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            socks, self._socks = self._socks, []
        self._sock.close()
        for s in socks:
            s.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
