"""The web dashboard against a hostile browser, page or member, over real HTTP.

Beyond loopback it refuses to start without a token; with one, every request
(pages, API, event stream, metrics, static files) must carry it; a page on
another site cannot reach a loopback dashboard by DNS rebinding; it is
read-only unless control is on, and control POSTs need the token and a CSRF
token; what members report about themselves is shown as text.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from netlet.apps.bank import Ledger
from netlet.apps.bank._dashboard import BankProvider
from netlet.cluster import HeadStatistics
from netlet.cluster._member_messages import JoinInfo, Load
from netlet.cluster._messages import Report
from netlet.errors import ConfigError, NetletError
from netlet.node import Node
from netlet.web import Dashboard, RemoteHead, derive_token
from netlet.web._security import csrf_token
from tests.web.conftest import Kit, dashboard_for, kit, wait_until

parser = pytest.importorskip("prometheus_client.parser")

__all__ = ["dashboard_for", "kit"]

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret-dashboard-token-0123456789"
HOSTILE = '<img src=x onerror="alert(1)">'
GUARDED = ["/", "/tasks", "/events", "/api/v1/statistics", "/api/v1/tasks",
           "/api/v1/openapi.json", "/metrics", "/stream/overview", "/static/dashboard.js"]


def test_beyond_loopback_it_refuses_to_start_without_a_token() -> None:
    with pytest.raises(ConfigError, match="beyond loopback, with no token"):
        Dashboard(None, [], listen="0.0.0.0:0")
    with pytest.raises(ConfigError, match="at least 16"):
        Dashboard(None, [], listen="127.0.0.1:0", token="short")
    derived = Dashboard(None, [], listen="0.0.0.0:0", key=b"k" * 32)  # not started
    assert derived.token == derive_token(b"k" * 32)
    assert derived.token != derive_token(b"j" * 32)


def test_every_request_needs_the_token(dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for(token=TOKEN)
    with httpx.Client(base_url=d.base_url, timeout=10) as web:
        for path in GUARDED:
            assert web.get(path).status_code == 401, path
            assert web.get(path, headers={"authorization": "Bearer " + TOKEN[:-1] + "x"}
                           ).status_code == 401, path
            assert web.get(path, headers={"cookie": "netlet_dashboard=" + "nope" * 5}
                           ).status_code == 401
        assert web.post("/api/v1/tasks/x/cancel").status_code == 401
        ok = {"authorization": f"Bearer {TOKEN}"}
        assert web.get("/api/v1/statistics", headers=ok).status_code == 200
        with web.stream("GET", "/stream/overview", headers=ok) as stream:
            assert stream.status_code == 200
        # A browser opens the printed URL: the token moves to an HttpOnly cookie.
        first = web.get(f"/tasks?state=done&token={TOKEN}")
        assert first.status_code == 303
        assert first.headers["location"] == "/tasks?state=done"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert web.get("/tasks?state=done").status_code == 200  # the client kept the cookie


@pytest.mark.parametrize("token", ['semi;colon-0123456789', 'quote"mark-0123456789',
                                   'back\\slash-0123456789', "mixed+&#%[]=,'-0123456789"])
def test_the_url_opens_the_dashboard_for_any_accepted_token(token: str) -> None:
    """A browser opens the printed URL: whatever token --dashboard-token accepted must come
    through the query string and the cookie intact (a ; or a " cut the cookie short, and the
    browser was refused for ever), and no one without it gets in."""
    with Dashboard(None, [], listen="127.0.0.1:0", token=token) as d, \
            httpx.Client(base_url=d.base_url, timeout=10) as web:
        assert web.get(d.url).status_code == 303
        assert web.get("/api/v1/apps").status_code == 200  # by the cookie alone
        web.cookies.clear()
        assert web.get("/api/v1/apps").status_code == 401
        for near in (token[:-1], token[:5], token.split(token[5])[0]):
            web.cookies.set(f"netlet_dashboard_{d.port}", near)
            assert web.get("/api/v1/apps").status_code == 401, near


def test_the_token_redirect_keeps_any_path_inside_its_location(
        dashboard_for: Callable[..., Dashboard]) -> None:
    """The ?token= visit's redirect names the path asked for: an encoded CR LF in it must
    not split the Location header (h11 refused it: the connection dropped), nor a
    character beyond latin-1 be sent raw."""
    d = dashboard_for(token=TOKEN)
    with httpx.Client(base_url=d.base_url, timeout=10) as web:
        for path, location in (("/x%0D%0ASet-Cookie:%20a=b", "/x%0D%0ASet-Cookie%3A%20a%3Db"),
                               ("/t%C3%A4sks", "/t%C3%A4sks"), ("/tasks", "/tasks")):
            r = web.get(f"{path}?state=done&token={TOKEN}")
            assert r.status_code == 303, path
            assert r.headers["location"] == location + "?state=done"
            assert r.headers.get_list("set-cookie") == [r.headers["set-cookie"]]
            assert r.headers["set-cookie"].startswith(f"netlet_dashboard_{d.port}=")


def test_two_dashboards_of_one_host_keep_their_cookies_apart_and_no_cookie_is_a_token(
        ) -> None:
    """docs: a head's dashboard on 8340 and a bank's on 8341. A browser keeps cookies by
    host, not port: both set one cookie name, so opening one logged you out of the other;
    and the cookie carried the token itself, which every port of the host receives."""
    other = TOKEN[::-1]
    with Dashboard(None, [], listen="127.0.0.1:0", token=TOKEN) as a, \
            Dashboard(None, [], listen="127.0.0.1:0", token=other) as b, \
            httpx.Client(timeout=10) as browser:
        for board in (a, b):
            r = browser.get(board.url)
            assert r.status_code == 303
            assert board.token is not None
            assert board.token not in r.headers["set-cookie"]
        assert browser.get(a.base_url + "/api/v1/apps").status_code == 200
        assert browser.get(b.base_url + "/api/v1/apps").status_code == 200
        with httpx.Client(timeout=10) as stranger:  # a token as a cookie is no session
            stranger.cookies.set(f"netlet_dashboard_{a.port}", TOKEN)
            stranger.cookies.set("netlet_dashboard", TOKEN)
            assert stranger.get(a.base_url + "/api/v1/apps").status_code == 401


def test_a_rebound_host_name_is_refused(dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for()
    with httpx.Client(base_url=d.base_url, timeout=10) as web:
        assert web.get("/api/v1/statistics").status_code == 200
        for host in ("attacker.example", f"attacker.example:{d.port}", "10.0.0.1",
                     "127.0.0.1.attacker.example", "localhost.attacker.example",
                     "attacker.localhost", "localhost.", f"localhost:{d.port}:x", "",
                     "[::ffff:127.0.0.1]", "0x7f000001"):
            r = web.get("/api/v1/statistics", headers={"host": host})
            assert r.status_code == 421, host
        for host in ("localhost", f"localhost:{d.port}", f"[::1]:{d.port}", "127.0.0.1"):
            assert web.get("/api/v1/statistics", headers={"host": host}).status_code == 200


def test_read_only_unless_control_is_on(kit: Kit,
                                        dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for(token=TOKEN)
    with httpx.Client(base_url=d.base_url, timeout=10,
                      headers={"authorization": f"Bearer {TOKEN}"}) as web:
        r = web.post("/api/v1/tasks/x/cancel", headers={"x-csrf-token": csrf_token(TOKEN)})
        assert r.status_code == 403
        assert "read-only" in r.text
        assert web.post("/tasks/x/cancel", data={"csrf": csrf_token(TOKEN)}).status_code == 403
        assert "cancel" not in web.get("/tasks").text.lower().split("<form", 1)[-1]


def test_control_needs_the_token_and_a_csrf_token(kit: Kit,
                                                  dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for(token=TOKEN, control=True)
    futures = [kit.cluster.submit("time:sleep", 3.0) for _ in range(8)]
    with httpx.Client(base_url=d.base_url, timeout=10,
                      headers={"authorization": f"Bearer {TOKEN}"}) as web:
        def unstarted() -> str:
            for state in ("queued", "assigned"):
                page = web.get("/api/v1/tasks", params={"state": state}).json()
                if page["tasks"]:
                    return str(page["tasks"][-1]["id"])
            return ""

        tid = wait_until(unstarted, what="a task waiting to start")
        path = f"/api/v1/tasks/{tid}/cancel"
        assert web.post(path).status_code == 403  # no CSRF token
        assert web.post(path, headers={"x-csrf-token": "0" * 64}).status_code == 403
        assert web.post(path, headers={"x-csrf-token": csrf_token(TOKEN),
                                       "origin": "http://attacker.example"}).status_code == 403
        assert web.get(path).status_code == 405  # never by GET
        assert web.get(f"/api/v1/tasks/{tid}").json()["state"] in ("queued", "assigned")
        # The page's form carries the CSRF token; posting it cancels.
        html = web.get(f"/tasks/{tid}").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
        assert csrf is not None
        r = web.post(f"/tasks/{tid}/cancel", data={"csrf": csrf.group(1)})
        assert r.status_code == 303
    wait_until(lambda: any(f.cancelled() for f in futures), what="a cancelled future")


def test_what_members_report_is_escaped(kit: Kit,
                                        dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for()
    with Node(key=kit.embedded.key) as member:
        member.proxy(kit.embedded.address, "netlet.head").join(
            member.id, "worker", JoinInfo(HOSTILE, "<script>alert(2)</script>", 1, "", 1))
        bad = kit.cluster.submit(f"{HOSTILE}:x", 1)
        with pytest.raises(NetletError):  # no worker can import it
            bad.result(10)
        with httpx.Client(base_url=d.base_url, timeout=10) as web:
            pages = [web.get("/").text, web.get("/tasks").text, web.get("/events").text]
            tid = web.get("/api/v1/tasks", params={"state": "failed"}).json()["tasks"][0]["id"]
            pages.append(web.get(f"/tasks/{tid}").text)
            with web.stream("GET", "/stream/overview") as stream:
                pages.append(next(line for line in stream.iter_lines() if "alert" in line))
    for html in pages:
        assert "<img src=x" not in html
        assert "<script>alert" not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in pages[0]


def test_a_member_cannot_make_the_head_keep_tracebacks_of_tasks_it_does_not_hold(
        kit: Kit) -> None:
    with Node(key=kit.embedded.key) as member:
        head = member.proxy(kit.embedded.address, "netlet.head")
        epoch = head.join(member.id, "worker", JoinInfo("forger", "", 1, "", 1)).epoch
        forged = [(f"nobody:{i}", False, b"x", "no-lease", "Err", "t" * 8192)
                  for i in range(64)]
        head.report(member.id, epoch, Report.of(forged, []))
    monitor = kit.embedded.head._monitor
    assert kit.on_head(lambda: len(monitor._errors)) == 0
    stats = kit.on_head(kit.embedded.head.statistics)
    assert isinstance(stats, HeadStatistics)
    assert stats.tasks.refused_results >= 64


def test_draining_a_worker_needs_control_the_token_and_a_csrf_token(
        kit: Kit, dashboard_for: Callable[..., Dashboard]) -> None:
    node = next(m["node"] for m in kit.cluster.status()["nodes"] if m["role"] == "worker")
    path = f"/api/v1/workers/{node}/drain"
    read_only = dashboard_for(token=TOKEN)
    control = dashboard_for(token=TOKEN, control=True)
    auth = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=10) as web:
        r = web.post(read_only.base_url + path, headers={**auth, "x-csrf-token": csrf_token(TOKEN)})
        assert r.status_code == 403
        assert "read-only" in r.text
        assert "/drain" not in web.get(read_only.base_url + "/", headers=auth).text
        url = control.base_url + path
        assert web.post(url, headers={"x-csrf-token": csrf_token(TOKEN)}).status_code == 401
        assert web.post(url, headers=auth).status_code == 403  # no CSRF token
        assert web.post(url, headers={**auth, "x-csrf-token": "0" * 64}).status_code == 403
        assert web.post(url, headers={**auth, "x-csrf-token": csrf_token(TOKEN),
                                      "origin": "http://attacker.example"}).status_code == 403
        assert web.post(control.base_url + f"/workers/{node}/drain", headers=auth,
                        data={"csrf": "nope"}).status_code == 403
        assert web.get(url, headers=auth).status_code == 405
        # The refusals changed nothing.
        assert not any(w["draining"] for w in
                       web.get(control.base_url + "/api/v1/workers", headers=auth).json())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("framing", [f"Content-Length: {1 << 30}", "Transfer-Encoding: chunked"])
def test_a_control_post_cannot_make_the_dashboard_hold_a_huge_body(framing: str) -> None:
    """A control POST without X-CSRF-Token has its form read for the CSRF token: the whole
    body was read into memory first (1 GiB announced, 8 MiB sent, no answer). A form is
    small: beyond 4 KiB the answer is 413 and the rest is never kept."""
    board = Dashboard(None, [], listen="127.0.0.1:0", token=TOKEN, control=True).start()
    try:
        with socket.create_connection(("127.0.0.1", board.port), timeout=10) as sock:
            sock.sendall(f"POST /apps/bank/audit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Authorization: Bearer {TOKEN}\r\n{framing}\r\n"
                         "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode())
            chunk = b"csrf=" + b"a" * 65531
            if "chunked" in framing:
                chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
            answer, sent = b"", 0
            while not answer and sent < 8 << 20:
                readable, writable, _ = select.select([sock], [sock], [], 5)
                if readable:
                    answer = sock.recv(4096)
                elif writable:
                    sent += sock.send(chunk)
            assert answer, f"{sent >> 20} MiB of a control form read with no answer"
            assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    finally:
        board.stop()


def _policy(header: str) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.split(" ", 1)[-1] for d in
            (part.strip() for part in header.split(";")) if d}


@pytest.mark.timeout(60)
def test_every_answer_carries_the_security_headers_and_pages_load_only_their_own_script(
        kit: Kit, dashboard_for: Callable[..., Dashboard]) -> None:
    """Refusals, redirects, errors, streams, static files and pages alike: a strict CSP
    (only the dashboard's own script and style, nothing inline), no framing, nosniff, no
    referrer. A page's one script is ``/static/dashboard.js``; nothing comes from a CDN."""
    d = dashboard_for(token=TOKEN, max_streams=1)
    auth = {"authorization": f"Bearer {TOKEN}"}
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=d.base_url, timeout=10) as web:
        answers += [web.get("/"), web.get("/", headers={"host": "attacker.example"}),
                    web.get(f"/tasks?token={TOKEN}"), web.put("/", headers=auth),
                    web.post("/api/v1/tasks/x/cancel", headers=auth)]
        pages = [web.get(p, headers=auth) for p in ("/", "/tasks", "/names", "/events")]
        answers += pages
        answers += [web.get(p, headers=auth) for p in (
            "/tasks/nope", "/static/dashboard.js", "/static/style.css", "/static/../x",
            "/api/v1/statistics", "/api/v1/tasks?limit=501", "/metrics", "/nowhere",
            "/docs", "/redoc")]  # no Swagger UI or ReDoc: they would load from a CDN
        with web.stream("GET", "/stream/overview", headers=auth) as stream:
            answers += [stream, web.get("/stream/overview", headers=auth)]
    assert sorted({a.status_code for a in answers}) == [
        200, 303, 401, 403, 404, 405, 421, 422, 503]
    for a in answers:
        where = f"{a.request.method} {a.request.url.path} -> {a.status_code}"
        policy = _policy(a.headers.get("content-security-policy", ""))
        assert policy.get("default-src") == "'none'", where
        assert policy.get("script-src") == "'self'", where
        assert policy.get("style-src") == "'self'", where
        assert policy.get("frame-ancestors") == "'none'", where
        assert "unsafe" not in a.headers["content-security-policy"], where
        assert a.headers.get("x-frame-options") == "DENY", where
        assert a.headers.get("x-content-type-options") == "nosniff", where
        assert a.headers.get("referrer-policy") == "no-referrer", where
        assert "access-control-allow-origin" not in a.headers, where  # no page elsewhere reads it
    assert [a.status_code for a in answers if a.request.url.path in ("/docs", "/redoc")
            ] == [404, 404]
    for page in pages:
        html = page.text
        assert re.findall(r"<script[^>]*>", html) == [
            '<script src="/static/dashboard.js" defer>'], page.request.url
        assert not re.search(r"(?:src|href|action)=\"(?:[a-z]+:)?//", html), page.request.url
        assert "<style" not in html
        assert " style=" not in html


