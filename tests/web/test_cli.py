
"""``netlet head --dashboard`` and ``netlet dashboard --head``: real processes, real HTTP."""

from __future__ import annotations

import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from netlet.cluster._member_messages import JoinInfo
from netlet.node import Node
from netlet.transport import find_user_key
from netlet.web import Dashboard, RemoteHead, derive_token
from netlet.web._security import csrf_token
from tests._support import wait_until
from tests.cluster.conftest import REPO, ClusterKit, Proc, child_env, cluster_kit, netlet_command

__all__ = ["cluster_kit"]

pytestmark = pytest.mark.timeout(90)

HOSTILE = "<script>alert(1)</script>"


def test_a_head_serves_its_dashboard_and_another_process_watches_it(
        cluster_kit: ClusterKit) -> None:
    head = cluster_kit.head(extra=["--dashboard", "127.0.0.1:0"])
    url = head.stderr.wait_for(r"dashboard at (http://\S+) \(read-only\)").group(1)
    # A hostile member (it holds the key) names itself with markup.
    with Node(key=find_user_key(head.address)) as member:
        member.proxy(head.address, "netlet.head").join(
            member.id, "worker", JoinInfo(HOSTILE, "", 1, "", 1))
        _watch(cluster_kit, head, url)


def _watch(cluster_kit: ClusterKit, head: Proc, url: str) -> None:
    with httpx.Client(base_url=url.rstrip("/"), timeout=10) as web:
        workers = web.get("/api/v1/workers").json()
        assert workers[0]["name"] == HOSTILE
        page = web.get("/").text
        assert HOSTILE not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    watcher = cluster_kit.spawn([*netlet_command(), "dashboard", "--head", head.address,
                                 "--listen", "127.0.0.1:0"], name="dashboard")
    url2 = watcher.stderr.wait_for(r"dashboard at (http://\S+)").group(1)
    cluster_kit.worker(head.address)
    cluster = cluster_kit.client(head.address)
    assert cluster.submit("math:sqrt", 25.0).result(10) == 5.0
    with httpx.Client(base_url=url2.rstrip("/"), timeout=10) as web:
        stats = web.get("/api/v1/statistics").json()
        assert stats["tasks"]["submitted"] >= 1
        assert HOSTILE in [w["name"] for w in stats["workers"]]
        assert "netlet_head_tasks_submitted_total" in web.get("/metrics").text
        assert HOSTILE not in web.get("/").text
        r = web.post("/api/v1/tasks/x/cancel")  # `netlet dashboard` has no control
        assert r.status_code == 403
        assert "read-only" in r.text


def test_a_remote_dashboard_without_the_key_is_refused(cluster_kit: ClusterKit,
                                                       tmp_path: object) -> None:
    head = cluster_kit.head()
    wrong = cluster_kit.tmp_path / "wrong.key"
    run = cluster_kit.run("keygen", str(wrong))
    assert run.returncode == 0, run.stderr
    out = cluster_kit.run("dashboard", "--head", head.address, "--key-file", str(wrong),
                          "--listen", "127.0.0.1:0")
    assert out.returncode != 0
    assert "key" in out.stderr.lower()


def test_a_piped_head_prints_no_token_and_its_control_dashboard_needs_one(
        cluster_kit: ClusterKit) -> None:
    """--dashboard-control on loopback with the per-user key: the token is derived from that
    key, every request needs it, and into a pipe (a log) neither the URL nor the log lines
    (-v) carry it."""
    head = cluster_kit.head(extra=["--dashboard", "127.0.0.1:0", "--dashboard-control"])
    url = head.stderr.wait_for(r"dashboard at (http://\S+) \(control on\)").group(1)
    token = derive_token(find_user_key(head.address) or b"")
    assert "token" not in url
    assert token not in head.stderr.text() + head.stdout.text()
    drain = "/api/v1/workers/nobody/drain"
    with httpx.Client(base_url=url.rstrip("/"), timeout=10) as web:
        assert web.get("/api/v1/statistics").status_code == 401
        assert web.post(drain, headers={"x-csrf-token": csrf_token(token)}).status_code == 401
        auth = {"authorization": f"Bearer {token}"}
        assert web.get("/api/v1/statistics", headers=auth).status_code == 200
        assert web.post(drain, headers={**auth, "x-csrf-token": csrf_token(token)}
                        ).status_code == 404  # control is on: no such worker, not 403
    assert token not in head.stderr.text() + head.stdout.text()


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.mark.timeout(60)
def test_the_url_printed_to_a_terminal_opens_the_dashboard(cluster_kit: ClusterKit) -> None:
    """At a terminal the URL carries the token, and must be the one that opens the page, for
    any token --dashboard-token accepts: rich read ``[bold]`` in a token as markup (and
    dropped it from the URL) and ``[/]`` as a closing tag, and ``+&#%`` went into the query
    string unquoted."""
    token = "tok[bold]en[/]+&#%41-0123456789"
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [*netlet_command(), "head", "--listen", "tcp://127.0.0.1:0", "--dashboard",
         "127.0.0.1:0", "--dashboard-token", token], env=child_env(TERM="xterm"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary)
    os.close(secondary)
    try:
        seen = ""
        while "(read-only)" not in seen:
            ready, _, _ = select.select([primary], [], [], 15)
            assert ready, f"the head printed no dashboard URL: {seen!r}"
            try:
                seen += _ANSI.sub("", os.read(primary, 4096).decode(errors="replace"))
            except OSError:  # the terminal closed: the head died
                pytest.fail(f"the head died: {seen!r}")
        url = re.search(r"dashboard at (http://\S+) \(read-only\)", seen)
        assert url is not None, seen
        with httpx.Client(timeout=10, follow_redirects=True) as web:
            assert web.get(url.group(1)).status_code == 200, url.group(1)
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(primary)


