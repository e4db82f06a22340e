"""Your code on every worker: ``working_dir=``/``py_modules=``, versions, and workers that lack it.

Real ``netlet head`` and ``python -m netlet.cluster`` processes with a key
file; the newcomer's module lives in a temporary directory that is not on
the workers' path (they run from the repository with only it on PYTHONPATH).
"""

from __future__ import annotations

import importlib
import io
import os
import secrets
import signal
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import netlet
from netlet.cluster import Cluster, Head, HeadConfig
from netlet.cluster._code import build_packages
from netlet.errors import ConfigError
from netlet.node import Node
from netlet.transport import generate_key
from tests.cluster import tasks
from tests.cluster.conftest import REPO, STEP, ClusterKit, free_port

TASKS_V1 = """\
import netlet


def crunch(x):
    return x * 2


@netlet.expose
class Counter:
    def __init__(self, start):
        self.n = start

    def add(self, k):
        self.n += k
        return self.n
"""
TASKS_V2 = "def crunch(x):\n    return x * 3\n"


def read_text(name: str) -> str:
    """(A task) a file of the current directory."""
    return Path(name).read_text()


def module_id(name: str) -> int:
    """(A task) which module object ``import name`` gives."""
    return id(importlib.import_module(name))


@pytest.fixture
def key_file(tmp_path: Path) -> tuple[bytes, Path]:
    key = generate_key()
    path = tmp_path / "cluster.key"
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return key, path


@pytest.fixture
def newcomer(tmp_path: Path) -> Iterator[tuple[Path, ModuleType]]:
    """A module of the client's own, in a directory only the client has on its path."""
    name = f"mytasks_{secrets.token_hex(4)}"
    code = tmp_path / "project"
    code.mkdir()
    (code / f"{name}.py").write_text(TASKS_V1)
    sys.path.insert(0, str(code))
    try:
        yield code, importlib.import_module(name)
    finally:
        sys.path.remove(str(code))
        sys.modules.pop(name, None)


def _start(kit: ClusterKit, key: bytes, key_file: Path, workers: int) -> str:
    head = kit.head(key_file=key_file)
    kit.workers(head.address, workers, key=key)
    kit.wait_workers(kit.client(head.address, key_file=str(key_file)), workers)
    return head.address


@pytest.mark.timeout(90)
def test_newcomer_module_runs_with_working_dir_and_an_edit_is_a_new_version(
        cluster_kit: ClusterKit, key_file: tuple[bytes, Path],
        newcomer: tuple[Path, ModuleType]) -> None:
    key, path = key_file
    code, mod = newcomer
    address = _start(cluster_kit, key, path, 2)

    with (netlet.Executor(address, key_file=str(path)) as bare,  # the first attempt
          pytest.raises(ConfigError) as raised):
        bare.submit(mod.crunch, 7).result(STEP)
    message = str(raised.value)
    assert f"cannot import '{mod.__name__}:crunch'" in message
    assert "worker " in message
    assert "pid " in message
    assert "working_dir" in message

    old = netlet.Executor(address, key_file=str(path), working_dir=code)
    try:
        assert old.submit(mod.crunch, 7).result(STEP) == 14
        (code / f"{mod.__name__}.py").write_text(TASKS_V2)  # edit, ship again
        with netlet.Executor(address, key_file=str(path), working_dir=code) as new:
            assert new.submit(mod.crunch, 7).result(STEP) == 21
            # Both versions live side by side on the same workers.
            assert [f.result(STEP) for f in [old.submit(mod.crunch, i) for i in range(8)]] \
                == [2 * i for i in range(8)]
            assert list(new.map(mod.crunch, range(8), chunksize=3)) == [3 * i for i in range(8)]
    finally:
        old.shutdown()


