"""Shared fixtures and helpers for the netlet test suite.

Everything here is usable from any test file, either as a fixture (by name, no
import needed) or as a plain helper (``from tests.conftest import RawClient``).

Fixtures
--------

``server_process``
    A factory that starts a netlet server in a real subprocess and returns a
    :class:`ServerProcess`; every process it started is killed (and its pipes
    closed) when the test ends, whatever happened::

        def test_x(server_process):
            srv = server_process(SCRIPT, "arg1")     # source text or a Path
            srv.address                               # "tcp://127.0.0.1:40123"
            srv.stderr.wait_for(r"refused connection")  # a log line, or fail
            assert srv.alive()

    The script must print its listening address (``tcp://...``, ``unix://...``)
    as a line on stdout; the factory waits for it (``ready=`` another regex,
    ``timeout=`` seconds). The child runs with ``PYTHONUNBUFFERED=1``, so what
    it prints or logs arrives line by line. :data:`LOGGING_PRELUDE` is a snippet
    a script can start with to send netlet's log records to stderr. For a
    server shared by a whole module, call :func:`start_server` from a
    module-scoped fixture and ``stop()`` it yourself.

``short_tmp``
    A short temporary directory (unix socket paths are limited to ~100 bytes,
    which ``tmp_path`` can exceed), removed afterwards.

``free_mem_address``
    A fresh, unique ``mem://`` address.

The whole run (and every process it starts) has ``XDG_RUNTIME_DIR`` set to a
private directory of its own (``pytest_configure``), so the per-user key files
of keyless local heads, workers and banks stay there.

``node_factory``
    ``node_factory(listen=None, **options)`` starts an in-process
    ``netlet.Node`` (its own loop thread) with the given options (``key=``,
    ``wrap_connection=``, ``call_timeout=`` ...); every node it made is closed
    when the test ends, servers last.

Helpers
-------

The process, output and polling helpers live in :mod:`tests._support` (``STEP``,
``wait_until``, ``free_port``, ``LineReader``, ``Proc``) and are re-exported here.

:class:`LineReader`
    Collects the lines of a text stream (a subprocess pipe) in a background
    thread; ``wait_for(pattern, timeout)`` returns the first matching line (a
    ``re.Match``) or fails the test showing everything read so far; ``mark()``
    and ``wait_for(..., since=mark)`` look only at lines that came later.

:func:`wait_for_line`
    ``wait_for_line(proc, pattern, timeout)``: the same for any ``Popen`` with
    ``stdout=PIPE, text=True`` (a reader is attached to the process on first use).

:class:`RawClient`
    A blocking socket that speaks netlet's wire format by hand (frames,
    handshake, messages), for tests that must send what a well-behaved peer
    never would. It records every byte it sends (``sent``) so a session can be
    replayed.

:func:`arun`
    ``asyncio.run`` with an overall time limit, so a hung test fails quickly.

:func:`frame`
    The bytes of one frame: ``frame(body, *buffers)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest

from tests._support import ADDRESS_LINE, STEP, LineReader, Proc, wait_for_line, wait_until

__all__ = [
    "LOGGING_PRELUDE",
    "STEP",
    "LineReader",
    "RawClient",
    "ServerProcess",
    "arun",
    "frame",
    "hmac_proof",
    "start_server",
    "wait_for_line",
    "wait_until",
]

T = TypeVar("T")

LOGGING_PRELUDE = """\
import logging, sys
logging.basicConfig(stream=sys.stderr, level=logging.DEBUG,
                    format="LOG %(levelname)s %(name)s: %(message)s")
logging.getLogger("asyncio").setLevel(logging.WARNING)
"""
"""Start a server script with this to get every netlet log record on stderr as
``LOG <LEVEL> <logger>: <message>``."""

_HEAD = struct.Struct(">II")


# -- async ------------------------------------------------------------------------


def arun(coro: Coroutine[Any, Any, T], timeout: float = STEP) -> T:
    """Run ``coro`` in a fresh event loop; fail if it takes longer than ``timeout``."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


