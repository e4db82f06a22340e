"""Shipped code from a hostile key holder: what docs/cluster.md promises it cannot do.

A package whose bytes are not its SHA-256 is dropped by the head; a client has
at most 4 uploads in progress; a node that did not join as a client uploads
nothing; and a package's ``..``, absolute or backslash names are skipped on the
worker, whose extraction writes nothing outside its own directory. A real head
(in this process, or ``netlet head``) and a real worker process; each test
takes a second or two.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlet.cluster import Cluster, Head
from netlet.cluster._code import CHUNK, Package, build_packages, upload_packages
from netlet.errors import ConfigError
from netlet.node import Node
from netlet.transport import generate_key
from tests.cluster.conftest import STEP, ClusterKit

PROBE = """\
import os


def probe(paths):
    return {"cwd": sorted(os.listdir(".")), "exist": [os.path.exists(p) for p in paths]}
"""


@pytest.fixture
def keyed_head() -> Iterator[tuple[str, bytes]]:
    key = generate_key()
    node = Node(listen="tcp://127.0.0.1:0", key=key)
    node.serve(Head(node), "netlet.head")
    assert node.address is not None
    yield node.address, key
    node.close()


@pytest.mark.timeout(30)
def test_a_package_that_is_not_its_hash_is_dropped(keyed_head: tuple[str, bytes]) -> None:
    address, key = keyed_head
    with Cluster(address, key=key) as liar:
        data = b"print('not what the name says')"
        claimed = hashlib.sha256(b"something else").hexdigest()
        with pytest.raises(ConfigError, match="another SHA-256"):
            liar._head.code_put(liar.node.id, claimed, len(data), 0, data)
        assert liar._head.code_missing(liar.node.id, [claimed]) == [claimed]  # not kept


@pytest.mark.timeout(30)
def test_a_client_has_at_most_4_uploads_in_progress(keyed_head: tuple[str, bytes]) -> None:
    address, key = keyed_head
    with Cluster(address, key=key) as greedy, Cluster(address, key=key) as other:
        for d in "01234":
            if d == "4":
                with pytest.raises(ConfigError, match="at most 4 code uploads"):
                    greedy._head.code_put(greedy.node.id, d * 64, CHUNK * 2, 0, b"x")
            else:
                assert greedy._head.code_put(greedy.node.id, d * 64, CHUNK * 2, 0, b"x") == 1
        # The cap is per client: another one uploads as usual.
        assert other._head.code_put(other.node.id, "5" * 64, 2, 0, b"x") == 1


@pytest.mark.timeout(30)
def test_a_keyed_node_that_did_not_join_uploads_nothing(keyed_head: tuple[str, bytes]) -> None:
    address, key = keyed_head
    stranger = Node(key=key)
    try:
        head = stranger.proxy(address, "netlet.head")
        with pytest.raises(ConfigError, match="join as a client first"):
            head.code_missing(stranger.id, ["0" * 64])
        with pytest.raises(ConfigError, match="join as a client first"):
            head.code_put(stranger.id, "0" * 64, 1, 0, b"x")
    finally:
        stranger.close()


def _hostile_zip(outside: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("probe_mod.py", PROBE)
        zf.writestr("../dotdot.py", "x")
        zf.writestr("sub/../../dotdot2.py", "x")
        zf.writestr(str(outside / "absolute.py"), "x")  # kept with its leading "/"
        zf.writestr("..\\backslash.py", "x")
    return buf.getvalue()


@pytest.mark.timeout(60)
def test_a_package_with_names_outside_its_directory_writes_nothing_there(
        cluster_kit: ClusterKit, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    key = generate_key()
    key_file = tmp_path / "cluster.key"
    key_file.write_text(key.hex() + "\n")
    key_file.chmod(0o600)
    head = cluster_kit.head(key_file=key_file)
    cluster_kit.worker(head.address, key=key)
    cluster = cluster_kit.client(head.address, key_file=str(key_file))
    cluster_kit.wait_workers(cluster, 1)
    data = _hostile_zip(outside)
    assert str(outside / "absolute.py") in zipfile.ZipFile(io.BytesIO(data)).namelist()
    digest = hashlib.sha256(data).hexdigest()
    upload_packages(cluster.node, cluster._head, [Package("w", digest, data, "hostile")])

    paths = ["../dotdot.py", "../dotdot2.py", "../../dotdot.py", "backslash.py",
             "../backslash.py", str(outside / "absolute.py")]
    seen = cluster.submit(f"probe_mod:probe@w{digest}", paths).result(STEP)

    assert seen == {"cwd": ["probe_mod.py"], "exist": [False] * len(paths)}
    assert list(outside.iterdir()) == []


@pytest.mark.timeout(60)
def test_a_package_of_more_than_100_000_files_is_refused_by_the_worker(
        cluster_kit: ClusterKit, tmp_path: Path) -> None:
    """The client counts files before it sends; a hand-made zip skips that check, and the
    worker must count again before extracting (docs: "Per package ... 100,000 files")."""
    key = generate_key()
    key_file = tmp_path / "cluster.key"
    key_file.write_text(key.hex() + "\n")
    key_file.chmod(0o600)
    head = cluster_kit.head(key_file=key_file)
    cluster_kit.worker(head.address, key=key)
    cluster = cluster_kit.client(head.address, key_file=str(key_file))
    cluster_kit.wait_workers(cluster, 1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("many_mod.py", "def f():\n    return 'ran'\n")
        for i in range(100_000):
            zf.writestr(f"d/{i}", b"")
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    upload_packages(cluster.node, cluster._head, [Package("w", digest, data, "many")])

    with pytest.raises(ConfigError, match="100000 files"):
        cluster.submit(f"many_mod:f@w{digest}").result(STEP)
    assert cluster.submit("tests.cluster.tasks:add", 1, 2).result(STEP) == 3  # worker lives


def test_symlinked_directories_are_not_followed(tmp_path: Path) -> None:
    """docs: "Symlinked directories are not followed": a link to a home directory, or a
    loop back to the root, ships nothing of what it points at (and does not loop)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the workers")
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.py").write_text("X = 1\n")
    (project / "home").symlink_to(outside, target_is_directory=True)
    (project / "loop").symlink_to(project, target_is_directory=True)

    [package] = build_packages(project, [])

    assert zipfile.ZipFile(io.BytesIO(package.data)).namelist() == ["main.py"]
