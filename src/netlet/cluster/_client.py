"""The client side of a cluster: ``Cluster`` (submit, map, names, actors) and ``Executor``.

Submitting costs no round trip: the client names its tasks, encodes their
arguments once, and sends everything submitted in one turn of its loop as one
message. Results come back through a sink object on the client's own node,
over its own connection (the client need not listen). If the head goes away
the client keeps its futures, reconnects with backoff, and resubmits whatever
the (possibly restarted) head does not know, so no submitted task is lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from netlet.clock import Backoff, sleep_blocking
from netlet.cluster._batches import batches
from netlet.cluster._client_names import ClusterNamesMixin
from netlet.cluster._code import MAX_PACKAGE, Package, build_packages, upload_packages
from netlet.cluster._env import ENV_HEAD, env_head, env_key_file
from netlet.cluster._member_messages import JoinInfo, OutputLines
from netlet.cluster._messages import Finished, Spec, Tasks
from netlet.cluster._ordered import ordered_results
from netlet.cluster._output import write_output
from netlet.cluster._payloads import Payloads, main_module_hint
from netlet.cluster._sink import ResultSink, Subscriber
from netlet.codec import Codec
from netlet.errors import (
    CallCancelled,
    ConfigError,
    EncodeError,
    NetletError,
    NodeClosed,
)
from netlet.node import Node
from netlet.transport import TLSConfig, find_user_key

__all__ = ["Cluster"]

log = logging.getLogger("netlet.cluster")

HEAD_NAME = "netlet.head"


class _TaskFuture(concurrent.futures.Future[Any]):
    """A task's future, knowing its task id (a cancel needs it)."""

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id


