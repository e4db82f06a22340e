"""Serving the dashboard: uvicorn on a thread of its own, started and stopped from code.

``Dashboard(...)`` checks the security rules before it binds (see
``_security.py``), serves on ``host:port`` (port 0: any free one) and gives
the ``url`` to open (with the token, when there is one).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from typing import Any
from urllib.parse import quote

import uvicorn

from netlet.errors import ConfigError
from netlet.web._app import build_app
from netlet.web._limits import (
    HEADER_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_STREAMS,
    guarded_protocol,
    quiet_floods,
)
from netlet.web._model import DashboardModel
from netlet.web._security import Guard, check_token, derive_token, is_loopback, new_token
from netlet.web._sources import HeadSource, Provider

__all__ = ["DEFAULT_PORT", "Dashboard", "parse_listen"]

DEFAULT_PORT = 8340
log = logging.getLogger("netlet.web")

_frozen_by = 0
"""Dashboards started in this process that keep objects frozen (see ``_freeze``)."""
_frozen_lock = threading.Lock()


def _freeze() -> bool:
    """Keep the objects alive now out of every later full garbage collection.

    The web stack (FastAPI, pydantic, Starlette, Jinja2, uvicorn) leaves some
    45,000 objects behind its imports, there for good; each full collection
    walks them all, and a busy head (a task's records are containers) runs
    several full collections a second: that walk was most of what an attached
    dashboard cost a head (D1). Frozen objects are still freed when their last
    reference goes; only a reference cycle among them waits until the last
    dashboard stops (``_thaw``). A process that froze objects itself is left
    alone. Returns whether this dashboard holds the freeze.
    """
    global _frozen_by
    with _frozen_lock:
        if _frozen_by == 0 and gc.get_freeze_count():
            return False  # the program's own freeze (before a fork): not ours to manage
        gc.collect()  # garbage now is not kept for the dashboard's lifetime
        gc.freeze()
        _frozen_by += 1
        return True


def _thaw() -> None:
    global _frozen_by
    with _frozen_lock:
        _frozen_by -= 1
        if _frozen_by == 0:
            gc.unfreeze()


def parse_listen(spec: str) -> tuple[str, int]:
    """``127.0.0.1:8340``, ``[::1]:8340``, ``localhost`` or ``:8340`` (loopback)."""
    spec = spec.removeprefix("http://").removeprefix("tcp://").rstrip("/")
    host, sep, port = spec.rpartition(":") if not spec.endswith("]") else (spec, "", "")
    if not sep:
        host, port = spec, str(DEFAULT_PORT)
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"dashboard address {spec!r}: expected HOST:PORT, "
                          "like 127.0.0.1:8340") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"dashboard port {number} is out of range")
    return host, number


class Dashboard:
    """The web dashboard of a head (``head``) and of applications (``providers``).

    ``token``: required on every request; None derives one from ``key`` when the
    dashboard binds beyond loopback or has ``control`` on (and refuses to start
    if it has no key to derive it from). ``header_timeout``, ``max_connections``
    and ``max_streams`` bound what web clients can make it hold (``_limits``).
    ``gc_freeze``: keep the objects alive at its start out of full garbage
    collections while it runs (``_freeze``).
    """

    def __init__(self, head: HeadSource | None = None, providers: list[Provider] | None = None,
                 *, listen: str = f"127.0.0.1:{DEFAULT_PORT}", token: str | None = None,
                 key: bytes | None = None, control: bool = False, title: str = "netlet",
                 interval: float = 1.0, header_timeout: float = HEADER_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, max_streams: int = MAX_STREAMS,
                 gc_freeze: bool = True) -> None:
        host, port = parse_listen(listen)
        loopback = is_loopback(host)
        token = check_token(token)
        if token is None and (control or not loopback):
            if key is None:
                if not loopback:
                    raise ConfigError(
                        f"the dashboard would listen on {host}, beyond loopback, with no "
                        "token: give --dashboard-token (or a cluster key to derive it from)")
                token = new_token()
            else:
                token = derive_token(key)
        self.host, self.token, self.control = host, token, control
        self.model = DashboardModel(head, list(providers or []), interval)
        self.app = build_app(self.model, token=token, control=control, title=title,
                             max_streams=max_streams)
        self._server = uvicorn.Server(uvicorn.Config(
            Guard(self.app, token=token, loopback=loopback), host=host, port=port,
            log_level="warning", access_log=False, lifespan="on",
            timeout_graceful_shutdown=2, ws="none", proxy_headers=False,
            server_header=False, http=guarded_protocol(header_timeout, max_connections)))
        quiet_floods()  # after uvicorn's config, which sets up its loggers
        self._thread: threading.Thread | None = None
        self._gc_freeze, self._frozen = gc_freeze, False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"http://{host}:{self.port}/"
        return base + (f"?token={quote(self.token, safe='')}" if self.token else "")

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 15.0) -> Dashboard:
        """Bind and serve on a background thread; returns once it accepts connections."""
        failure: list[BaseException] = []

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await self._server.serve()

        def run() -> None:
            try:
                asyncio.run(serve())
            except BaseException as e:  # a bind failure, a SystemExit from uvicorn
                failure.append(e)

        self._thread = threading.Thread(target=run, name="netlet-dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if failure or not self._thread.is_alive():
                # uvicorn logs why and exits (SystemExit(3)): its code is no reason.
                why = failure[0] if failure and not isinstance(failure[0], SystemExit) else ""
                raise ConfigError(f"the dashboard could not listen on {self.host}:{self.port}"
                                  + (f": {why}" if str(why) else
                                     " (is the host an address of this machine, is the "
                                     "port taken?)"))
            if time.monotonic() > deadline:
                raise ConfigError("the dashboard did not start in time")
            time.sleep(0.02)
        servers: Any = self._server.servers
        self.port = servers[0].sockets[0].getsockname()[1]
        self._frozen = self._gc_freeze and _freeze()
        return self

    def stop(self) -> None:
        if self._loop is not None:  # end the live streams now, not after a grace period
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.app.state.stop.set)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self.model.head is not None:
            self.model.head.close()
        if self._frozen:
            self._frozen = False
            _thaw()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
