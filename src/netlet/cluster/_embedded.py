"""An embedded cluster: a head in this process and worker processes on this machine.

What ``netlet.Executor()`` with no address starts. The head listens on a unix
socket in a private directory; the workers are children that get a fresh
cluster key on stdin (never in argv or the environment), may exchange pickled
functions with us because both ends hold that key, and exit when we do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

from netlet.cluster._head import Head, HeadConfig
from netlet.node import Node
from netlet.transport import generate_key

__all__ = ["EmbeddedCluster"]


class EmbeddedCluster:
    def __init__(self, workers: int, *, credit: int | str = "auto",
                 config: HeadConfig | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="netlet-")
        os.chmod(self._dir, 0o700)
        self.key = generate_key()
        self.node = Node(listen=f"unix://{self._dir}/head.sock", key=self.key,
                         allow_pickle=True, call_timeout=None)
        self.head = Head(self.node, config)
        self.node.serve(self.head, "netlet.head")
        self.head.start()
        assert self.node.address is not None
        self.address = self.node.address
        self.procs: list[subprocess.Popen[bytes]] = []
        for _ in range(workers):
            self.add_worker(credit)

    def add_worker(self, credit: int | str = "auto") -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "netlet.cluster", "--join", self.address,
             "--key-stdin", "--pickle", "--embedded", "--credit", str(credit),
             "--listen", f"unix://{self._dir}/worker-{len(self.procs)}.sock"],
            stdin=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(self.key.hex().encode() + b"\n")
        proc.stdin.flush()  # stdin stays open: its EOF tells the worker we are gone
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        self.head.stop()
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.node.close()
        shutil.rmtree(self._dir, ignore_errors=True)
