"""An embedded cluster: a head in this process and worker processes on this machine.

What ``netlet.Executor()`` with no address starts. The head listens on a unix
socket in a private directory; the workers are children that get a fresh
cluster key on stdin (never in argv or the environment), may exchange pickled
functions with us because both ends hold that key, and exit when we do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from netlet.clock import Backoff
from netlet.cluster._head import Head, HeadConfig
from netlet.cluster._member_messages import MemberEvent
from netlet.node import Node
from netlet.transport import generate_key

__all__ = ["EmbeddedCluster"]

log = logging.getLogger("netlet.cluster")


class _Joined:
    """The embedded workers that joined and did not leave: a local subscriber of the head."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._workers: set[str] = set()

    async def event(self, event: MemberEvent) -> None:
        if event.role != "worker":
            return
        with self._cond:
            if event.kind == "join":
                self._workers.add(event.node)
            else:
                self._workers.discard(event.node)
            self._cond.notify_all()

    def wait(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._workers) >= n, timeout)


_SUN_PATH = 107
"""Bytes a unix socket's path may have (``sun_path`` holds 108, with its NUL)."""
_LONGEST_NAME = 24
"""Room for the longest socket name made in the directory ("/w1023-99999999.sock")."""


def _socket_dir() -> str:
    """A private directory short enough for our sockets' paths: the temporary
    directory's, or one under /tmp when that is too deep (a CI's or container's)."""
    made = tempfile.mkdtemp(prefix="netlet-")
    if len(os.fsencode(made)) + _LONGEST_NAME > _SUN_PATH:
        os.rmdir(made)
        made = tempfile.mkdtemp(prefix="netlet-", dir="/tmp")
    os.chmod(made, 0o700)
    return made


class EmbeddedCluster:
    def __init__(self, workers: int, *, credit: int | str = "auto",
                 config: HeadConfig | None = None) -> None:
        self._dir = _socket_dir()
        self._started = 0  # workers started so far: each listens on a new name
        self.key = generate_key()
        self.node = Node(listen=f"unix://{self._dir}/head.sock", key=self.key,
                         allow_pickle=True, call_timeout=None)
        self.head = Head(self.node, config)
        self.node.serve(self.head, "netlet.head")
        self.head.start()
        self._joined = _Joined()  # subscribed before any worker starts: none is missed
        loop = self.node.get_loop()
        asyncio.run_coroutine_threadsafe(self.head.subscribe(self._joined), loop).result()
        assert self.node.address is not None
        self.address = self.node.address
        self.procs: list[subprocess.Popen[bytes]] = []
        self._closing = threading.Event()
        self._lock = threading.Lock()
        for _ in range(workers):
            self.add_worker(credit)

    def wait_workers(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` workers have joined the head (and not left); False on timeout.

        Told by the head as each joins, so it returns as soon as the last one
        does, with no polling and no status call.
        """
        return self._joined.wait(n, timeout)

    def add_worker(self, credit: int | str = "auto") -> subprocess.Popen[bytes]:
        """Start one more worker process; it is replaced whenever it dies."""
        with self._lock:
            slot = len(self.procs)
            proc = self._start(slot, credit)
            self.procs.append(proc)
        threading.Thread(target=self._keep, args=(slot, credit), daemon=True,
                         name=f"netlet-embedded-worker-{slot}").start()
        return proc

    def _start(self, slot: int, credit: int | str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "netlet.cluster", "--join", self.address,
             "--key-stdin", "--pickle", "--embedded", "--credit", str(credit),
             "--listen", f"unix://{self._dir}/w{slot}-{self._next_start()}.sock",
             "--code-dir", self._dir],  # shipped code goes when the directory does
            stdin=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(self.key.hex().encode() + b"\n")
        proc.stdin.flush()  # stdin stays open: its EOF tells the worker we are gone
        return proc

    def _next_start(self) -> int:
        self._started += 1  # under self._lock
        return self._started

    def _keep(self, slot: int, credit: int | str) -> None:
        """Replace the worker in ``slot`` when it dies, as multiprocessing.Pool does.

        The head reruns what it was running (up to each task's max_retries), so a
        task that kills its worker every time ends as WorkerLost, not a crash loop;
        a worker that dies at once again and again is restarted ever more slowly.
        """
        clock = self.node.config.clock
        backoff = Backoff(0.1, 5.0)
        while True:
            proc = self.procs[slot]
            started = clock.monotonic()
            code = proc.wait()
            if self._closing.is_set():
                return
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if clock.monotonic() - started < 2:
                delay = backoff.next()
            else:
                delay = 0.0
                backoff.reset()
            log.warning("embedded worker %d (pid %d) exited with %s; starting another%s",
                        slot, proc.pid, code, f" in {delay:.1f} s" if delay else "")
            if clock.wait(self._closing.wait, delay):
                return
            with self._lock:
                if self._closing.is_set():
                    return
                self.procs[slot] = self._start(slot, credit)

    def close(self) -> None:
        if self._closing.is_set():
            return  # closed, or being closed by another thread
        self._closing.set()
        self.head.stop()
        with self._lock:
            procs = list(self.procs)
        for proc in procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.node.close()
        shutil.rmtree(self._dir, ignore_errors=True)
