"""A worker: joins a head, pulls tasks with a credit, runs them, reports results.

Tasks run on the worker's main thread, one at a time, while the node's loop
thread keeps the connection and heartbeats alive. The worker asks for at most
``credit`` tasks beyond the one it runs, so it never hoards the queue; with
``credit="auto"`` (the embedded cluster's) it asks for enough to cover one
round trip to the head, and none beyond the running one for tasks far longer
than a round trip or not yet measured. A lost head is rejoined with
backoff, for ever, unless the worker belongs to an embedded cluster.

Run as ``python -m netlet.cluster --join ADDR`` (what ``netlet worker``
and the embedded cluster start), reading the cluster key from stdin if asked.
A worker never runs without a key (its listener would let anyone place code
on it): given none, it uses the per-user key of a head on this machine, and
refuses to start if there is none.
"""

from __future__ import annotations

import argparse
import collections
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import uuid
from typing import Any

from netlet.cluster._code import CodeCache, split_code
from netlet.cluster._functions import CannotImport, FunctionCache, run_chunk
from netlet.cluster._output import Capture
from netlet.codec import Codec, RemoteRef
from netlet.errors import (
    ConfigError,
    EncodeError,
    HandshakeError,
    NetletConnectionError,
    NetletError,
    NodeClosed,
    NoSuchObject,
)
from netlet.node import Node, expose
from netlet.transport import find_user_key

__all__ = ["WorkerControl", "WorkerOptions", "run_worker"]

log = logging.getLogger("netlet.cluster")

HEAD_NAME = "netlet.head"
_REPORT_BATCH = 64
"""Results a worker holds back at most while a pull is out (they go in one message)."""
_REPORT_DELAY = 0.002
"""Seconds a finished result may wait for the next pull before it is sent alone."""


@expose
class WorkerControl:
    """What the head may ask of a worker: host an object (``cluster.spawn``)."""

    def __init__(self, node: Node, functions: FunctionCache, codec: Codec,
                 code: CodeCache) -> None:
        self._node = node
        self._functions = functions
        self._codec = codec
        self._code = code

    def create(self, cls: str, body: bytes, name: str, functions: dict[str, bytes]) -> RemoteRef:
        self._functions.add_payloads(functions)
        with self._code.active(split_code(cls.removeprefix("chunk:"))[1]):
            factory = self._functions.get(cls)
            args, kwargs = self._codec.decode_value(body)[:2]
            obj = factory(*args, **(kwargs or {}))
        return self._node.serve(obj, name)

    def drop(self, name: str) -> None:
        self._node.unserve(name)


class WorkerOptions:
    def __init__(self, head: str, *, key: bytes | None = None, allow_pickle: bool = False,
                 credit: int | str = 1, listen: str | None = None,
                 exit_with_head: bool = False, name: str | None = None,
                 code_dir: str | None = None) -> None:
        if credit != "auto" and (not isinstance(credit, int) or credit < 0):
            raise ConfigError("credit is a non-negative int or 'auto'")
        self.head = head
        self.key = key
        self.allow_pickle = allow_pickle
        self.credit = credit
        self.listen = listen
        self.exit_with_head = exit_with_head
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.code_dir = code_dir
        """Where shipped code is extracted (in a private directory made there)."""


def _listen_address(head: str) -> str:
    """Listen where the head can reach us: loopback for a local head, else our LAN side."""
    if head.startswith(("unix://", "mem://")):
        return f"unix:///tmp/netlet-worker-{uuid.uuid4().hex[:12]}.sock"
    host = head.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1"):
        return "tcp://127.0.0.1:0"
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((host, 9))  # no packet is sent; this only picks the route
        return f"tcp://{probe.getsockname()[0]}:0"
    finally:
        probe.close()


def worker_key(head: str, key: bytes | None) -> bytes:
    """The key a worker of ``head`` uses: the one given, else the head's per-user key."""
    if key is not None:
        return key
    found = find_user_key(head)
    if found is None:
        raise ConfigError(
            f"no cluster key for the head at {head}: a worker never runs without one. "
            "Give the head's key file (--key-file), or, for a head on this machine, start "
            "the head as this same user first (it writes a per-user key that workers find)")
    return found


