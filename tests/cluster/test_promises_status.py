"""``netlet status --json`` is the schema docs/cluster.md gives, key by key and type by
type, read from the doc's own tables; ``--watch --json`` prints one such object per
line; ``Cluster.status()`` is the same dictionary without ``id``. A real head, a
worker and a client; about two seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import tasks
from tests.cluster.conftest import REPO, ClusterKit, netlet_command

DOC = REPO / "docs" / "cluster.md"
TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "array": (list,), "object": (dict,),
    "integer": (int,), "bool": (bool,), "integer or null": (int, type(None)),
}


def _schema(doc: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The two tables under ``### `--json` schema``: the top level, each node."""
    section = doc.read_text().split("### `--json` schema", 1)[1].split("\n## ", 1)[0]
    tables: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", section):
        rows = [line for line in block.splitlines() if line.startswith("| `")]
        if rows:
            table: dict[str, str] = {}
            for row in rows:
                keys, kind = row.split("|")[1:3]
                for key in re.findall(r"`(\w+)`", keys):
                    table[key] = kind.strip()
            tables.append(table)
    top, node = tables
    return top, node


def _check(value: dict[str, Any], table: dict[str, str], where: str) -> None:
    assert set(value) == set(table), f"{where}: keys {sorted(value)} vs doc {sorted(table)}"
    for key, kind in table.items():
        ok = TYPES[kind]
        v = value[key]
        is_a = isinstance(v, ok) and not (bool not in ok and isinstance(v, bool))
        assert is_a, f"{where}.{key} = {v!r} is not a {kind}"


@pytest.mark.timeout(60)
def test_status_json_is_the_documented_schema(cluster_kit: ClusterKit) -> None:
    top, node = _schema(DOC)
    assert {"head", "nodes", "queued", "paused"} <= set(top)  # the tables were found
    assert {"id", "node", "role", "pid", "held"} <= set(node)
    head, workers, cluster = cluster_kit.start(workers=1)
    cluster.spawn(tasks.Counter, name="counter")
    assert cluster.submit(tasks.identity, 1).result() == 1

    printed = cluster_kit.run("status", "--head", head.address, "--json")
    assert printed.returncode == 0, printed.stderr
    info = json.loads(printed.stdout)
    _check(info, top, "status")
    assert {n["role"] for n in info["nodes"]} == {"worker", "client"}
    for n in info["nodes"]:
        _check(n, node, f"nodes[{n['role']}]")
        assert n["node"].startswith(n["id"])
        assert len(n["id"]) == 8
    assert info["names"]["counter"][2] in {n["node"] for n in info["nodes"]}

    # Cluster.status() is the same dictionary, without the short ids.
    api = cluster.status()
    assert set(api) == set(top)
    assert all(set(n) == set(node) - {"id"} for n in api["nodes"])

    watch = cluster_kit.spawn([*netlet_command(), "status", "--head", head.address,
                               "--watch", "--json", "--interval", "0.1"], name="watch")
    at, first = watch.stdout.wait_for_index(r"^\{.*\}$")
    second = watch.stdout.wait_for(r"^\{.*\}$", since=at + 1)
    for line in (first.group(0), second.group(0)):  # one whole object per line
        _check(json.loads(line), top, "status --watch --json")
    assert workers[0].alive()
