
"""``netlet head --dashboard`` and ``netlet dashboard --head``: real processes, real HTTP."""

from __future__ import annotations

import httpx
import pytest

from netlet.cluster._member_messages import JoinInfo
from netlet.node import Node
from netlet.transport import find_user_key
from tests.cluster.conftest import ClusterKit, Proc, cluster_kit, netlet_command

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