@pytest.mark.parametrize("command", ["head", "bank"])
def test_beyond_loopback_a_cli_dashboard_needs_the_token_of_its_key(
        cluster_kit: ClusterKit, command: str) -> None:
    """`--dashboard 0.0.0.0:PORT` with no --dashboard-token: the token is derived from the
    server's key (here its per-user key), and every request without it is refused."""
    if command == "head":
        proc = cluster_kit.head(extra=["--dashboard", "0.0.0.0:0"])
    else:
        proc = cluster_kit.spawn(
            [*netlet_command(), "bank", "serve", "--listen", "tcp://127.0.0.1:0", "--db",
             str(cluster_kit.tmp_path / "bank.db"), "--dashboard", "0.0.0.0:0"], name="bank")
        proc.address = proc.stdout.wait_for(r"^tcp://\S+$").group(0).strip()
    url = proc.stderr.wait_for(r"dashboard at (http://\S+) \(read-only\)").group(1)
    port = re.search(r":(\d+)/$", url)
    assert port is not None, url
    token = derive_token(find_user_key(proc.address) or b"")
    assert token not in proc.stderr.text() + proc.stdout.text()
    with httpx.Client(base_url=f"http://127.0.0.1:{port.group(1)}", timeout=10) as web:
        for path in ("/", "/api/v1/apps", "/metrics"):
            assert web.get(path).status_code == 401, path
            assert web.get(path, headers={"authorization": "Bearer " + "0" * 40}
                           ).status_code == 401, path
        r = web.get("/metrics", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert ("netlet_head_" if command == "head" else "netlet_bank_") in r.text


def _metric(text: str, name: str) -> float:
    return sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.mark.timeout(60)
def test_the_demo_dashboard_runs_a_cluster_a_bank_and_a_search_until_ctrl_c() -> None:
    """`netlet demo --dashboard`: a cluster, a bank under load and a prime search, watched
    until Ctrl-C; then nothing is left running and its temp directory is gone. (~1 s; the
    temp directory is short: the embedded workers' unix sockets live there)"""
    tmp_path = Path(tempfile.mkdtemp(prefix="nd-", dir="/tmp"))
    demo = Proc.spawn([*netlet_command(), "demo", "--dashboard", "127.0.0.1:0"],
                      env=child_env(TMPDIR=str(tmp_path)), cwd=REPO, name="demo")
    try:
        url = demo.stderr.wait_for(r"dashboard at (http://\S+) \(read-only\)").group(1)
        with httpx.Client(base_url=url.rstrip("/"), timeout=10) as web:
            assert {a["name"] for a in web.get("/api/v1/apps").json()} == {"bank", "primes"}
            wait_until(lambda: sum(w["state"] == "alive"
                                   for w in web.get("/api/v1/workers").json()) >= 2,
                       what="the demo's workers")

            def busy() -> bool:
                text = web.get("/metrics").text
                return (_metric(text, "netlet_bank_ops_total") > 0
                        and _metric(text, "netlet_primes_numbers_checked_total") > 0)

            wait_until(busy, what="the bank and the search at work")
            assert web.post("/api/v1/tasks/x/cancel").status_code == 403  # read-only
        children = demo.descendants()
        assert children
        demo.signal(signal.SIGINT)
        assert demo.wait(20) == 0
        demo.stderr.join()
        assert "Traceback" not in demo.stderr.text(), demo.stderr.text()[-2000:]
    finally:
        demo.kill()
        left = list(tmp_path.iterdir())
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
    assert left == []


@pytest.mark.timeout(60)
def test_sigterm_stops_a_head_and_a_watcher_while_their_dashboards_are_busy(
        cluster_kit: ClusterKit) -> None:
    """Stops on SIGTERM: a live stream open and a request half sent must not keep either
    process (a head serving its dashboard, `netlet dashboard` watching it) alive."""
    head = cluster_kit.head(extra=["--dashboard", "127.0.0.1:0"])
    url = head.stderr.wait_for(r"dashboard at (http://\S+) \(read-only\)").group(1)
    watcher = cluster_kit.spawn([*netlet_command(), "dashboard", "--head", head.address,
                                 "--listen", "127.0.0.1:0"], name="dashboard")
    url2 = watcher.stderr.wait_for(r"dashboard at (http://\S+) \(read-only\)").group(1)
    for proc, base in ((watcher, url2), (head, url)):
        port = int(base.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stream, \
                socket.create_connection(("127.0.0.1", port), timeout=10) as half:
            stream.sendall(b"GET /stream/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert stream.recv(12) == b"HTTP/1.1 200"
            half.sendall(b"POST /api/v1/tasks/x/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Length: 100\r\n\r\n")
            start = time.monotonic()
            proc.signal(signal.SIGTERM)
            assert proc.wait(15) == 0
            assert time.monotonic() - start < 8.0


@pytest.mark.timeout(60)
def test_the_tour_prints_its_cluster_s_dashboard_url(cluster_kit: ClusterKit) -> None:
    """docs/dashboard.md: the tour prints its cluster's dashboard URL while it runs: a
    loopback, read-only one, so it carries no token to leak into a pipe. (~1 s)"""
    run = cluster_kit.run("demo", "--quick", "--part", "cluster", timeout=50)
    assert run.returncode == 0, run.stderr
    out = run.stdout + run.stderr
    assert re.search(r"the dashboard is at http://127\.0\.0\.1:\d+/\s", out), out[-2000:]
    assert "token=" not in out


@pytest.mark.timeout(60)
def test_a_token_from_the_environment_is_required_and_never_printed(tmp_path: Path) -> None:
    """--dashboard-token's env var, NETLET_DASHBOARD_TOKEN: every request needs it, on
    loopback too, and a piped head never prints it."""
    token = "env-token-0123456789abcdef"
    head = Proc.spawn([*netlet_command(), "-v", "head", "--listen", "tcp://127.0.0.1:0",
                       "--dashboard", "127.0.0.1:0"],
                      env=child_env(NETLET_DASHBOARD_TOKEN=token), cwd=REPO, name="head")
    try:
        url = head.stderr.wait_for(r"dashboard at (http://\S+) \(read-only\)").group(1)
        with httpx.Client(base_url=url.rstrip("/"), timeout=10) as web:
            assert web.get("/api/v1/statistics").status_code == 401
            assert web.get("/api/v1/statistics", headers={"authorization": f"Bearer {token}"}
                           ).status_code == 200
        assert token not in head.stderr.text() + head.stdout.text()
    finally:
        head.stop()


@pytest.mark.timeout(60)
def test_a_prime_search_serves_its_page_and_its_cluster_read_only(tmp_path: Path) -> None:
    """`netlet primes --dashboard`: the search's page with the embedded cluster it runs on,
    read-only, no token on loopback. (Killed at the end: Ctrl-C waits for running chunks.)"""
    search = Proc.spawn([*netlet_command(), "primes", "--end", "10**13", "--method", "naive",
                         "--workers", "1", "--dashboard", "127.0.0.1:0"],
                        env=child_env(), cwd=tmp_path, name="primes")
    try:
        url = search.stderr.wait_for(r"dashboard at (http://\S+) \(read-only\)").group(1)
        assert "token=" not in url
        with httpx.Client(base_url=url.rstrip("/"), timeout=10) as web:
            assert [a["name"] for a in web.get("/api/v1/apps").json()] == ["primes"]
            assert web.get("/api/v1/statistics").status_code == 200
            wait_until(lambda: _metric(web.get("/metrics").text,
                                       "netlet_primes_chunks_in_flight") > 0,
                       what="chunks in flight")
            assert web.post("/api/v1/tasks/x/cancel").status_code == 403
            assert web.post("/api/v1/apps/primes/actions/x").status_code == 403
    finally:
        search.kill()


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.timeout(60)
def test_a_watched_head_that_dies_is_answered_503_without_a_traceback(
        cluster_kit: ClusterKit) -> None:
    """The head a dashboard watches crashes: pages, API and /metrics say it is away (503, so
    a scraper sees the target down), and the log gets no traceback per request (it got an
    "Exception in ASGI application" traceback and a 500 for each)."""
    head = cluster_kit.head()
    board = Dashboard(RemoteHead(head.address, key=find_user_key(head.address), timeout=5),
                      listen="127.0.0.1:0").start()
    errors = _Errors()
    logging.getLogger("uvicorn.error").addHandler(errors)
    try:
        with httpx.Client(base_url=board.base_url, timeout=20) as web:
            assert web.get("/api/v1/statistics").status_code == 200
            head.kill()
            for path in ("/api/v1/statistics", "/", "/metrics", "/tasks"):
                r = web.get(path)
                assert r.status_code == 503, (path, r.status_code, r.text[:200])
                assert "head" in r.text
            with web.stream("GET", "/stream/overview") as stream:  # a page left open
                assert any("The head does not answer" in line for line in stream.iter_lines())
    finally:
        logging.getLogger("uvicorn.error").removeHandler(errors)
        board.stop()
    assert errors.lines == []