class Cluster(ClusterNamesMixin):
    """A connection to a cluster's head: run tasks, place objects, use the name service.

    Given no ``address``, ``$NETLET_HEAD`` names the head; given no ``node``, ``key``
    or ``key_file``, ``$NETLET_KEY_FILE`` names the key file, and without it a head
    of this user on this machine is reached with its per-user key
    (``netlet.transport.find_user_key``).

    ``working_dir`` and ``py_modules`` ship your code to the workers (see
    :mod:`netlet.cluster._code`): packaged now, so make a new ``Cluster`` to
    ship an edit. ``log_to_driver`` streams what tasks print to this process's
    stdout and stderr, each line behind ``log_prefix`` (``{worker}``,
    ``{host}``, ``{pid}`` and ``{node}`` are filled in).
    """

    def __init__(self, address: str | None = None, *, node: Node | None = None,
                 key: bytes | None = None, key_file: str | None = None,
                 tls: TLSConfig | None = None, allow_pickle: bool = False,
                 max_retries: int = 3,
                 working_dir: str | os.PathLike[str] | None = None,
                 py_modules: Iterable[Any] = (), excludes: Iterable[str] = (),
                 max_code_bytes: int = MAX_PACKAGE, log_to_driver: bool = False,
                 log_prefix: str = "({worker}) ") -> None:
        if type(max_retries) is not int or max_retries < 0:  # the head would refuse each submit
            raise ConfigError(f"max_retries is a whole number >= 0, not {max_retries!r}")
        self._packages: list[Package] = build_packages(working_dir, py_modules, excludes,
                                                       max_code_bytes)
        self._code_suffix = ("@" + ",".join(p.ref for p in self._packages)
                             if self._packages else "")
        self._log_to_driver = log_to_driver
        self._log_prefix = log_prefix
        self._own_node = node is None
        address = env_head(address)
        if address is None:
            raise ConfigError(f"Cluster() needs the head's address, or ${ENV_HEAD} set to it")
        if node is None and key is None:
            key_file = env_key_file(key_file)
        if node is None and key is None and key_file is None:
            key = find_user_key(address)  # a head of ours on this machine: its per-user key
        if node is not None and tls is not None:
            raise ConfigError("tls= configures the node Cluster makes; give it to your own "
                              "node instead (Node(tls=...))")
        self.node = node or Node(key=key, key_file=key_file, allow_pickle=allow_pickle,
                                 tls=tls, call_timeout=30)
        self.address = address
        transport = self.node.config.transport
        self._pickle = transport.allow_pickle and transport.key is not None
        self.max_retries = max_retries
        self._head = self.node.proxy(address, HEAD_NAME)
        self._subscribers: list[Subscriber] = []
        self._sink = ResultSink(self._on_results, self._claim, self._on_output,
                                self._subscribers)
        self._codec = Codec(transport.limits, allow_pickle=self._pickle,
                            ref_decoder=lambda ref: self.node.from_ref(ref))
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(8) + ":"  # not the node id: others see that
        self._futures: dict[str, concurrent.futures.Future[Any]] = {}
        self._specs: dict[str, Spec] = {}
        self._unheard_cancels: set[str] = set()
        self._fns = Payloads(self._pickle)
        self._lock = threading.Lock()
        self._outbox: list[Spec] = []
        self._flush_scheduled = False
        self._closed = False
        self._reconnecting = False
        self._jobs: set[asyncio.Task[None]] = set()
        self._info = JoinInfo("", socket.gethostname(), os.getpid(), "", 0)
        self._head.join(self.node.id, "client", self._info, None)
        self._head_node = self._head_peer()
        self._codec.allow_pickle = self._pickle and self._head_agreed_pickle()
        try:
            self._upload_code()
        except BaseException:
            self.close()
            raise
        self.node.on_peer_change(self._peer_changed)

    def _upload_code(self) -> None:
        """Send the head the packages it lacks (each once per hash, in chunks)."""
        upload_packages(self.node, self._head, self._packages)

    # -- tasks ----------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any] | str, /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on some worker; returns a future for its result."""
        fn_id, payload = self._ref(fn)
        return self._submit(fn_id, payload, [list(args), kwargs or None], self.max_retries)

    def _ref(self, fn: Callable[..., Any] | str) -> tuple[str, bytes | None]:
        """``fn`` as it is now (no stale copy, no reference kept); a pickled one only
        when the head agreed to pickle, which it would otherwise refuse."""
        fn_id, payload = self._fns.ref(fn)
        fn_id += self._code_suffix  # which version of the shipped code it runs with
        if payload is not None and not self._head_agreed_pickle():
            raise ConfigError(
                f"{fn_id} must travel pickled, but the head at {self.address} did not "
                "agree to pickle (start it with --allow-pickle)")
        return fn_id, payload

    def _head_agreed_pickle(self) -> bool:
        """False when our link to the head did not agree to pickle (it would refuse)."""
        peer = self.node.peer_of(self._head.__netlet_ref__())
        return peer is None or peer.pickle

    def _head_peer(self) -> str:
        """The head's node id, once a call reached it ("" before)."""
        peer = self.node.peer_of(self._head.__netlet_ref__())
        return "" if peer is None else peer.node

    def _submit(self, fn_id: str, payload: bytes | None, call: list[Any],
                retries: int) -> concurrent.futures.Future[Any]:
        if self._closed:
            raise RuntimeError("cannot schedule new tasks after the cluster was closed")
        tid = f"{self._prefix}{next(self._ids)}"
        if self._log_to_driver:
            call = [*call, {"out": 1}]  # the worker sends what the task prints
        body = self._codec.encode_value(call)
        fut = _TaskFuture(tid)
        spec = (tid, fn_id, body, retries)
        self._fns.hold(fn_id, payload)
        with self._lock:
            self._futures[tid] = fut
            self._specs[tid] = spec
            self._outbox.append(spec)
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            self.node.get_loop().call_soon_threadsafe(self._flush)
        fut.add_done_callback(self._on_future_done)
        return fut

    def _flush(self) -> None:
        with self._lock:
            batch, self._outbox = self._outbox, []
            self._flush_scheduled = False
        if not batch:
            return
        for part in self._parts(batch):
            task = asyncio.get_running_loop().create_task(self._send(part))
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    def _parts(self, specs: list[Spec]) -> list[list[Spec]]:
        limits = self.node.config.transport.limits
        return batches(specs, lambda spec: 64 + len(spec[2]), limits.max_frame // 4,
                       max(1, limits.max_buffers // 2), limits.oob_threshold,
                       max(1, limits.max_array // 2))

    def _slices(self, ids: list[str]) -> list[list[str]]:
        """Task ids cut to what a list in one message may hold (``Limits.max_array``)."""
        n = max(1, self.node.config.transport.limits.max_array // 2)
        return [ids[i:i + n] for i in range(0, len(ids), n)]

    def _unsendable(self, part: list[Spec], error: EncodeError) -> None:
        """Tasks too large for one message: sending again cannot help, so they fail."""
        for spec in part:
            with self._lock:
                fut, known = self._futures.pop(spec[0], None), self._specs.pop(spec[0], None)
            if known is not None:
                self._fns.release(spec[1])
            if fut is not None:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    fut.set_exception(EncodeError(f"cannot send the task to the head: {error}"))

    async def _send(self, part: list[Spec]) -> None:
        try:
            await self._head.submit.aio(self.node.id, self._sink, Tasks.of(part),
                                        self._fns.for_specs(part))
        except EncodeError as e:
            self._unsendable(part, e)
        except NetletError as e:
            if self._closed:
                return  # closing: the head forgets what we sent when we leave
            log.warning("submit did not reach the head (%s); will resubmit on reconnect", e)
            self._start_reconnect()

    def _on_future_done(self, fut: concurrent.futures.Future[Any]) -> None:
        if not fut.cancelled() or not isinstance(fut, _TaskFuture):
            return
        # As the standard executors do: wait() and as_completed() count a cancelled
        # future as done only once it was notified.
        fut.set_running_or_notify_cancel()
        tid = fut.task_id
        with self._lock:
            self._futures.pop(tid, None)
            spec = self._specs.pop(tid, None)
            unsent = any(s[0] == tid for s in self._outbox)
            if unsent:  # never sent: dropping it here is the whole cancel
                self._outbox = [s for s in self._outbox if s[0] != tid]
        if spec is None:
            return  # the head dropped it already (cancel_queued, close)
        self._fns.release(spec[1])
        if not unsent and not self._closed:
            self._tell_cancelled([tid])

    def _tell_cancelled(self, tids: list[str]) -> None:
        """Until the head heard it, a reconnect says it again: a head restarted from
        --state still holds the tasks, and would run them."""
        self._unheard(tids, add=True)
        with contextlib.suppress(NetletError):
            self._head.cancel.future(tids).add_done_callback(lambda f: self._unheard(
                tids, add=f.cancelled() or f.exception() is not None))

    def _unheard(self, tids: Iterable[str], *, add: bool) -> None:
        with self._lock:
            (self._unheard_cancels.update if add else self._unheard_cancels.difference_update)(tids)

    def cancel_queued(self) -> int:
        """Cancel every task no worker has taken yet; returns how many.

        The head decides (one round trip): a task it already handed to a worker
        is not cancelled, even if the message saying so is still on its way.
        """
        with self._lock:
            pending = [t for t, f in self._futures.items() if not f.running() and not f.done()]
        if not pending:
            return 0
        try:
            self._drain_sends(10.0)  # the head knows them all, and assigned what it could
            head = self._head.with_options(timeout=10)
            dropped = {t for part in self._slices(pending) for t in head.cancel(part)}
        except (NetletError, OSError):
            dropped = set(pending)  # the head is away: told when we reconnect
            self._unheard(pending, add=True)
        cancelled = 0
        for tid in pending:
            if tid not in dropped:
                continue
            with self._lock:
                fut = self._futures.get(tid)
                if fut is None or fut.running():
                    continue
                spec = self._specs.pop(tid, None)
            if spec is not None:
                self._fns.release(spec[1])
            if fut.cancel():
                cancelled += 1
        return cancelled

    def _drain_sends(self, timeout: float) -> None:
        """Wait until what was submitted so far reached the head (or failed to)."""
        async def drain() -> None:
            self._flush()
            if self._jobs:
                await asyncio.wait(list(self._jobs), timeout=timeout)

        coro = drain()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.node.get_loop())
        except RuntimeError:  # the node (shared, e.g. an embedded cluster's) closed first
            coro.close()
            return
        future.result(timeout + 1)

    def wait_pending(self) -> None:
        """Block until every task submitted so far has finished or was cancelled."""
        with self._lock:
            futures = list(self._futures.values())
        concurrent.futures.wait(futures)

    def _claim(self, tid: str) -> bool:
        """Mark a task's future RUNNING; False if it was cancelled (the task must not run)."""
        fut = self._futures.get(tid)
        if fut is None:
            return False  # cancelled and forgotten, or already answered
        if fut.running():
            return True
        if fut.cancelled():
            return False
        try:
            return fut.set_running_or_notify_cancel()
        except RuntimeError:  # finished meanwhile (a late duplicate): nothing to run
            return False

    def _on_output(self, lines: OutputLines) -> None:
        if not self._log_to_driver:
            return
        ours = [(s, t) for tid, s, t in zip(lines.tids, lines.streams, lines.texts, strict=True)
                if tid in self._futures]
        if ours:
            write_output(self._log_prefix, lines.worker, ours)

    def _on_results(self, batch: Iterable[Finished]) -> None:
        for tid, ok, body, error in batch:
            with self._lock:
                fut = self._futures.pop(tid, None)
                spec = self._specs.pop(tid, None)
            if spec is not None:
                self._fns.release(spec[1])
            if fut is None or fut.done():
                continue  # cancelled meanwhile, or a duplicate
            if isinstance(error, CallCancelled) and fut.cancel():
                continue  # an operator cancelled it before it started
            try:
                if error is not None:
                    fut.set_exception(error)
                elif ok:
                    fut.set_result(self._codec.decode_value(body or b""))
                else:
                    exc = self._codec.decode_value(body or b"")
                    if isinstance(exc, BaseException):
                        main_module_hint(exc)
                    fut.set_exception(exc)
            except NetletError as e:  # an undecodable result fails that task only
                fut.set_exception(e)
            except concurrent.futures.InvalidStateError:
                pass

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like ``Executor.map``: results in order; ``chunksize`` items per task."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        fn_id, payload = self._ref(fn)
        items = list(zip(*iterables, strict=False))
        if chunksize == 1:
            futures = [self._submit(fn_id, payload, [list(a), None], self.max_retries)
                       for a in items]
        else:
            futures = [self._submit("chunk:" + fn_id, payload,
                                    [[list(a) for a in items[i:i + chunksize]], None],
                                    self.max_retries)
                       for i in range(0, len(items), chunksize)]
        return ordered_results(self.node.config.clock, futures, timeout, chunksize > 1)

    # -- reconnecting ------------------------------------------------------------------

    def _peer_changed(self, node: str, connected: bool) -> None:
        if not connected and node == self._head_node and not self._closed:
            self._start_reconnect()

    def _start_reconnect(self) -> None:
        if self._reconnecting or self._closed:
            return
        self._reconnecting = True
        threading.Thread(target=self._reconnect, name="netlet-cluster-reconnect",
                         daemon=True).start()

    def _reconnect(self) -> None:
        backoff = Backoff(0.05, 2.0)
        try:
            while not self._closed:
                try:
                    self._head.join(self.node.id, "client", self._info, None)
                    self._upload_code()  # a restarted head has none of it
                    with self._lock:
                        pending = list(self._specs)
                    unknown = {t for ids in self._slices(pending) or [[]]
                               for t in self._head.resume(self.node.id, self._sink, ids)}
                    self._head_node = self._head_peer() or self._head_node
                    with self._lock:
                        again = [self._specs[t] for t in pending
                                 if t in unknown and t in self._specs]
                    for part in self._parts(again):  # as many messages as a submit takes
                        try:
                            self._head.submit(self.node.id, self._sink, Tasks.of(part),
                                              self._fns.for_specs(part))
                        except EncodeError as e:
                            self._unsendable(part, e)
                    if again:
                        log.info("resubmitted %d task(s) the head did not know", len(again))
                    with self._lock:  # cancelled while the head was away
                        unheard = list(self._unheard_cancels)
                    for told in self._slices(unheard):
                        self._head.cancel(told)
                        self._unheard(told, add=False)
                    return
                except (NetletError, OSError) as e:
                    delay = backoff.next()
                    log.info("head %s unreachable (%s); retrying in %.1f s", self.address, e, delay)
                    sleep_blocking(self.node.config.clock, delay)
        finally:
            self._reconnecting = False

    # -- closing ------------------------------------------------------------------------

    def close(self, cancel_pending: bool = True) -> None:
        """Leave the cluster. Queued tasks are cancelled; a running task's future fails
        with ``NodeClosed``, since its result can no longer reach us (never left pending)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            futures = list(self._futures.values())
            self._futures.clear()
            specs = list(self._specs.values())
            self._specs.clear()
        for spec in specs:
            self._fns.release(spec[1])
        for f in futures:
            if (cancel_pending and f.cancel()) or f.done():
                continue
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                f.set_exception(NodeClosed(
                    "the cluster client was closed before this task's result came"))
        try:
            # Submits still on their way first: the head takes our leave as the end
            # of all our tasks, and would queue a later one for nobody.
            self._drain_sends(2.0)
            self._head.with_options(timeout=2).leave(self.node.id)
        except (NetletError, OSError, TimeoutError):
            pass
        if self._own_node:
            self.node.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