@pytest.mark.timeout(60)
def test_py_modules_ships_one_module(cluster_kit: ClusterKit, key_file: tuple[bytes, Path],
                                     newcomer: tuple[Path, ModuleType]) -> None:
    key, path = key_file
    _, mod = newcomer
    address = _start(cluster_kit, key, path, 1)
    with netlet.Executor(address, key_file=str(path), py_modules=[mod]) as ex:
        assert ex.submit(mod.crunch, 5).result(STEP) == 10
        counter = ex.cluster.spawn(mod.Counter, 10)  # an actor of the shipped code
        assert counter.add(5) == 15


@pytest.mark.timeout(90)
def test_a_worker_that_lacks_the_module_does_not_fail_tasks_another_can_run(
        cluster_kit: ClusterKit, key_file: tuple[bytes, Path],
        newcomer: tuple[Path, ModuleType], monkeypatch: pytest.MonkeyPatch) -> None:
    key, path = key_file
    code, mod = newcomer
    head = cluster_kit.head(key_file=path)
    client = cluster_kit.client(head.address, key_file=str(path))
    cluster_kit.worker(head.address, key=key)  # joins first: it is woken first, and lacks it
    cluster_kit.wait_workers(client, 1)
    with monkeypatch.context() as mp:
        mp.setenv("PYTHONPATH", str(code))  # this one has the module on its path
        cluster_kit.worker(head.address, key=key)
    cluster_kit.wait_workers(client, 2)

    futures = [client.submit(mod.crunch, i) for i in range(20)]  # no shipping
    assert [f.result(STEP) for f in futures] == [2 * i for i in range(20)]
    head.stderr.wait_for(r"cannot import .*other workers get it")


@pytest.mark.timeout(60)
def test_when_no_worker_can_import_the_error_names_the_worker_and_the_fix(
        cluster_kit: ClusterKit, key_file: tuple[bytes, Path],
        newcomer: tuple[Path, ModuleType]) -> None:
    key, path = key_file
    _, mod = newcomer
    head = cluster_kit.head(key_file=path)
    workers = cluster_kit.workers(head.address, 2, key=key)
    client = cluster_kit.client(head.address, key_file=str(path))
    cluster_kit.wait_workers(client, 2)

    futures = [client.submit(mod.crunch, i) for i in range(10)]
    for f in futures:
        with pytest.raises(ConfigError) as raised:
            f.result(STEP)
        assert "install the module on this worker" in str(raised.value)
        assert any(f"pid {w.pid}," in str(raised.value) for w in workers)
    head.stderr.wait_for(r"task \S+ failed: function " + mod.__name__ + ":crunch")
    assert all(w.alive() for w in workers)


def test_shipping_code_needs_a_keyed_cluster(newcomer: tuple[Path, ModuleType]) -> None:
    code, _ = newcomer
    node = Node(listen="tcp://127.0.0.1:0")  # a head with no key: anyone may connect
    try:
        head = Head(node)
        node.serve(head, "netlet.head")
        assert node.address is not None
        with pytest.raises(ConfigError, match="needs a keyed cluster"):
            Cluster(node.address, key=None, working_dir=code)
        with Cluster(node.address) as plain:  # the keyless client itself is refused too
            with pytest.raises(ConfigError, match="needs a keyed cluster"):
                plain._head.code_missing(plain.node.id, ["0" * 64])
            with pytest.raises(ConfigError, match="needs a keyed cluster"):
                plain._head.code_put(plain.node.id, "0" * 64, 1, 0, b"x")
    finally:
        node.close()


# -- packaging ------------------------------------------------------------------------------