class Worker:
    def __init__(self, opts: WorkerOptions) -> None:
        self.opts = opts
        key = worker_key(opts.head, opts.key)
        self.node = Node(listen=opts.listen or _listen_address(opts.head), key=key,
                         allow_pickle=opts.allow_pickle, call_timeout=None)
        self.functions = FunctionCache(self._pickle_refusal)
        # Pickled arguments too only once the head agreed (see _pickle_refusal).
        self.codec = Codec(self.node.config.transport.limits, allow_pickle=False,
                           ref_decoder=lambda ref: self.node._from_ref(ref, None))
        self.code = CodeCache(self._fetch_code, self._code_size, parent=opts.code_dir)
        self._capture = Capture()
        self.control = WorkerControl(self.node, self.functions, self.codec, self.code)
        self.node.serve(self.control, "netlet.worker")
        self.head = self.node.proxy(opts.head, HEAD_NAME, timeout=10)
        self.stop = threading.Event()
        self.done = 0
        self.failed = 0
        self._rtt = 0.001
        self._task_time: float | None = None  # unknown: assume long until measured

    def join(self) -> None:
        """Join the head, retrying with backoff while it is away."""
        delay = 0.05
        while not self.stop.is_set():
            try:
                info = {"host": socket.gethostname(), "pid": os.getpid(), "name": self.opts.name,
                        "address": self.node.address or "", "cores": os.cpu_count() or 1}
                self.head.join(self.node.id, "worker", info, self.control)
                self.codec.allow_pickle = self._pickle_refusal() is None
                log.info("worker %s joined %s", self.node.id[:8], self.opts.head)
                return
            except HandshakeError as e:
                raise SystemExit(f"the head refused this worker: {e}") from None
            except (NetletConnectionError, NetletError, OSError) as e:
                if self.opts.exit_with_head:
                    raise SystemExit(f"head {self.opts.head} unreachable: {e}") from None
                log.warning("cannot join %s (%s); retrying in %.1f s", self.opts.head, e, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 2.0)

    def _pickle_refusal(self) -> str | None:
        """Why this worker may not unpickle what comes from its head (None: all agreed).

        The head link's handshake agreed to pickle only if this worker and the head
        both allow it and both proved they hold the key; the head in turn only
        forwards pickled functions from clients whose own link agreed.
        """
        if not self.opts.allow_pickle:
            return (f"worker {self.opts.name} was not started with --allow-pickle "
                    "(pickle needs the client, the head and every worker to agree)")
        link = self.node._known_link(self.head._ref)
        if link is None or not link.peer.authenticated:
            return "the connection to the head is not authenticated with the cluster key"
        if not link.peer.pickle:
            return "the head did not agree to pickle (start it with --allow-pickle)"
        return None

    def _code_link_ok(self) -> None:
        link = self.node._known_link(self.head._ref)
        if link is None or not link.peer.authenticated:
            raise ConfigError("refusing shipped code: the connection to the head is not "
                              "authenticated with the cluster key")

    def _code_size(self, digest: str) -> int:
        self._code_link_ok()
        return int(self.head.with_options(timeout=30).code_size(self.node.id, digest))

    def _fetch_code(self, digest: str, offset: int, length: int) -> bytes:
        self._code_link_ok()
        data = self.head.with_options(timeout=60).code_get(self.node.id, digest, offset, length)
        if not isinstance(data, bytes):
            raise ConfigError("the head sent code that is not bytes")
        return data

    def _whoami(self) -> str:
        return (f"worker {self.opts.name} (host {socket.gethostname()}, pid {os.getpid()}, "
                f"node {self.node.id[:8]})")

    def _want(self) -> int:
        credit = self.opts.credit
        if credit == "auto":
            # Prefetch what covers a round trip to the head, and nothing for tasks far
            # longer than one: that costs them under 5 % and lets a worker that joins a
            # moment later take its share instead of finding it held here.
            ratio = 0.0 if self._task_time is None else self._rtt / max(self._task_time, 1e-6)
            credit = 0 if ratio < 0.05 else min(64, math.ceil(ratio))
        return int(credit) + 1

    def heartbeat_loop(self) -> None:
        while not self.stop.wait(0.5):
            try:
                t0 = time.perf_counter()
                known = self.head.with_options(timeout=2).heartbeat(
                    self.node.id, {"done": self.done, "failed": self.failed})
                # Heartbeats are answered at once: they measure the round trip that
                # credit="auto" covers (a pull may wait at the head for work).
                self._rtt = 0.8 * self._rtt + 0.2 * (time.perf_counter() - t0)
                if not known:
                    self.join()
            except (NetletError, OSError):
                if self.opts.exit_with_head:
                    self.stop.set()

    def run(self) -> None:
        self.join()
        threading.Thread(target=self.heartbeat_loop, name="netlet-heartbeat",
                         daemon=True).start()
        local: collections.deque[list[Any]] = collections.deque()
        done: list[list[Any]] = []  # results not yet reported
        done_since = 0.0
        pending = None
        while not self.stop.is_set():
            want = self._want()
            if pending is None and (done or len(local) <= want // 2):
                # Results ride with the next pull: one round trip per task, not two; and
                # with a large credit, refills come in batches rather than one by one.
                try:
                    pending = self.head.with_options(timeout=None).exchange.future(
                        self.node.id, done, max(0, want - len(local)))
                    done = []
                except (NetletError, OSError):
                    pending = None
            if pending is not None and (not local or pending.done()):
                try:
                    batch, fns = pending.result()
                except NoSuchObject:  # the head forgot us (restarted): join again
                    pending = None
                    self.join()
                    continue
                except (NetletConnectionError, NodeClosed, OSError) as e:
                    pending = None
                    if self.opts.exit_with_head or self.stop.is_set():
                        return
                    log.warning("lost the head (%s); rejoining", e)
                    self.stop.wait(0.1)
                    self.join()
                    continue
                pending = None
                self.functions.add_payloads(fns)
                local.extend(batch)
                continue
            if not local:
                self.stop.wait(0.1)  # the pull could not even be sent: do not spin
                continue
            tid, fn_id, body, lease = local.popleft()
            if not done:
                done_since = time.monotonic()
            result = self._run_one(tid, fn_id, body, lease)
            if result is None:
                continue  # not importable here: handed back to the head
            done.append(result)
            # A pull is out (and may wait at the head for work): results do not wait for
            # it when we are about to idle, have many, or have held them a while.
            if pending is not None and (not local or len(done) >= _REPORT_BATCH
                                        or time.monotonic() - done_since > _REPORT_DELAY):
                try:
                    self.head.report.oneway(self.node.id, done)
                except (NetletError, OSError) as e:
                    log.warning("could not report %s (%s); the head will rerun it", tid, e)
                done = []

    def _run_one(self, tid: str, fn_id: str, body: bytes, lease: str) -> list[Any] | None:
        """Run one task; its result carries the lease it was handed out with.

        None when this worker cannot import the task's function: the head is
        told (``unrunnable``) and gives the task to a worker that can.
        """
        chunked = fn_id.startswith("chunk:")
        _, refs = split_code(fn_id[6:] if chunked else fn_id)
        try:
            if not refs and not self.code.current:
                return self._run_here(tid, fn_id[6:] if chunked else fn_id, chunked, body, lease)
            with self.code.active(refs):
                return self._run_here(tid, fn_id[6:] if chunked else fn_id, chunked, body, lease)
        except CannotImport as e:
            fix = ("the code shipped with it does not provide it: is the module inside "
                   "working_dir (and not excluded), or listed in py_modules?" if refs else
                   "ship your code with the client (Executor(..., working_dir='.') or "
                   "py_modules=[module]) or install the module on this worker")
            why = f"{self._whoami()}: {e}; {fix}"
            try:
                self.head.unrunnable.oneway(self.node.id, tid, lease, why)
            except (NetletError, OSError) as err:
                log.warning("could not hand back %s (%s); the head will rerun it", tid, err)
            return None
        except (NetletConnectionError, NodeClosed, OSError) as e:
            # Fetching its code lost the head: the head reruns what this link held.
            log.warning("lost the head while fetching the code of %s (%s)", tid, e)
            return None
        except NetletError as e:  # the task's code could not be fetched: that task fails
            self.failed += 1
            return [tid, False, self.codec.encode_value(
                ConfigError(f"{self._whoami()}: {e}")), lease, "ConfigError"]

    def _run_here(self, tid: str, fn_id: str, chunked: bool, body: bytes,
                  lease: str) -> list[Any]:
        t0 = time.perf_counter()
        try:
            fn = self.functions.get(fn_id)  # CannotImport: not a failure of the task
            args, kwargs, *opts = self.codec.decode_value(body)
            if not (opts and isinstance(opts[0], dict) and opts[0].get("out")):
                value = run_chunk(fn, args) if chunked else fn(*args, **(kwargs or {}))
            else:  # what it prints goes to its client
                self._capture.start(lambda lines: self.head.task_output.oneway(
                    self.node.id, [[tid, lease, s, t] for s, t in lines]))
                try:
                    value = run_chunk(fn, args) if chunked else fn(*args, **(kwargs or {}))
                finally:
                    self._capture.stop()
            ok = True
        except CannotImport:
            raise
        except BaseException as e:  # the task's own failure goes back to its caller
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            value, ok = e, False
        took = time.perf_counter() - t0
        self._task_time = took if self._task_time is None else 0.8 * self._task_time + 0.2 * took
        try:
            out = self.codec.encode_value(value)
        except (EncodeError, RecursionError) as e:
            value = EncodeError(f"the result of task {tid} cannot be sent: {e}")
            ok, out = False, self.codec.encode_value(value)
        if ok:
            self.done += 1
            return [tid, ok, out, lease]
        self.failed += 1
        return [tid, ok, out, lease, type(value).__name__]

    def close(self) -> None:
        self.stop.set()
        try:
            self.head.with_options(timeout=1).leave.oneway(self.node.id)
        except (NetletError, OSError):
            pass
        self.node.close()
        self.code.close()


def run_worker(opts: WorkerOptions) -> None:
    worker = Worker(opts)
    try:
        worker.run()
    finally:
        worker.close()


def _watch_parent() -> None:
    """Embedded workers exit when their parent goes away (stdin reaches EOF).

    Ctrl-C in a terminal reaches the whole process group: an embedded worker
    leaves it to its parent, which decides when the workers stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        # The raw descriptor, not sys.stdin: a daemon thread blocked inside a
        # buffered reader aborts the interpreter at exit.
        try:
            while os.read(0, 1024):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=watch, name="netlet-parent-watch", daemon=True).start()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (what ``netlet worker`` sends its workers) leaves by the front door:
    the head is told, and the shipped code's directory is removed."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m netlet.cluster")
    p.add_argument("--join", required=True)
    p.add_argument("--key-stdin", action="store_true", help="read the cluster key (hex) on stdin")
    p.add_argument("--pickle", action="store_true")
    p.add_argument("--credit", default="1")
    p.add_argument("--listen")
    p.add_argument("--embedded", action="store_true", help="exit with the head and the parent")
    p.add_argument("--code-dir", help="extract shipped code under this directory")
    a = p.parse_args(argv)
    key = bytes.fromhex(sys.stdin.readline().strip()) if a.key_stdin else None
    if a.embedded:
        _watch_parent()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    credit: int | str = a.credit if a.credit == "auto" else int(a.credit)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(message)s")
    try:
        run_worker(WorkerOptions(a.join, key=key, allow_pickle=a.pickle, credit=credit,
                                 listen=a.listen, exit_with_head=a.embedded,
                                 code_dir=a.code_dir))
    except KeyboardInterrupt:
        pass
    except ConfigError as e:  # no key, a bad key directory: say what to do, no traceback
        raise SystemExit(f"netlet worker: {e}") from None

