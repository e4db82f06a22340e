"""``netlet.Executor``: a ``concurrent.futures.Executor`` on a cluster, embedded or remote.

It keeps the standard library's promises, not only its method names: a
cancelled future is notified (``wait`` and ``as_completed`` see it), ``map``
holds no result it already yielded, and the interpreter waits for pending
futures at exit, as it does for ``ThreadPoolExecutor`` and
``ProcessPoolExecutor`` (a ``submit`` after that point raises RuntimeError),
then stops the embedded workers and removes their directory.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from netlet.cluster._client import Cluster
from netlet.cluster._cpus import usable_cpus
from netlet.cluster._embedded import EmbeddedCluster
from netlet.cluster._env import env_head
from netlet.cluster._head import Head
from netlet.errors import ConfigError
from netlet.transport import TLSConfig

__all__ = ["Executor"]

WORKER_START_TIMEOUT = 60.0
"""Seconds an embedded executor waits for its worker processes to join."""

_live: set[Executor] = set()
_live_lock = threading.Lock()
_exiting = False


def _python_exit() -> None:
    """At interpreter exit (before non-daemon threads are joined): finish every executor."""
    global _exiting
    with _live_lock:
        _exiting = True
        executors = list(_live)
    for executor in executors:
        executor.shutdown(wait=True)


# What concurrent.futures uses: runs before threading joins threads and before
# atexit hooks, while netlet's loop threads still run.
threading._register_atexit(_python_exit)  # type: ignore[attr-defined]  # noqa: SLF001 stdlib hook


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` on a netlet cluster.

    With no address it starts an embedded cluster (a head in this process and
    ``max_workers`` local worker processes, default: the CPUs this process may use);
    with an address it uses that cluster. Code written for
    ``ProcessPoolExecutor`` works unchanged, ``Executor(4)`` included.
    A task whose worker dies runs again elsewhere, up to ``max_retries``
    times, then fails with ``netlet.WorkerLost`` (where ProcessPoolExecutor
    raises ``BrokenProcessPool`` and breaks the pool).

    ``working_dir``, ``py_modules`` and ``excludes`` ship your code to the
    workers (a keyed cluster only; the embedded one always is).
    ``log_to_driver`` sends what tasks print back to this process (default:
    on when embedded, unprefixed like a process pool's children; off for a
    remote cluster, where lines carry ``log_prefix``, ``"({worker}) "``).
    ``dashboard`` (embedded only, needs ``netlet[web]``): serve the web dashboard
    on loopback (``True``: a free port; or ``"127.0.0.1:8340"``) and print its URL.
    """

    def __init__(self, address: str | int | None = None, max_workers: int | None = None, *,
                 key_file: str | None = None, tls: TLSConfig | None = None,
                 allow_pickle: bool = False,
                 max_retries: int = 3, working_dir: str | os.PathLike[str] | None = None,
                 py_modules: Iterable[Any] = (), excludes: Iterable[str] = (),
                 log_to_driver: bool | None = None, log_prefix: str | None = None,
                 dashboard: bool | str = False) -> None:
        if isinstance(address, int):
            if max_workers is not None:
                raise TypeError("Executor(N) is max_workers=N; give the address as a string")
            address, max_workers = None, address  # ProcessPoolExecutor(4) spelled our way
        if address is None and max_workers is None:
            address = env_head()  # $NETLET_HEAD: the cluster this environment names
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be greater than 0")
        if tls is not None and address is None:
            raise ConfigError("tls= is for a remote head (Executor('tcp://...', tls=...)); an "
                              "embedded cluster's workers are this machine's own processes")
        if dashboard and address is not None:
            raise ConfigError("dashboard= watches an embedded cluster; for a running head "
                              "use `netlet head --dashboard` or `netlet dashboard --head`")
        with _live_lock:
            if _exiting:
                raise RuntimeError("cannot start an executor after interpreter shutdown")
        self._embedded: EmbeddedCluster | None = None
        if address is None:
            self._embedded = EmbeddedCluster(max_workers or usable_cpus())
            try:
                self._cluster = Cluster(
                    self._embedded.address, node=self._embedded.node, max_retries=max_retries,
                    working_dir=working_dir, py_modules=py_modules, excludes=excludes,
                    log_to_driver=True if log_to_driver is None else log_to_driver,
                    log_prefix="" if log_prefix is None else log_prefix)
                self._wait_for_workers(len(self._embedded.procs))
            except BaseException:
                self._embedded.close()
                raise
        else:
            self._cluster = Cluster(
                address, key_file=key_file, tls=tls, allow_pickle=allow_pickle,
                max_retries=max_retries,
                working_dir=working_dir, py_modules=py_modules, excludes=excludes,
                log_to_driver=bool(log_to_driver),
                log_prefix="({worker}) " if log_prefix is None else log_prefix)
        self._dashboard: Any = None
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        self._finisher: threading.Thread | None = None
        with _live_lock:
            _live.add(self)
        if dashboard:
            self._dashboard = self._open_dashboard(dashboard)

    def _wait_for_workers(self, n: int) -> None:
        """Return once the embedded workers joined, as a process pool's processes are there.

        The first tasks wait for them anyway; waiting here makes a worker that
        cannot start an error now, not a task that never runs, and makes
        ``shutdown(cancel_futures=True)`` right after submits find work running.
        """
        assert self._embedded is not None
        if not self._embedded.wait_workers(n, WORKER_START_TIMEOUT):
            raise ConfigError(
                f"the embedded workers did not join within {WORKER_START_TIMEOUT:.0f} s "
                f"(see their errors above; can `{sys.executable} -m netlet.cluster` run?)")

    @property
    def cluster(self) -> Cluster:
        return self._cluster

    def _open_dashboard(self, dashboard: bool | str) -> Any:
        """Serve the web dashboard of the embedded head (``netlet[web]``); prints its URL.

        The web layer sits above this one: it is loaded by name, as a plugin,
        never imported here.
        """
        assert self._embedded is not None
        try:
            web = importlib.import_module("netlet.web")
        except ImportError as e:
            self.shutdown(wait=False)
            raise ConfigError(f"dashboard= needs the web extra: pip install 'netlet[web]' "
                              f"({e})") from None
        addr = dashboard if isinstance(dashboard, str) else "127.0.0.1:0"
        board = web.Dashboard(web.LocalHead(self._embedded.head), listen=addr).start()
        print(f"netlet dashboard at {board.url}", file=sys.stderr, flush=True)
        return board

    @property
    def dashboard_url(self) -> str | None:
        """Where the dashboard is served (``dashboard=``), or None."""
        return self._dashboard.url if self._dashboard is not None else None

    @property
    def head(self) -> Head | None:
        """The embedded head (None for a remote cluster): what a dashboard watches."""
        return self._embedded.head if self._embedded is not None else None

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[Any]:
        with self._shutdown_lock:
            self._check_open()
            return self._cluster.submit(fn, *args, **kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        with self._shutdown_lock:
            self._check_open()
            return self._cluster.map(fn, *iterables, timeout=timeout, chunksize=chunksize)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; pending futures still complete (unless ``cancel_futures``).

        ``wait=False`` returns at once and the work completes in the background;
        the interpreter still waits for it at exit.
        """
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_futures:
                self._cluster.cancel_queued()
            if self._finisher is None:
                self._finisher = threading.Thread(target=self._finish, daemon=True,
                                                  name="netlet-executor-shutdown")
                self._finisher.start()
            finisher = self._finisher
        if wait:
            finisher.join()

    def terminate_workers(self) -> None:
        """Stop now, as ``ProcessPoolExecutor.terminate_workers`` (Python 3.14) does.

        Queued futures are cancelled and running ones fail with ``NodeClosed``; an
        embedded cluster's worker processes are terminated, their running tasks
        abandoned. On a running cluster (an address) only this client leaves: the
        workers are the cluster's. What a Ctrl-C handler calls to exit at once.
        """
        with self._shutdown_lock:
            self._shutdown = True
        self._cluster.close(cancel_pending=True)
        self._release()

    def _finish(self) -> None:
        try:
            self._cluster.wait_pending()
            self._cluster.close(cancel_pending=False)
        finally:
            self._release()

    def _release(self) -> None:
        """What the executor holds beside its client: the dashboard, the embedded cluster."""
        if self._dashboard is not None:
            self._dashboard.stop()
        if self._embedded is not None:
            self._embedded.close()
        with _live_lock:
            _live.discard(self)