def test_a_package_is_deterministic_and_names_its_content(tmp_path: Path) -> None:
    (tmp_path / "b.py").write_text("B = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    first = build_packages(tmp_path, [])[0]
    (tmp_path / "b.py").touch()  # a new mtime, the same content
    assert build_packages(tmp_path, [])[0].digest == first.digest
    (tmp_path / "b.py").write_text("B = 2\n")
    assert build_packages(tmp_path, [])[0].digest != first.digest


def test_excludes_default_gitignore_and_argument(tmp_path: Path) -> None:
    for rel in (".git/config", ".venv/lib/x.py", "__pycache__/m.cpython.pyc", "keep.py",
                "data/big.bin", "logs/run.log", "sub/notes.tmp", "sub/keep2.py", "m.pyc"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / ".gitignore").write_text("# comment\n/data/\n*.log\n")
    pkg = build_packages(tmp_path, [], excludes=["*.tmp"])[0]
    names = zipfile.ZipFile(io.BytesIO(pkg.data)).namelist()
    assert names == [".gitignore", "keep.py", "sub/keep2.py"]


def test_the_size_cap_says_the_cap_and_the_biggest_files(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"\0" * (3 << 20))
    (tmp_path / "code.py").write_text("x = 1\n")
    with pytest.raises(ConfigError) as raised:
        build_packages(tmp_path, [], cap=1 << 20)
    message = str(raised.value)
    assert "cap of 1 MiB" in message
    assert "model.bin (3.0 MiB)" in message
    assert "excludes=" in message


def _incompressible(root: Path, mib: float) -> Path:
    root.mkdir()
    (root / "blob.bin").write_bytes(os.urandom(int(mib * (1 << 20))))
    return root


def test_the_head_caps_each_package_and_all_of_them(tmp_path: Path) -> None:
    key = generate_key()
    node = Node(listen="tcp://127.0.0.1:0", key=key)
    try:
        node.serve(Head(node, HeadConfig(code_max_package=2 << 20, code_max_total=3 << 20)),
                   "netlet.head")
        assert node.address is not None
        address = node.address
        with pytest.raises(ConfigError, match=r"1 byte to 2097152 bytes \(this head's cap\)"):
            Cluster(address, key=key, working_dir=_incompressible(tmp_path / "big", 2.5))
        first = Cluster(address, key=key, working_dir=_incompressible(tmp_path / "a", 1.4))
        second = Cluster(address, key=key, working_dir=_incompressible(tmp_path / "b", 1.4))
        third = tmp_path / "c"
        _incompressible(third, 1.4)
        with pytest.raises(ConfigError, match="code store is full"):
            Cluster(address, key=key, working_dir=third)  # the others are still in use
        first.close()  # its package is no one's now: it makes room
        Cluster(address, key=key, working_dir=third).close()
        # The same code twice is stored (and sent) once.
        again = Cluster(address, key=key, working_dir=tmp_path / "b")
        assert again._head.code_missing(again.node.id, [again._packages[0].digest]) == []
        again.close()
        second.close()
        # An upload in progress counts at its full size: two half-sent ones cannot
        # together pass the total.
        a, b = (Cluster(address, key=key) for _ in range(2))
        a._head.code_put(a.node.id, "a" * 64, 2 << 20, 0, b"x")
        with pytest.raises(ConfigError, match="code store is full"):
            b._head.code_put(b.node.id, "b" * 64, 2 << 20, 0, b"x")
        a.close()
        b.close()
    finally:
        node.close()


@pytest.mark.timeout(120)
def test_a_restarted_head_gets_the_code_again(
        cluster_kit: ClusterKit, key_file: tuple[bytes, Path],
        newcomer: tuple[Path, ModuleType], tmp_path: Path) -> None:
    key, path = key_file
    code, mod = newcomer
    port, state = free_port(), tmp_path / "head.db"
    head = cluster_kit.head(port, key_file=path, state=state)
    workers = cluster_kit.workers(head.address, 2, key=key)
    cluster = cluster_kit.client(head.address, key_file=str(path), working_dir=code)
    cluster_kit.wait_workers(cluster, 2)
    assert cluster.submit(mod.crunch, 1).result(STEP) == 2
    queued = [cluster.submit(tasks.slow_square, 0, 2.0) for _ in range(2)]
    later = [cluster.submit(mod.crunch, i) for i in range(6)]  # behind the slow ones

    head.kill()  # packages are not in --state: the new head has none
    cluster_kit.head(port, key_file=path, state=state)
    cluster_kit.wait_workers(cluster, 2, timeout=30)
    assert [f.result(STEP * 3) for f in later] == [2 * i for i in range(6)]
    assert [f.result(STEP) for f in queued] == [0, 0]
    assert cluster.submit(mod.crunch, 5).result(STEP) == 10
    assert all(w.alive() for w in workers)  # losing the head mid-fetch kills no worker


@pytest.mark.timeout(90)
def test_shipped_code_and_the_workers_own_module_of_that_name_take_turns(
        cluster_kit: ClusterKit, key_file: tuple[bytes, Path],
        newcomer: tuple[Path, ModuleType], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key, path = key_file
    code, mod = newcomer
    installed = tmp_path / "site"  # the worker's own, older copy of the module
    installed.mkdir()
    (installed / f"{mod.__name__}.py").write_text("def crunch(x):\n    return x * 10\n")
    (code / "logging").mkdir()  # data named like a module shadows nothing
    (code / "logging" / "run.txt").write_text("not a package\n")
    (code / "data.txt").write_text("from the working dir\n")
    head = cluster_kit.head(key_file=path)
    with monkeypatch.context() as mp:
        mp.setenv("PYTHONPATH", f"{installed}{os.pathsep}{REPO}")
        cluster_kit.worker(head.address, key=key)
    plain = cluster_kit.client(head.address, key_file=str(path))
    cluster_kit.wait_workers(plain, 1)
    shipped = cluster_kit.client(head.address, key_file=str(path), working_dir=code)

    for _ in range(3):  # one worker, alternating versions
        assert shipped.submit(mod.crunch, 7).result(STEP) == 14
        assert plain.submit(mod.crunch, 7).result(STEP) == 70
    # A working dir is the task's current directory; the stdlib's logging is untouched.
    assert shipped.submit(read_text, "data.txt").result(STEP) == "from the working dir\n"
    assert shipped.submit(module_id, "logging").result(STEP) == \
        plain.submit(module_id, "logging").result(STEP)


@pytest.mark.timeout(60)
def test_a_worker_removes_its_code_directory_when_it_stops(
        cluster_kit: ClusterKit, key_file: tuple[bytes, Path],
        newcomer: tuple[Path, ModuleType], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key, path = key_file
    code, mod = newcomer
    tmp = tmp_path / "worker-tmp"
    tmp.mkdir()
    head = cluster_kit.head(key_file=path)
    with monkeypatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp))
        worker = cluster_kit.worker(head.address, key=key)
    cluster = cluster_kit.client(head.address, key_file=str(path), working_dir=code)
    cluster_kit.wait_workers(cluster, 1)
    assert cluster.submit(mod.crunch, 2).result(STEP) == 4
    [made] = tmp.glob("netlet-code-*")
    assert (made / cluster._packages[0].digest / f"{mod.__name__}.py").exists()
    assert oct(made.stat().st_mode & 0o777) == "0o700"

    worker.signal(signal.SIGTERM)  # what `netlet worker` sends its processes
    assert worker.wait() == 0
    assert not list(tmp.glob("netlet-code-*"))


@pytest.mark.timeout(60)
def test_embedded_workers_keep_shipped_code_in_the_executors_directory(
        newcomer: tuple[Path, ModuleType]) -> None:
    code, mod = newcomer
    ex = netlet.Executor(1, working_dir=code)
    assert ex._embedded is not None
    private = Path(ex._embedded._dir)
    try:
        assert ex.submit(mod.crunch, 4).result(STEP) == 8
        assert list(private.glob("netlet-code-*/*/" + mod.__name__ + ".py"))
    finally:
        ex.shutdown()
    assert not private.exists()  # removed with it, however the workers ended
