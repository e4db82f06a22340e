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

import asyncio
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from netlet.clock import REAL_CLOCK, Backoff, Clock
from netlet.cluster._code import CodeCache, split_code
from netlet.cluster._functions import CannotImport, FunctionCache, run_chunk
from netlet.cluster._member_messages import Joined, JoinInfo, TaskOutput
from netlet.cluster._messages import Done, Job
from netlet.cluster._output import Capture
from netlet.cluster._worker_address import host_of, listen_address
from netlet.cluster._worker_book import ARM, SEND, WorkerBook
from netlet.cluster._worker_traffic import WorkerTraffic
from netlet.codec import Codec, RemoteRef, short
from netlet.errors import (
    ConfigError,
    EncodeError,
    HandshakeError,
    NetletConnectionError,
    NetletError,
    NodeClosed,
    ProtocolError,
)
from netlet.node import Node, expose
from netlet.transport import TLSConfig, find_user_key

__all__ = ["Worker", "WorkerControl", "WorkerOptions", "worker_key"]

log = logging.getLogger("netlet.cluster")

HEAD_NAME = "netlet.head"


@expose
class WorkerControl:
    """What the head may ask of a worker: host an object (``cluster.spawn``)."""

    def __init__(self, node: Node, functions: FunctionCache, codec: Codec,
                 code: CodeCache, worker: Worker | None = None) -> None:
        self._node = node
        self._functions = functions
        self._codec = codec
        self._code = code
        self._worker = worker

    def create(self, cls: str, body: bytes, name: str, functions: dict[str, bytes]) -> RemoteRef:
        self._functions.add_payloads(functions)
        with self._code.active(split_code(cls.removeprefix("chunk:"))[1]):
            factory = self._functions.get(cls)
            args, kwargs = self._codec.decode_value(body)[:2]
            obj = factory(*args, **(kwargs or {}))
        return self._node.serve(obj, name)

    def drop(self, name: str) -> None:
        self._node.unserve(name)

    def give_back(self, epoch: int, tids: list[str]) -> list[str]:
        """The head takes back tasks this worker has not started; returns those given."""
        if self._worker is None or not isinstance(tids, list):
            return []
        return self._worker.give_back([t for t in tids if isinstance(t, str)])


EXIT_KEY_REFUSED = 3
"""A worker's exit status when the head refused its key: restarting it cannot help."""
EXIT_CANNOT_LISTEN = 4
"""A worker's exit status when its --listen address cannot be bound (busy port...)."""
EXIT_ADDRESS_CHANGED = 5
"""A worker's exit status when its host's address changed: ``netlet worker`` starts
another, which listens on the new one (this one's listener is bound to a lost address)."""


