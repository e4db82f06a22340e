"""The dashboard's controllers: the routes of pages, the event stream, ``/api/v1`` and
``/metrics``. Models are the snapshots (``_model.py``), views the templates."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from markupsafe import escape
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from netlet.cluster import (
    ClusterEvent,
    HeadStatistics,
    NameInfo,
    TaskInfo,
    TaskPage,
    WorkerStats,
)
from netlet.errors import CallTimeout, NetletConnectionError, NodeClosed
from netlet.node import LinkStatistics, NodeStatistics
from netlet.web import metrics as _metrics
from netlet.web._limits import MAX_STREAMS, StreamSlots
from netlet.web._model import DashboardModel, RatePoint
from netlet.web._security import csrf_token
from netlet.web._views import environment, render

__all__ = ["build_app"]

State = Literal["", "queued", "assigned", "running", "done", "failed"]
Text = Annotated[str, Query(max_length=200)]
PAGE = 50
FORM_MAX = 4096
"""Bytes of a control form at most (it carries a CSRF token): a body is never kept whole."""
STATIC = {"dashboard.js": "text/javascript", "style.css": "text/css"}


@dataclass(frozen=True, slots=True)
class Overview:
    statistics: HeadStatistics
    node: NodeStatistics
    rates: tuple[RatePoint, ...]


@dataclass(frozen=True, slots=True)
class AppInfo:
    name: str
    title: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    cancelled: bool


@dataclass(frozen=True, slots=True)
class Drained:
    worker: str
    draining: bool


def _collect(provider: Any) -> list[Any]:
    return list(provider.metrics())


async def _small_form(request: Request) -> dict[str, str]:
    """The form of a control POST, refused (413, connection closed) beyond ``FORM_MAX``."""
    too_big = HTTPException(413, f"a control form is at most {FORM_MAX} bytes",
                            headers={"connection": "close"})
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > FORM_MAX:
        raise too_big
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_MAX:
                raise too_big
    except ClientDisconnect:
        raise HTTPException(400, "the request ended before its body") from None
    return dict(parse_qsl(body.decode("latin-1")))


class _SlotStream(StreamingResponse):
    """A live stream that gives its slot back however it ends (even never started)."""

    def __init__(self, slots: StreamSlots, content: AsyncIterator[str], **kw: Any) -> None:
        super().__init__(content, **kw)
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slots.give()


def build_app(model: DashboardModel, *, token: str | None, control: bool,
              title: str = "netlet", max_streams: int = MAX_STREAMS) -> FastAPI:
    env = environment()
    streams = StreamSlots(max_streams)
    csrf = csrf_token(token) if token else ""
    stop = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sampler = asyncio.get_running_loop().create_task(model.run(stop))
        try:
            yield
        finally:
            stop.set()
            sampler.cancel()

    app = FastAPI(title=f"{title} dashboard", version="1", lifespan=lifespan,
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None,
                  description="Read-only views of a netlet cluster's statistics; control "
                              "actions only when the dashboard was started with control on.")
    app.state.stop = stop

    async def head_away(request: Request, exc: Exception) -> Response:
        """The head (or the link to it) is gone: 503, as a scraper expects of a target
        that is down, and no traceback per request in the log."""
        text = f"the head is away: {type(exc).__name__}: {str(exc)[:200]}"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": text}, 503)
        return PlainTextResponse(text, 503)

    for away in (NetletConnectionError, CallTimeout, NodeClosed):
        app.add_exception_handler(away, head_away)

    def head() -> Any:
        if model.head is None:
            raise HTTPException(404, "this dashboard watches no head")
        return model.head

    def base(view: str, request: Request) -> dict[str, Any]:
        return {"title": title, "view": view, "apps": model.app_names(),
                "has_head": model.head is not None, "control": control, "csrf": csrf,
                "query": str(request.url.query)}

    # -- page models (one per view; the stream renders their live part again) --------

    async def overview_ctx(request: Request) -> dict[str, Any]:
        h = head()
        stats, node = await asyncio.gather(h.statistics(), h.node())
        rates = model.rates()
        return {"s": stats, "node": node, "rates": rates,
                "can_drain": control and h.can_drain,
                "alive": [w for w in stats.workers if w.state == "alive"],
                "dead": [w for w in stats.workers if w.state == "dead"]}

    async def tasks_ctx(request: Request) -> dict[str, Any]:
        q = request.query_params
        state = q.get("state", "")
        if state not in ("", "queued", "assigned", "running", "done", "failed"):
            raise HTTPException(400, "state is one of queued, assigned, running, done, failed")
        filters = {k: q.get(k, "")[:200] for k in ("fn", "worker", "client")}
        try:
            page_no = max(1, min(int(q.get("page", "1")), 10**6))
        except ValueError:
            raise HTTPException(400, "page is a number") from None
        page = await head().tasks(state, filters["fn"], filters["worker"], filters["client"],
                                  (page_no - 1) * PAGE, PAGE)
        here = {"state": state, **filters}

        def link(n: int) -> str:
            return "/tasks?" + urlencode({**{k: v for k, v in here.items() if v}, "page": n})

        return {"page": page, "page_no": page_no, "filters": here,
                "pages": max(1, -(-page.total // PAGE)), "link": link,
                "states": ("queued", "assigned", "running", "done", "failed")}

    async def task_ctx(request: Request) -> dict[str, Any]:
        tid = request.path_params["task_id"]
        info = await head().task(tid)
        if info is None:
            raise HTTPException(404, "no such task (finished tasks are kept while the "
                                     "dashboard is attached, up to 10,000)")
        return {"t": info, "can_cancel": control and head().can_cancel
                and info.state in ("queued", "assigned")}

    async def events_ctx(request: Request) -> dict[str, Any]:
        events = await head().events(0, 1000)
        return {"events": list(reversed(events))}

    async def names_ctx(request: Request) -> dict[str, Any]:
        return {"names": await head().names()}

    async def app_ctx(request: Request) -> dict[str, Any]:
        name = request.path_params["name"]
        p = model.providers.get(name)
        if p is None:
            raise HTTPException(404, f"no application page named {name[:40]!r}")
        snap = await asyncio.to_thread(p.snapshot)
        return {"app": p, "snap": snap, "rates": model.app_rates(name),
                "actions": list(p.actions()) if control else []}

    views = {"overview": overview_ctx, "tasks": tasks_ctx, "task": task_ctx,
             "events": events_ctx, "names": names_ctx, "app": app_ctx}

    async def page(view: str, request: Request) -> HTMLResponse:
        ctx = {**base(view, request), **await views[view](request)}
        return HTMLResponse(render(env, f"{view}.html", ctx))

    # -- pages ------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def overview_page(request: Request) -> Response:
        if model.head is None and model.providers:
            return RedirectResponse(f"/apps/{next(iter(model.providers))}", 303)
        return await page("overview", request)

    @app.get("/tasks", include_in_schema=False)
    async def tasks_page(request: Request) -> HTMLResponse:
        return await page("tasks", request)

    @app.get("/tasks/{task_id}", include_in_schema=False)
    async def task_page(request: Request) -> HTMLResponse:
        return await page("task", request)

    @app.get("/events", include_in_schema=False)
    async def events_page(request: Request) -> HTMLResponse:
        return await page("events", request)

    @app.get("/names", include_in_schema=False)
    async def names_page(request: Request) -> HTMLResponse:
        return await page("names", request)

    @app.get("/apps/{name}", include_in_schema=False)
    async def app_page(request: Request) -> HTMLResponse:
        return await page("app", request)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        data = importlib.resources.files("netlet.web").joinpath("static", name).read_bytes()
        return Response(data, media_type=STATIC[name])

    # -- the live stream: each view's live part, rendered again as it changes ----------

    @app.get("/stream/{view}", include_in_schema=False)
    async def stream(view: str, request: Request) -> StreamingResponse:
        if view not in views:
            raise HTTPException(404, "no such view")
        if not streams.take():  # each costs a render per interval: a bounded number
            raise HTTPException(503, f"{streams.limit} live views are open already (the "
                                     "limit): close some tabs, or reload later")
        params = dict(parse_qsl(request.url.query))
        path = params.pop("path", "")
        if view == "task":
            request.path_params["task_id"] = path
        elif view == "app":
            request.path_params["name"] = path
        # The stream's own query string carries the page's filters.
        scope = dict(request.scope)
        scope["query_string"] = urlencode(params).encode()
        inner = Request(scope)
        inner.path_params.update(request.path_params)

        async def events() -> AsyncIterator[str]:
            last = ""
            yield "retry: 2000\n\n"
            while not stop.is_set() and not await request.is_disconnected():
                try:
                    ctx = {**base(view, inner), **await views[view](inner)}
                    html = render(env, f"live/{view}.html", ctx)
                except HTTPException as e:
                    html = (f"<p class='gone'>{escape(e.detail)}</p>" if e.status_code == 404
                            else last)
                except Exception as e:  # the head is away: say so, keep trying
                    html = render(env, "live/away.html", {"error": str(e)[:200]})
                if html != last:
                    last = html
                    yield "event: update\n" + "".join(
                        f"data: {line}\n" for line in html.splitlines()) + "\n"
                else:
                    yield ": idle\n\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), model.interval)

        return _SlotStream(streams, events(), media_type="text/event-stream",
                           headers={"cache-control": "no-store"})

    # -- control (POST, token and CSRF) -----------------------------------------------

    async def check_control(request: Request) -> None:
        if not control or not token:
            raise HTTPException(403, "this dashboard is read-only (start it with control "
                                     "on, which needs a token)")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise HTTPException(403, "cross-origin request refused")
        given = request.headers.get("x-csrf-token")
        if given is None:
            given = (await _small_form(request)).get("csrf")
        if not given or not hmac.compare_digest(given.encode(), csrf.encode()):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page")

    async def cancel(task_id: str, request: Request) -> bool:
        await check_control(request)
        h = head()
        if not h.can_cancel:
            raise HTTPException(403, "a remote dashboard cannot cancel tasks")
        return task_id in await h.cancel([task_id])

    @app.post("/tasks/{task_id}/cancel", include_in_schema=False)
    async def cancel_form(task_id: str, request: Request) -> Response:
        await cancel(task_id, request)
        return RedirectResponse(f"/tasks/{task_id}", 303)

    async def drain(node: str, on: bool, request: Request) -> Drained:
        await check_control(request)
        h = head()
        if not h.can_drain:
            raise HTTPException(403, "a remote dashboard cannot drain workers: serve it "
                                     "from the head (netlet head --dashboard-control)")
        if not await h.drain(node, on):
            raise HTTPException(404, "no such live worker")
        return Drained(node, on)

    @app.post("/workers/{node}/drain", include_in_schema=False)
    async def drain_form(node: str, request: Request) -> Response:
        await drain(node, True, request)
        return RedirectResponse("/", 303)

    @app.post("/workers/{node}/undrain", include_in_schema=False)
    async def undrain_form(node: str, request: Request) -> Response:
        await drain(node, False, request)
        return RedirectResponse("/", 303)

    async def run_action(name: str, action: str, request: Request) -> Any:
        await check_control(request)
        p = model.providers.get(name)
        if p is None or action not in p.actions():
            raise HTTPException(404, "no such action")
        return await asyncio.to_thread(p.actions()[action])

    @app.post("/apps/{name}/{action}", include_in_schema=False)
    async def action_form(name: str, action: str, request: Request) -> Response:
        await run_action(name, action, request)
        return RedirectResponse(f"/apps/{name}", 303)

    # -- /api/v1 ----------------------------------------------------------------------

    @app.get("/api/v1/overview", response_model=Overview, tags=["cluster"])
    async def api_overview() -> Overview:
        """The head's statistics, its node's counters and the rates of the last 10 min."""
        h = head()
        stats, node = await asyncio.gather(h.statistics(), h.node())
        return Overview(stats, node, tuple(model.rates()))

    @app.get("/api/v1/statistics", response_model=HeadStatistics, tags=["cluster"])
    async def api_statistics() -> HeadStatistics:
        """The head's statistics snapshot."""
        return await head().statistics()  # type: ignore[no-any-return]

    @app.get("/api/v1/node", response_model=NodeStatistics, tags=["cluster"])
    async def api_node() -> NodeStatistics:
        """The head node's counters: calls, errors, bytes, connections."""
        return await head().node()  # type: ignore[no-any-return]

    @app.get("/api/v1/connections", response_model=list[LinkStatistics], tags=["cluster"])
    async def api_connections() -> list[LinkStatistics]:
        """The head node's connections: frames and bytes each way, calls in flight, queue."""
        return await head().links()  # type: ignore[no-any-return]

    @app.get("/api/v1/workers", response_model=list[WorkerStats], tags=["cluster"])
    async def api_workers() -> list[WorkerStats]:
        """Workers alive, and those lost recently."""
        return list((await head().statistics()).workers)

    @app.get("/api/v1/tasks", response_model=TaskPage, tags=["tasks"])
    async def api_tasks(state: State = "", fn: Text = "", worker: Text = "", client: Text = "",
                        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
                        limit: Annotated[int, Query(ge=1, le=500)] = PAGE) -> TaskPage:
        """Tasks matching every filter: live ones first, then finished (newest first)."""
        return await head().tasks(  # type: ignore[no-any-return]
            state, fn, worker, client, offset, limit)

    @app.get("/api/v1/tasks/{task_id}", response_model=TaskInfo, tags=["tasks"],
             responses={404: {"description": "No such task"}})
    async def api_task(task_id: Annotated[str, Path(max_length=200)]) -> TaskInfo:
        """One task: function, attempts, their workers and times, the remote traceback."""
        info = await head().task(task_id)
        if info is None:
            raise HTTPException(404, "no such task")
        return info  # type: ignore[no-any-return]

    @app.post("/api/v1/tasks/{task_id}/cancel", response_model=Cancelled, tags=["control"],
              responses={403: {"description": "Read-only, or no CSRF token"}})
    async def api_cancel(task_id: Annotated[str, Path(max_length=200)],
                         request: Request) -> Cancelled:
        """Cancel a task no worker started (token and X-CSRF-Token needed)."""
        return Cancelled(await cancel(task_id, request))

    @app.post("/api/v1/workers/{node}/drain", response_model=Drained, tags=["control"],
              responses={403: {"description": "Read-only, or no CSRF token"},
                         404: {"description": "No such live worker"}})
    async def api_drain(node: Annotated[str, Path(max_length=200)], request: Request) -> Drained:
        """Hand a worker no new task: it finishes what it holds, then may be stopped."""
        return await drain(node, True, request)

    @app.post("/api/v1/workers/{node}/undrain", response_model=Drained, tags=["control"],
              responses={403: {"description": "Read-only, or no CSRF token"},
                         404: {"description": "No such live worker"}})
    async def api_undrain(node: Annotated[str, Path(max_length=200)],
                          request: Request) -> Drained:
        """Let a drained worker take tasks again."""
        return await drain(node, False, request)

    @app.get("/api/v1/events", response_model=list[ClusterEvent], tags=["cluster"])
    async def api_events(after: Annotated[int, Query(ge=0)] = 0,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                         ) -> list[ClusterEvent]:
        """Joins, deaths, leaves, retries and actor restarts after event ``after``."""
        return await head().events(after, limit)  # type: ignore[no-any-return]

    @app.get("/api/v1/names", response_model=list[NameInfo], tags=["cluster"])
    async def api_names() -> list[NameInfo]:
        """Names and actors: where each lives, its restart policy and restarts."""
        return await head().names()  # type: ignore[no-any-return]

    @app.get("/api/v1/apps", response_model=list[AppInfo], tags=["apps"])
    async def api_apps() -> list[AppInfo]:
        """The application pages this dashboard has (bank, primes)."""
        return [AppInfo(a["name"], a["title"]) for a in model.app_names()]

    @app.get("/api/v1/apps/{name}", tags=["apps"],
             responses={404: {"description": "No such application"}})
    async def api_app(name: Annotated[str, Path(max_length=100)]) -> dict[str, Any]:
        """An application's snapshot, as its page shows it."""
        p = model.providers.get(name)
        if p is None:
            raise HTTPException(404, "no such application")
        return dict(await asyncio.to_thread(p.snapshot))

    @app.post("/api/v1/apps/{name}/actions/{action}", tags=["control"],
              responses={403: {"description": "Read-only, or no CSRF token"},
                         404: {"description": "No such action"}})
    async def api_action(name: Annotated[str, Path(max_length=100)],
                         action: Annotated[str, Path(max_length=100)],
                         request: Request) -> dict[str, Any]:
        """Run an application's control action (start an audit)."""
        result = await run_action(name, action, request)
        return {"result": result}

    @app.get("/metrics", tags=["metrics"], response_class=Response)
    async def metrics() -> Response:
        """Everything above in the Prometheus text format."""
        families: list[Any] = []
        if model.head is not None:
            stats, node = await asyncio.gather(model.head.statistics(), model.head.node())
            families += [*_metrics.head_families(stats), *_metrics.node_families(node)]
        for p in model.providers.values():
            families += await asyncio.to_thread(_collect, p)
        return Response(_metrics.render(families),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