def test_control_on_loopback_without_a_token_makes_one_up_and_needs_it(
        kit: Kit, dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for(control=True)  # no token given, no key to derive one from
    assert d.token is not None
    assert d.token != dashboard_for(control=True).token  # made up, not a constant
    node = next(m["node"] for m in kit.cluster.status()["nodes"] if m["role"] == "worker")
    drain = f"/api/v1/workers/{node}/drain"
    with httpx.Client(base_url=d.base_url, timeout=10) as web:
        assert web.get("/").status_code == 401
        assert web.post(drain, headers={"x-csrf-token": csrf_token(d.token)}).status_code == 401
        auth = {"authorization": f"Bearer {d.token}"}
        assert web.get("/", headers=auth).status_code == 200
        assert not any(w["draining"] for w in web.get("/api/v1/workers", headers=auth).json())


def test_a_remote_dashboard_with_control_can_neither_cancel_nor_drain(kit: Kit) -> None:
    """Only a task's client cancels it, and only the head's own dashboard drains: a dashboard
    watching the head as a client, even with control on and every token right, is refused."""
    futures = [kit.cluster.submit("time:sleep", 3.0) for _ in range(8)]
    node = next(m["node"] for m in kit.cluster.status()["nodes"] if m["role"] == "worker")
    source = RemoteHead(kit.embedded.address, key=kit.embedded.key)
    d = Dashboard(source, listen="127.0.0.1:0", token=TOKEN, control=True).start()
    ok = {"authorization": f"Bearer {TOKEN}", "x-csrf-token": csrf_token(TOKEN)}
    try:
        with httpx.Client(base_url=d.base_url, timeout=10, headers=ok) as web:
            queued = wait_until(lambda: web.get("/api/v1/tasks", params={"state": "queued"}
                                                ).json()["tasks"], what="a queued task")
            tid = queued[-1]["id"]
            r = web.post(f"/api/v1/tasks/{tid}/cancel")
            assert r.status_code == 403
            assert "cannot cancel" in r.text
            assert web.post(f"/api/v1/workers/{node}/drain").status_code == 403
            assert web.post(f"/workers/{node}/drain", data={"csrf": csrf_token(TOKEN)}
                            ).status_code == 403
            assert "/cancel" not in web.get(f"/tasks/{tid}").text
            assert "/drain" not in web.get("/").text
            assert web.get(f"/api/v1/tasks/{tid}").json()["state"] in ("queued", "assigned")
            assert not any(w["draining"] for w in web.get("/api/v1/workers").json())
    finally:
        d.stop()
    assert not any(f.cancelled() for f in futures)


def test_a_read_only_dashboard_runs_no_application_action(tmp_path: Path) -> None:
    with Ledger(str(tmp_path / "bank.db")) as ledger, \
            Dashboard(None, [BankProvider(ledger)], listen="127.0.0.1:0", token=TOKEN) as d, \
            httpx.Client(base_url=d.base_url, timeout=10,
                         headers={"authorization": f"Bearer {TOKEN}"}) as web:
        csrf = csrf_token(TOKEN)
        r = web.post("/api/v1/apps/bank/actions/audit", headers={"x-csrf-token": csrf})
        assert r.status_code == 403
        assert "read-only" in r.text
        assert web.post("/apps/bank/audit", data={"csrf": csrf}).status_code == 403
        assert web.get("/api/v1/apps/bank/actions/audit").status_code == 405
        assert "/audit" not in web.get("/apps/bank").text  # no button
        assert web.get("/api/v1/apps/bank").json()["audit"] is None  # nothing ran


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _dashboard_log() -> Iterator[_Count]:
    """What the dashboard's loggers (its own and uvicorn's) pass on to their handlers.
    (After the dashboard is made: uvicorn's logging setup drops the handlers it finds.)"""
    count = _Count()
    loggers = [logging.getLogger(n) for n in ("netlet.web", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(count)
    try:
        yield count
    finally:
        for logger in loggers:
            logger.removeHandler(count)


@pytest.mark.timeout(60)
def test_a_flood_of_bad_requests_and_connections_cannot_flood_the_log() -> None:
    """The dashboard usually runs inside the head: anyone who reaches its port (no token
    needed) could write a warning line into the head's log per malformed request, and per
    connection beyond the cap, as fast as they could connect. At most 50 a kind per 10 s."""
    board = Dashboard(None, [], listen="127.0.0.1:0", max_connections=4).start()
    try:
        with _dashboard_log() as dashboard_log:
            _flood(board)
    finally:
        board.stop()
    lines = [r.getMessage() for r in dashboard_log.records if r.levelno >= logging.WARNING]
    assert len(lines) <= 2 * 50 + 2, f"{len(lines)} warnings, e.g. {lines[-1]!r}"


def _flood(board: Dashboard) -> None:
    for _ in range(300):
        with socket.create_connection(("127.0.0.1", board.port), timeout=10) as s:
            s.sendall(b"\x00 not http\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 400")
    with ExitStack() as stack:
        for _ in range(4):
            stack.enter_context(socket.create_connection(("127.0.0.1", board.port)))
        for _ in range(300):
            with socket.create_connection(("127.0.0.1", board.port), timeout=10) as s:
                assert s.recv(100) == b""  # closed at once
    with httpx.Client(base_url=board.base_url, timeout=10) as web:  # still serving
        assert web.get("/api/v1/apps").status_code == 200


def test_a_member_cannot_break_the_scrape_by_mimicking_a_worker_s_id(
        kit: Kit, dashboard_for: Callable[..., Dashboard]) -> None:
    """A key holder joins as a worker whose node id shares a real worker's first 12
    characters: /metrics showed two samples with one label set (the id cut to 12), which
    Prometheus refuses as a whole scrape, hiding the cluster's metrics."""
    d = dashboard_for()
    victim = next(m["node"] for m in kit.cluster.status()["nodes"] if m["role"] == "worker")
    with Node(key=kit.embedded.key) as member:
        member.id = victim[:12] + "0" * (len(victim) - 12)
        member.proxy(kit.embedded.address, "netlet.head").join(
            member.id, "worker", JoinInfo("mimic", "", 1, "", 1))
        with httpx.Client(base_url=d.base_url, timeout=10) as web:
            text = web.get("/metrics").text
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in seen, f"two samples {key}"
            seen.add(key)
    assert any(name == "netlet_worker_running_tasks" and ("worker", victim) in labels
               for name, labels in seen)


def test_a_member_reporting_absurd_numbers_cannot_break_the_pages(
        kit: Kit, dashboard_for: Callable[..., Dashboard]) -> None:
    """Members report their own pid, cores, CPU and memory, and netlet carries integers of
    any size: a 5,000-digit one made the overview page answer 500 for everyone (Python
    refuses to print it), and its live part say the head was away."""
    d = dashboard_for()
    huge = 10**5000
    with Node(key=kit.embedded.key) as member:
        head = member.proxy(kit.embedded.address, "netlet.head")
        joined = head.join(member.id, "worker", JoinInfo("absurd", "host", huge, "", huge))
        assert head.heartbeat(member.id, Load(huge, -huge, float("inf"), huge), joined.epoch,
                              [], 0)
        with httpx.Client(base_url=d.base_url, timeout=10) as web:
            for path in ("/", "/tasks", "/events", "/names", "/metrics", "/api/v1/workers"):
                assert web.get(path).status_code == 200, path
            assert "absurd" in web.get("/").text
            with web.stream("GET", "/stream/overview") as stream:
                update = next(line for line in stream.iter_lines() if line.startswith("data"))
    assert "does not answer" not in update