# -- server subprocesses --------------------------------------------------------------

ServerProcess = Proc
"""A netlet server running in a child process (``stop()`` kills, reaps and closes it)."""


def start_server(script: str | Path, *args: str | Path, workdir: Path,
                 ready: str = ADDRESS_LINE, timeout: float = STEP,
                 env: dict[str, str] | None = None) -> ServerProcess:
    """Start ``script`` (source text, written into ``workdir``, or a path) in a child
    process and wait for its address line. The caller must ``stop()`` it; prefer
    the ``server_process`` fixture, which does."""
    if isinstance(script, str):
        path = Path(tempfile.mkstemp(prefix="server_", suffix=".py", dir=workdir)[1])
        path.write_text(script)
    else:
        path = script
    return Proc.spawn([sys.executable, path, *args], env={**os.environ, **(env or {})},
                      name=path.name).wait_address(ready, timeout)


_RUNTIME_DIR: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """A private XDG_RUNTIME_DIR for the whole run (and every child it starts).

    Heads, workers and banks started without a key keep a per-user key file
    there (see ``netlet.transport.user_key_dir``): the suite must neither read
    nor litter the real one, where a developer's own head may keep its key.
    Set before collection, so modules that copy ``os.environ`` at import see it.
    """
    path = tempfile.mkdtemp(prefix="netlet-test-run-")
    os.chmod(path, 0o700)
    _RUNTIME_DIR.update(path=path, old=os.environ.get("XDG_RUNTIME_DIR"))
    os.environ["XDG_RUNTIME_DIR"] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    path, old = _RUNTIME_DIR.pop("path", None), _RUNTIME_DIR.pop("old", None)
    if path is None:
        return
    if old is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = old
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``server_process(script, *args, ready=..., timeout=..., env=...)``."""
    started: list[ServerProcess] = []

    def start(script: str | Path, *args: str | Path, **options: Any) -> ServerProcess:
        srv = start_server(script, *args, workdir=tmp_path, **options)
        started.append(srv)
        return srv

    try:
        yield start
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory (for unix socket paths)."""
    path = Path(tempfile.mkdtemp(prefix="nl-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node_factory() -> Iterator[Callable[..., Any]]:
    """Factory: ``node_factory(listen=None, **options) -> netlet.Node``, closed afterwards."""
    import netlet

    made: list[netlet.Node] = []

    def make(listen: str | None = None, **options: Any) -> netlet.Node:
        node = netlet.Node(listen, **options)
        made.append(node)
        return node

    try:
        yield make
    finally:
        # Clients first, so servers see their peers leave before they close.
        for node in sorted(made, key=lambda n: n.listen_spec is not None):
            node.close()


@pytest.fixture
def free_mem_address() -> str:
    return f"mem://test-{uuid.uuid4().hex[:12]}"


# -- raw wire access ---------------------------------------------------------------------


def frame(body: bytes, *buffers: bytes) -> bytes:
    """One frame: ``body_len:u32be nbufs:u32be buf_len:u32be*`` then body and buffers."""
    head = _HEAD.pack(len(body), len(buffers)) + b"".join(struct.pack(">I", len(b))
                                                          for b in buffers)
    return head + body + b"".join(buffers)


def hmac_proof(key: bytes, label: bytes, client_hello: bytes, server_hello: bytes) -> bytes:
    """The handshake's HMAC-SHA256 proof over both hello bodies, independently of netlet."""
    msg = (label + b"\0" + hashlib.sha256(client_hello).digest()
           + hashlib.sha256(server_hello).digest())
    return hmac.new(key, msg, hashlib.sha256).digest()


@dataclass
class RawClient:
    """A blocking TCP/unix socket speaking netlet frames by hand."""

    sock: socket.socket
    sent: bytearray = field(default_factory=bytearray)
    node: str = field(default_factory=lambda: uuid.uuid4().hex)
    hello_body: bytes = b""
    """The body of the last hello sent (the server's proof covers it)."""
    _buf: bytearray = field(default_factory=bytearray)

    @classmethod
    def connect(cls, address: str, timeout: float = STEP) -> RawClient:
        if address.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = address[len("unix://"):]
        else:
            host, _, port = address.removeprefix("tcp://").rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (host.strip("[]"), int(port))
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    @property
    def local_port(self) -> int:
        """Our port: the server names us ``tcp://127.0.0.1:<port>`` in its logs."""
        return int(self.sock.getsockname()[1])

    # bytes and frames

    def send_raw(self, data: bytes) -> None:
        self.sent += data
        self.sock.sendall(data)

    def send_frame(self, body: bytes, *buffers: bytes) -> None:
        self.send_raw(frame(body, *buffers))

    def send_msg(self, value: Any) -> None:
        self.send_frame(msgpack.packb(value))

    def _recv_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(f"EOF after {len(self._buf)} of {n} bytes")
            self._buf += chunk
        data, self._buf = bytes(self._buf[:n]), self._buf[n:]
        return data

    def recv_frame(self) -> tuple[bytes, list[bytes]]:
        body_len, nbufs = _HEAD.unpack(self._recv_exact(8))
        lens = struct.unpack(f">{nbufs}I", self._recv_exact(4 * nbufs)) if nbufs else ()
        body = self._recv_exact(body_len)
        return body, [self._recv_exact(n) for n in lens]

    def recv_msg(self) -> Any:
        """The next frame's body as plain msgpack (extension types left as ``ExtType``)."""
        body, _ = self.recv_frame()
        return msgpack.unpackb(body, raw=False, strict_map_key=False)

    def recv_frame_or_eof(self, timeout: float = STEP) -> tuple[bytes, list[bytes]] | None:
        """The next frame, or None if the peer closes first; TimeoutError if neither comes."""
        self.sock.settimeout(timeout)
        try:
            return self.recv_frame()
        except ConnectionError:
            return None
        finally:
            self.sock.settimeout(STEP)

    def still_open(self) -> bool:
        """True if the peer has not closed the connection (checked without waiting)."""
        self.sock.settimeout(0.0)  # with a timeout set, recv would wait for readiness
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:  # nothing to read, and no EOF
            return True
        except ConnectionError:
            return False
        finally:
            self.sock.settimeout(STEP)
        return bool(data)

    def closed_by_peer(self, timeout: float = STEP) -> bool:
        """True when the peer closes (EOF or reset) within ``timeout``, ignoring what it sends."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(STEP)
        return False

    # the handshake

    def hello(self, *, key: bytes | None = None, role: str = "link", pickle: bool = False,
              nonce: bytes | None = None, **extra: Any) -> bytes:
        """Send the client hello; returns our nonce."""
        nonce = nonce if nonce is not None else secrets.token_bytes(32)
        msg = {"netlet": 1, "node": self.node, "address": "", "nonce": nonce,
               "auth": "hmac-sha256" if key else None, "role": role, "pickle": pickle,
               **extra}
        self.hello_body = msgpack.packb(msg)
        self.send_frame(self.hello_body)
        return nonce

    def handshake(self, key: bytes | None = None, *, role: str = "link",
                  pickle: bool = False) -> dict[str, Any]:
        """Run the whole client handshake; returns the server's hello (fails if refused)."""
        self.hello(key=key, role=role, pickle=pickle)
        reply_body, _ = self.recv_frame()
        reply = msgpack.unpackb(reply_body, raw=False)
        assert "error" not in reply, f"server refused the handshake: {reply}"
        if key is not None:
            assert reply["auth"] == "hmac-sha256"
            server_proof = self.recv_msg()["proof"]
            assert server_proof == hmac_proof(key, b"server", self.hello_body, reply_body)
            self.send_msg({"proof": hmac_proof(key, b"client", self.hello_body, reply_body)})
            ok = self.recv_msg()
            assert ok == {"ok": True}, f"server refused our proof: {ok}"
        return dict(reply)
