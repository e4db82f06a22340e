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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from netlet.cluster._functions import function_ref
from netlet.codec import Codec, RemoteRef
from netlet.errors import ConfigError, NetletError, NodeClosed, WorkerLost
from netlet.node import Node, Proxy, expose
from netlet.transport import find_user_key

__all__ = ["Cluster", "Executor"]

log = logging.getLogger("netlet.cluster")

HEAD_NAME = "netlet.head"


class _TaskFuture(concurrent.futures.Future[Any]):
    """A task's future, knowing its task id (a cancel needs it)."""

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id


@expose(concurrent=True)
class _ResultSink:
    """Receives finished tasks from the head (on the client's loop)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    async def results(self, batch: list[list[Any]]) -> None:
        self._cluster._on_results(batch)

    async def started(self, tids: list[str]) -> None:
        """A remote head handed these tasks to workers: their futures are RUNNING."""
        for tid in tids:
            self._cluster._claim(tid)

    def claim(self, tid: str) -> bool:
        """Called by a head on this very node, on its loop, before a task starts."""
        return self._cluster._claim(tid)

    async def event(self, kind: str, node: str, role: str, info: dict[str, Any]) -> None:
        for callback in list(self._cluster._subscribers):
            try:
                callback(kind, node, role, info)
            except Exception:
                log.exception("membership callback failed")


class Cluster:
    """A connection to a cluster's head: run tasks, place objects, use the name service.

    Given no ``node``, ``key`` or ``key_file``, a head of this user on this machine
    is reached with its per-user key (``netlet.transport.find_user_key``).
    """

    def __init__(self, address: str, *, node: Node | None = None, key: bytes | None = None,
                 key_file: str | None = None, allow_pickle: bool = False,
                 max_retries: int = 3) -> None:
        self._own_node = node is None
        if node is None and key is None and key_file is None:
            key = find_user_key(address)  # a head of ours on this machine: its per-user key
        self.node = node or Node(key=key, key_file=key_file, allow_pickle=allow_pickle,
                                 call_timeout=30)
        self.address = address
        transport = self.node.config.transport
        self._pickle = transport.allow_pickle and transport.key is not None
        self.max_retries = max_retries
        self._head = self.node.proxy(address, HEAD_NAME)
        self._sink = _ResultSink(self)
        self._codec = Codec(transport.limits, allow_pickle=self._pickle,
                            ref_decoder=lambda ref: self.node._from_ref(ref, None))
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(8) + ":"  # not the node id: others see that
        self._futures: dict[str, concurrent.futures.Future[Any]] = {}
        self._specs: dict[str, list[Any]] = {}
        self._fn_cache: dict[Any, tuple[str, bytes | None]] = {}
        self._payloads: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._outbox: list[list[Any]] = []
        self._flush_scheduled = False
        self._subscribers: list[Callable[[str, str, str, dict[str, Any]], None]] = []
        self._closed = False
        self._reconnecting = False
        self._jobs: set[asyncio.Task[None]] = set()
        self._head.join(self.node.id, "client", {"pid": os.getpid()}, None)
        self._head_node = self._head._link.peer.node if self._head._link is not None else ""
        self._codec.allow_pickle = self._pickle and self._head_agreed_pickle()
        self.node.on_peer_change(self._peer_changed)

    # -- tasks ----------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any] | str, /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on some worker; returns a future for its result."""
        return self._submit(self._fn(fn), [list(args), kwargs or None], self.max_retries)

    def _fn(self, fn: Callable[..., Any] | str) -> str:
        try:
            cached = self._fn_cache.get(fn)
        except TypeError:
            cached = None
        if cached is None:
            cached = function_ref(fn, allow_pickle=self._pickle)
            try:
                self._fn_cache[fn] = cached
            except TypeError:
                pass
        fn_id, payload = cached
        if payload is not None:
            if not self._head_agreed_pickle():
                raise ConfigError(
                    f"{fn_id} must travel pickled, but the head at {self.address} did not "
                    "agree to pickle (start it with --allow-pickle)")
            self._payloads[fn_id] = payload
        return fn_id

    def _head_agreed_pickle(self) -> bool:
        """False when our link to the head did not agree to pickle (it would refuse)."""
        link = self.node._known_link(self._head._ref)
        return link is None or link.peer.pickle

    def _submit(self, fn_id: str, call: list[Any], retries: int) -> concurrent.futures.Future[Any]:
        if self._closed:
            raise RuntimeError("cannot schedule new tasks after the cluster was closed")
        tid = f"{self._prefix}{next(self._ids)}"
        body = self._codec.encode_value(call)
        fut = _TaskFuture(tid)
        spec = [tid, fn_id, body, retries]
        with self._lock:
            self._futures[tid] = fut
            self._specs[tid] = spec
            self._outbox.append(spec)
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            self.node._get_loop().call_soon_threadsafe(self._flush)
        fut.add_done_callback(self._on_future_done)
        return fut

    def _flush(self) -> None:
        with self._lock:
            batch, self._outbox = self._outbox, []
            self._flush_scheduled = False
        if not batch:
            return
        fns = {s[1]: self._payloads[s[1]] for s in batch if s[1] in self._payloads}
        chunk_fns = {s[1][6:]: self._payloads[s[1][6:]] for s in batch
                     if s[1].startswith("chunk:") and s[1][6:] in self._payloads}
        fns.update(chunk_fns)
        task = asyncio.get_running_loop().create_task(self._send(batch, fns))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _send(self, batch: list[list[Any]], fns: dict[str, bytes]) -> None:
        try:
            await self._head.submit.aio(self.node.id, self._sink, batch, fns)
        except NetletError as e:
            log.warning("submit did not reach the head (%s); will resubmit on reconnect", e)
            self._start_reconnect()

    def _on_future_done(self, fut: concurrent.futures.Future[Any]) -> None:
        if not fut.cancelled() or not isinstance(fut, _TaskFuture):
            return
        tid = fut.task_id
        with self._lock:
            self._futures.pop(tid, None)
            self._specs.pop(tid, None)
            unsent = any(s[0] == tid for s in self._outbox)
            if unsent:  # never sent: dropping it here is the whole cancel
                self._outbox = [s for s in self._outbox if s[0] != tid]
        if not unsent and not self._closed:
            try:
                self._head.cancel.future([tid])
            except NetletError:
                pass

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

    def _on_results(self, batch: list[list[Any]]) -> None:
        for tid, ok, body, error in batch:
            with self._lock:
                fut = self._futures.pop(tid, None)
                self._specs.pop(tid, None)
            if fut is None or fut.done():
                continue  # cancelled meanwhile, or a duplicate
            try:
                if error is not None:
                    fut.set_exception(error if isinstance(error, BaseException)
                                      else WorkerLost(str(error)))
                elif ok:
                    fut.set_result(self._codec.decode_value(body))
                else:
                    fut.set_exception(self._codec.decode_value(body))
            except NetletError as e:  # an undecodable result fails that task only
                fut.set_exception(e)
            except concurrent.futures.InvalidStateError:
                pass

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like ``Executor.map``: results in order; ``chunksize`` items per task."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        fn_id = self._fn(fn)
        items = list(zip(*iterables, strict=False))
        if chunksize == 1:
            futures = [self._submit(fn_id, [list(a), None], self.max_retries) for a in items]
        else:
            futures = [self._submit("chunk:" + fn_id,
                                    [[list(a) for a in items[i:i + chunksize]], None],
                                    self.max_retries)
                       for i in range(0, len(items), chunksize)]
        return self._results(futures, timeout, chunksize > 1)

    @staticmethod
    def _results(futures: list[concurrent.futures.Future[Any]], timeout: float | None,
                 chunked: bool) -> Iterator[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            futures.reverse()
            while futures:
                left = None if deadline is None else deadline - time.monotonic()
                value = futures.pop().result(left)
                if chunked:
                    yield from value
                else:
                    yield value
        finally:
            for f in futures:
                f.cancel()

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
        delay = 0.05
        try:
            while not self._closed:
                try:
                    self._head.join(self.node.id, "client", {"pid": os.getpid()}, None)
                    with self._lock:
                        pending = list(self._specs)
                    unknown = set(self._head.resume(self.node.id, self._sink, pending))
                    if self._head._link is not None:
                        self._head_node = self._head._link.peer.node
                    with self._lock:
                        again = [self._specs[t] for t in pending
                                 if t in unknown and t in self._specs]
                    if again:
                        fns = {s[1]: self._payloads[s[1]] for s in again if s[1] in self._payloads}
                        self._head.submit(self.node.id, self._sink, again, fns)
                        log.info("resubmitted %d task(s) the head did not know", len(again))
                    return
                except (NetletError, OSError) as e:
                    log.info("head %s unreachable (%s); retrying in %.1f s", self.address, e, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            self._reconnecting = False

    # -- names, actors, membership ----------------------------------------------------

    def register(self, name: str, obj: Any) -> RemoteRef:
        """Publish an object (exposed, a proxy or a channel) under a cluster-wide name."""
        ref = obj.__netlet_ref__() if hasattr(obj, "__netlet_ref__") else self.node.serve(obj)
        self._head.register(name, ref, self.node.id)
        return ref

    def lookup(self, name: str) -> Any:
        """The object registered as ``name`` (a proxy or channel), or None."""
        ref = self._head.lookup(name)
        return None if ref is None else self.node._from_ref(ref.__netlet_ref__(), None)

    def actor(self, name: str) -> Proxy:
        proxy = self.lookup(name)
        if not isinstance(proxy, Proxy):
            raise ConfigError(f"no object is registered as {name!r}")
        return proxy

    def names(self) -> dict[str, list[str]]:
        return dict(self._head.names())

    def unregister(self, name: str) -> bool:
        return bool(self._head.unregister(name))

    def spawn(self, cls: type | str, *args: Any, name: str | None = None,
              restart: str | None = None, **kwargs: Any) -> Proxy:
        """Create an exposed object on a worker, named cluster-wide; returns a proxy.

        ``restart="on-failure"`` recreates it (with the same arguments) on another
        worker when its worker dies; the name moves with it (look it up again).
        """
        fn_id = self._fn(cls)
        fns = {fn_id: self._payloads[fn_id]} if fn_id in self._payloads else {}
        body = self._codec.encode_value([list(args), kwargs or None])
        name = name or f"actor-{next(self._ids)}-{self.node.id[:6]}"
        ref = self._head.spawn(fn_id, body, name, restart, fns, self.node.id)
        return self.node.proxy_for(ref.__netlet_ref__())

    def subscribe(self, callback: Callable[[str, str, str, dict[str, Any]], None]) -> None:
        """``callback(kind, node, role, info)`` on every join and leave."""
        self._subscribers.append(callback)
        if len(self._subscribers) == 1:
            self._head.subscribe(self._sink)

    def status(self) -> dict[str, Any]:
        return dict(self._head.status())

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
            self._specs.clear()
        for f in futures:
            if (cancel_pending and f.cancel()) or f.done():
                continue
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                f.set_exception(NodeClosed(
                    "the cluster client was closed before this task's result came"))
        try:
            self._head.with_options(timeout=2).leave(self.node.id)
        except (NetletError, OSError):
            pass
        if self._own_node:
            self.node.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` on a netlet cluster.

    With no address it starts an embedded cluster (a head in this process and
    ``max_workers`` local worker processes, default: the machine's cores);
    with an address it uses that cluster. Code written for
    ``ProcessPoolExecutor`` works unchanged.
    """

    def __init__(self, address: str | None = None, max_workers: int | None = None, *,
                 key_file: str | None = None, allow_pickle: bool = False,
                 max_retries: int = 3) -> None:
        from netlet.cluster._embedded import EmbeddedCluster

        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be greater than 0")
        self._embedded: EmbeddedCluster | None = None
        if address is None:
            self._embedded = EmbeddedCluster(max_workers or os.cpu_count() or 1)
            self._cluster = Cluster(self._embedded.address, node=self._embedded.node,
                                    max_retries=max_retries)
        else:
            self._cluster = Cluster(address, key_file=key_file, allow_pickle=allow_pickle,
                                    max_retries=max_retries)
        self._shutdown = False
        self._shutdown_lock = threading.Lock()

    @property
    def cluster(self) -> Cluster:
        return self._cluster

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[Any]:
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            return self._cluster.submit(fn, *args, **kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            return self._cluster.map(fn, *iterables, timeout=timeout, chunksize=chunksize)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._shutdown_lock:
            if self._shutdown:
                return
            self._shutdown = True
        if cancel_futures:
            with self._cluster._lock:
                futures = list(self._cluster._futures.values())
            for f in futures:
                f.cancel()
        with self._cluster._lock:
            futures = list(self._cluster._futures.values())

        def finish() -> None:
            concurrent.futures.wait(futures)
            self._cluster.close(cancel_pending=False)
            if self._embedded is not None:
                self._embedded.close()

        if wait:
            finish()
        else:  # like ProcessPoolExecutor: return now, let submitted work complete
            threading.Thread(target=finish, name="netlet-executor-shutdown", daemon=True).start()