class KeyRefused(SystemExit):
    """The head refused this worker's key (``EXIT_KEY_REFUSED``); printed, not a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_KEY_REFUSED)
        self.message = message


class WorkerOptions:
    def __init__(self, head: str, *, key: bytes | None = None, allow_pickle: bool = False,
                 credit: int | str = 1, listen: str | None = None,
                 exit_with_head: bool = False, name: str | None = None,
                 code_dir: str | None = None, clock: Clock = REAL_CLOCK,
                 old_keys: tuple[bytes, ...] = (), tls: TLSConfig | None = None) -> None:
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
        self.clock = clock
        """The worker's node's clock: its heartbeats and its retries to join wait on it."""
        self.old_keys = old_keys  # a key rotation's keys still accepted (PROTOCOL.md 4.3)
        self.tls = tls  # then the head link and the worker's own listener are TLS


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


class Worker(WorkerTraffic):
    """Runs tasks on the thread that calls ``run``; its node's loop does all the talking.

    The two share the worker's book (``_worker_book``: tasks received and not
    started, the one running, started notices and results not yet reported,
    and the decisions on them) under one lock; sending is ``WorkerTraffic``'s part.
    """

    def __init__(self, opts: WorkerOptions) -> None:
        self.opts = opts
        key = worker_key(opts.head, opts.key)
        listen = opts.listen or listen_address(opts.head)
        self._bound_host = host_of(listen) if listen.startswith("tcp://") else None
        self.node = Node(listen=listen, key=key, old_keys=opts.old_keys, tls=opts.tls,
                         allow_pickle=opts.allow_pickle, call_timeout=None, clock=opts.clock)
        self.clock = opts.clock
        self.functions = FunctionCache(self._pickle_refusal)
        # Pickled arguments too only once the head agreed (see _pickle_refusal).
        self.codec = Codec(self.node.config.transport.limits, allow_pickle=False,
                           ref_decoder=lambda ref: self.node.from_ref(ref))
        self.code = CodeCache(self._fetch_code, self._code_size, parent=opts.code_dir)
        self._capture = Capture(opts.clock)
        self.control = WorkerControl(self.node, self.functions, self.codec, self.code, self)
        self.node.serve(self.control, "netlet.worker")
        self.head = self.node.proxy(opts.head, HEAD_NAME, timeout=10)
        self.stop = threading.Event()
        self.done = 0
        self.failed = 0
        self._lock = threading.Condition()
        limits = self.node.config.transport.limits
        self.book: WorkerBook[Job, Done] = WorkerBook(
            _result_size,
            (limits.max_frame // 4, max(1, limits.max_buffers // 2), limits.oob_threshold),
            opts.credit)
        self._took: float | None = None  # the last task's run time (None: not measured)
        self._jobs: set[asyncio.Task[None]] = set()
        self._joining: asyncio.Future[None] | None = None
        self._beating: asyncio.Task[None] | None = None
        self.exit_reason: str | SystemExit = ""
        """Why the worker stopped, if it must say so (the head refused it)."""

    # -- joining --------------------------------------------------------------------

    def join(self) -> None:
        """Join the head, retrying with backoff while it is away."""
        if self.stop.is_set():
            return
        joining = self._join()
        try:
            done = asyncio.run_coroutine_threadsafe(joining, self.node.get_loop())
        except RuntimeError:  # the node's loop closed: the worker is stopping
            joining.close()
            return
        done.result()

    async def _join(self) -> None:
        """Join again, or share the join already going (a failed pull and a heartbeat
        the head did not know often ask at once: two joins would be two epochs, and
        the first epoch's hand-out would be refused, its tasks run twice)."""
        joining = self._joining
        if joining is None or joining.done():
            joining = self._joining = asyncio.ensure_future(self._join_once())
        await asyncio.shield(joining)

    async def _join_once(self) -> None:
        backoff = Backoff(0.05, 2.0)
        while not self.stop.is_set():
            if self._address_moved():
                return
            try:
                info = JoinInfo(str(self.opts.name), socket.gethostname(), os.getpid(),
                                self.node.address or "", os.cpu_count() or 1)
                reply = await self.head.join.aio(self.node.id, "worker", info, self.control)
                if type(reply) is not Joined or reply.epoch is None:
                    raise ProtocolError(f"join is answered with a Joined record with an epoch, "
                                        f"not {short(reply)}")
                self.codec.allow_pickle = self._pickle_refusal() is None
                with self._lock:
                    self.book.rejoined(reply.epoch)
                log.info("worker %s joined %s", self.node.id[:8], self.opts.head)
                return
            except HandshakeError as e:
                self._fatal(KeyRefused(f"the head refused this worker: {e}"))
                return
            except (NetletConnectionError, NetletError, OSError) as e:
                if self.opts.exit_with_head:
                    self._fatal()  # an embedded worker ends with its head
                    return
                delay = backoff.next()
                log.warning("cannot join %s (%s); retrying in %.1f s", self.opts.head, e, delay)
                await self.clock.sleep(delay)

    def _address_moved(self) -> bool:
        """Whether this host's address towards the head is no longer the one we listen on.

        Objects placed on this worker would then be unreachable (the head and its
        clients dial the old address), so the process stops and ``netlet worker``
        starts another on the new address. Only for a listen address of our own
        choosing (no ``--listen``) and when the new one is known.
        """
        if self.opts.listen or self.opts.exit_with_head or self._bound_host is None:
            return False
        try:
            now = host_of(listen_address(self.opts.head))
        except OSError:
            return False  # no route to the head right now: keep trying as before
        if now == self._bound_host:
            return False
        log.warning("this host's address changed (%s -> %s): restarting this worker to "
                    "listen on the new one", self._bound_host, now)
        self._fatal(SystemExit(EXIT_ADDRESS_CHANGED))
        return True

    def terminate(self) -> None:
        """SIGTERM (what ``netlet worker`` sends its workers) leaves by the front door:
        the head is told, and the shipped code's directory is removed. A running task
        is interrupted; otherwise the loop stops at once (an exception raised inside
        netlet's own calls could be taken for a lost head)."""
        if self.book.running is not None:
            raise SystemExit(0)
        self._fatal(SystemExit(0))

    def _fatal(self, why: str | SystemExit = "") -> None:
        """Stop the worker (``why``: an error, or the exit, to leave with)."""
        self.exit_reason = why
        self.stop.set()
        with self._lock:
            self.book.stopped()
            self._lock.notify_all()

    def _pickle_refusal(self) -> str | None:
        """Why this worker may not unpickle what comes from its head (None: all agreed).

        The head link's handshake agreed to pickle only if this worker and the head
        both allow it and both proved they hold the key; the head in turn only
        forwards pickled functions from clients whose own link agreed.
        """
        if not self.opts.allow_pickle:
            return (f"worker {self.opts.name} was not started with --allow-pickle "
                    "(pickle needs the client, the head and every worker to agree)")
        peer = self.node.peer_of(self.head.__netlet_ref__())
        if peer is None or not peer.authenticated:
            return "the connection to the head is not authenticated with the cluster key"
        if not peer.pickle:
            return "the head did not agree to pickle (start it with --allow-pickle)"
        return None

    def _code_link_ok(self) -> None:
        peer = self.node.peer_of(self.head.__netlet_ref__())
        if peer is None or not peer.authenticated:
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

    # -- the running thread's side --------------------------------------------------

    def run(self) -> None:
        self.join()
        self._on_loop(self._start_heartbeats)
        self._flush()  # the first pull
        book, lock = self.book, self._lock
        try:
            while True:
                with lock:
                    while not book.local and not self.stop.is_set():
                        lock.wait(0.5)
                    if self.stop.is_set():
                        break
                    task = book.take_next()
                    assert task is not None
                    step = book.step
                    started = book.take_started() if step == SEND else None
                    epoch = book.epoch
                if started:  # tasks here take a while: its future turns RUNNING at once
                    self._report(epoch, [], started)
                elif step == ARM:
                    self._arm()  # its started notice, unless its result comes first
                tid, fn_id, body, lease = task
                result = self._run_one(tid, fn_id, body, lease)
                now = self.clock.monotonic()
                with lock:
                    if result is None:  # not importable here: handed back to the head
                        step = book.unrunnable(tid)
                    else:
                        step = book.finished(result, now, self._took)
                if step == SEND:
                    self._flush()  # here: the loop may not get the GIL for a while
                elif step == ARM:
                    self._arm()
        finally:
            self.stop.set()
            with lock:
                book.stopped()
            self._on_loop(self._stop_heartbeats)
        if isinstance(self.exit_reason, SystemExit):
            raise self.exit_reason
        if self.exit_reason:
            raise SystemExit(self.exit_reason)

    def _on_loop(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the node's loop, unless that loop has closed (we are stopping)."""
        try:
            self.node.get_loop().call_soon_threadsafe(call)
        except RuntimeError:
            pass

    def _start_heartbeats(self) -> None:
        """On the loop: the heartbeat task is made there, and only while the worker runs.

        A coroutine made on the running thread and handed over would, if the loop
        closed first, never be awaited (an unraisable warning at its collection).
        """
        if not self.stop.is_set():
            self._beating = asyncio.get_running_loop().create_task(self._heartbeats())

    def _stop_heartbeats(self) -> None:
        if self._beating is not None:
            self._beating.cancel()

    def _run_one(self, tid: str, fn_id: str, body: bytes, lease: str) -> Done | None:
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
            self._took = None  # it did not run
            return (tid, False, self.codec.encode_value(
                ConfigError(f"{self._whoami()}: {e}")), lease, "ConfigError", None)

    def _run_here(self, tid: str, fn_id: str, chunked: bool, body: bytes,
                  lease: str) -> Done:
        t0 = time.perf_counter()
        try:
            fn = self.functions.get(fn_id)  # CannotImport: not a failure of the task
            args, kwargs, *opts = self.codec.decode_value(body)
            if not (opts and isinstance(opts[0], dict) and opts[0].get("out")):
                value = run_chunk(fn, args) if chunked else fn(*args, **(kwargs or {}))
            else:  # what it prints goes to its client
                self._capture.start(lambda lines: self.head.task_output.oneway(
                    self.node.id, TaskOutput([tid] * len(lines), [lease] * len(lines),
                                             [s for s, _ in lines], [t for _, t in lines])))
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
        self._took = time.perf_counter() - t0
        room = self.node.config.transport.limits.max_frame - 65536  # a report's own fields
        try:
            out = self.codec.encode_value(value)
            if len(out) > room:  # the report would be refused, and sent again, forever
                raise EncodeError(f"{len(out)} bytes, over the {room} a message carries "
                                  "(max_frame)")
        except (EncodeError, RecursionError) as e:
            value = EncodeError(f"the result of task {tid} cannot be sent: {e}")
            ok, out = False, self.codec.encode_value(value)
        if ok:
            self.done += 1
            return (tid, ok, out, lease, None, None)
        self.failed += 1
        return (tid, ok, out, lease, type(value).__name__, _traceback_text(value))

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            self.book.stopped()
            self._lock.notify_all()
        try:
            self.head.with_options(timeout=1).leave.oneway(self.node.id)
        except (NetletError, OSError):
            pass
        self.node.close()
        self.code.close()


def _result_size(r: Done) -> int:
    """What a result weighs in a message, for cutting reports within the frame limits."""
    return 64 + len(r[2])


def _traceback_text(error: Any) -> str:
    """The failure as text for the head's dashboard (bounded; the client gets the error)."""
    try:
        text = "".join(traceback.format_exception(error)) if isinstance(error, BaseException) \
            else ""
    except Exception:  # a hostile __str__: the type is still told
        text = type(error).__name__
    return text[-8192:]
