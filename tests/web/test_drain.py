"""Draining a worker from the dashboard, with a real head and real worker processes.

A drained worker finishes the task it runs and is handed no new one, while
the other worker takes them all; the overview shows it draining, with a
button to resume it; the events say who drained it when.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from netlet.web import Dashboard
from netlet.web._security import csrf_token
from tests.web.conftest import Kit, dashboard_for, kit, wait_until

__all__ = ["dashboard_for", "kit"]

pytestmark = pytest.mark.timeout(60)

TOKEN = "drain-test-token-0123456789abcdef"


def test_a_drained_worker_gets_no_new_tasks_while_another_does(
        kit: Kit, dashboard_for: Callable[..., Dashboard]) -> None:
    d = dashboard_for(token=TOKEN, control=True)
    with httpx.Client(base_url=d.base_url, timeout=10,
                      headers={"authorization": f"Bearer {TOKEN}"}) as web:
        workers = [w["node"] for w in web.get("/api/v1/workers").json() if w["state"] == "alive"]
        assert len(workers) == 2
        long = [kit.cluster.submit("time:sleep", 2.0) for _ in range(2)]

        def running_on() -> str:
            page = web.get("/api/v1/tasks", params={"state": "running"}).json()
            return str(page["tasks"][0]["worker"]) if page["tasks"] else ""

        drained = wait_until(running_on, what="a worker running a long task")
        other = next(w for w in workers if w != drained)
        r = web.post(f"/api/v1/workers/{drained}/drain",
                     headers={"x-csrf-token": csrf_token(TOKEN)})
        assert r.status_code == 200, r.text
        assert r.json() == {"worker": drained, "draining": True}
        stats = {w["node"]: w for w in web.get("/api/v1/workers").json()}
        assert stats[drained]["draining"]
        assert not stats[other]["draining"]

        short = [kit.cluster.submit("math:sqrt", float(i)) for i in range(20)]
        assert [f.result(30) for f in short] == [float(i) ** 0.5 for i in range(20)]
        for f in long:
            assert f.result(30) is None  # the drained worker finished what it held
        done = web.get("/api/v1/tasks", params={"state": "done", "limit": 100}).json()
        where = [(t["fn"], t["worker"]) for t in done["tasks"]]
        assert len(where) == 22
        assert [w for fn, w in where if fn == "math:sqrt"] == [other] * 20
        assert ("time:sleep", drained) in where

        # The overview shows it draining, with a button (carrying the CSRF token) to resume.
        html = web.get("/").text
        row = re.search(rf'data-node="{drained}">(.*?)</tr>', html, re.S)
        assert row is not None
        assert "draining" in row.group(1)
        assert f'action="/workers/{drained}/undrain"' in row.group(1)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', row.group(1))
        assert csrf is not None
        assert web.post(f"/workers/{drained}/undrain",
                        data={"csrf": csrf.group(1)}).status_code == 303
        stats = {w["node"]: w for w in web.get("/api/v1/workers").json()}
        assert not stats[drained]["draining"]
        assert f'netlet_worker_draining{{worker="{drained}"}} 0.0' in web.get("/metrics").text
        kinds = [(e["kind"], e["node"]) for e in web.get("/api/v1/events").json()]
        assert ("drained", drained) in kinds
        assert ("undrained", drained) in kinds
        assert web.post("/api/v1/workers/nobody/drain",
                        headers={"x-csrf-token": csrf_token(TOKEN)}).status_code == 404
