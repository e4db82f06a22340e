"""Operating a cluster: a head restarted from ``--state`` (actors, names, clients that
never return), ``netlet worker`` facing a wrong key or losing its parent, ``netlet
status`` (dead workers, ids, width, --watch, --json), NETLET_HEAD/NETLET_KEY_FILE, and
a head on 0.0.0.0 without a route. Real heads, real workers, real signals."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from netlet.errors import NetletError
from netlet.transport import load_key, write_key
from tests.cluster import tasks
from tests.cluster.conftest import (
    STEP,
    ClusterKit,
    Proc,
    child_env,
    free_port,
    netlet_command,
    wait_until,
)


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (exited, or a zombie nobody reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "zombie" in status


# -- the head's --state keeps spawned actors ---------------------------------------------


@pytest.mark.timeout(90)
def test_spawned_name_survives_head_kill(cluster_kit: ClusterKit, tmp_path: Path) -> None:
    port, state = free_port(), tmp_path / "head.db"
    head, _, cluster = cluster_kit.start(workers=1, port=port, state=state)
    counter = cluster.spawn(tasks.Counter, 5, name="counter", restart="on-failure")
    assert counter.increment() == 6

    head.kill()
    head = cluster_kit.head(port, state=state)
    again = cluster_kit.client(head.address)

    found = wait_until(lambda: again.lookup("counter"), STEP, "the name 'counter' resolving")
    assert found.increment() == 7  # the same object, on the same worker
    assert "counter" in again.names()


@pytest.mark.timeout(90)
def test_spawned_actor_respawns_after_head_and_its_worker_die(
        cluster_kit: ClusterKit, tmp_path: Path) -> None:
    port, state = free_port(), tmp_path / "head.db"
    head, workers, cluster = cluster_kit.start(workers=2, port=port, state=state)
    counter = cluster.spawn(tasks.Counter, 5, name="counter", restart="on-failure")
    once = cluster.spawn(tasks.Counter, name="once")  # restart=None: not brought back
    host = counter.pid()
    once_lost = once.pid() == host
    victim = next(w for w in workers if w.pid == host)

    head.kill()
    victim.kill()
    head = cluster_kit.head(port, state=state)
    again = cluster_kit.client(head.address)

    def respawned() -> bool:
        found = again.lookup("counter")
        try:  # until the head drops the old name, it points at the dead worker
            return found is not None and found.pid() != host
        except NetletError:
            return False

    wait_until(respawned, 3 * STEP, "'counter' respawned on the other worker")
    assert again.actor("counter").get() == 5  # recreated with its arguments
    if once_lost:  # dropped with its worker, not respawned
        assert again.lookup("once") is None
    else:
        assert again.actor("once").get() == 0


# -- netlet worker: a wrong key, no key, a parent that dies ----------------------------


@pytest.mark.timeout(60)
def test_worker_with_a_wrong_key_stops_at_once(cluster_kit: ClusterKit, tmp_path: Path) -> None:
    write_key(tmp_path / "head.key")
    write_key(tmp_path / "other.key")
    head = cluster_kit.head(key_file=tmp_path / "head.key")

    result = cluster_kit.run("worker", "--join", head.address, "-n", "3",
                             "--key-file", str(tmp_path / "other.key"), timeout=STEP * 3)

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "wrong cluster key" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_worker_without_a_key_against_a_keyed_head(cluster_kit: ClusterKit,
                                                   tmp_path: Path) -> None:
    write_key(tmp_path / "head.key")
    head = cluster_kit.head(key_file=tmp_path / "head.key")

    result = cluster_kit.run("worker", "--join", head.address, "-n", "2", timeout=STEP * 3)

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no cluster key" in lines[0]
    assert "--key-file" in lines[0]


@pytest.mark.timeout(60)
def test_worker_processes_exit_when_netlet_worker_is_killed(cluster_kit: ClusterKit) -> None:
    head = cluster_kit.head()
    supervisor = cluster_kit.spawn([*netlet_command(), "worker", "--join", head.address,
                                    "-n", "2"], name="netlet worker")
    cluster = cluster_kit.client(head.address)
    cluster_kit.wait_workers(cluster, 2)
    children = supervisor.descendants()
    assert len(children) >= 2

    os.kill(supervisor.pid, signal.SIGKILL)  # the supervisor alone
    supervisor.wait()
    try:
        wait_until(lambda: all(_gone(pid) for pid in children), STEP,
                   "the worker processes exiting after their parent")
    finally:
        for pid in children:  # on failure: leave no orphan holding our pipes
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not cluster_kit.alive_workers(cluster), STEP, "the head noticing")


# -- a restarted head forgets clients that never come back ---------------------------------

_CLIENT = """
import sys, time
from netlet import Cluster
from tests.cluster import tasks
cluster = Cluster(sys.argv[1])
futures = [cluster.submit(tasks.add, i, 1) for i in range(5)]
cluster._drain_sends(10.0)
print("submitted", flush=True)
time.sleep(600)
"""


def _stored_tasks(state: Path) -> int:
    with contextlib.closing(sqlite3.connect(state)) as db:
        return int(db.execute("SELECT count(*) FROM tasks").fetchone()[0])


@pytest.mark.timeout(90)
def test_restarted_head_drops_tasks_of_clients_that_never_return(
        cluster_kit: ClusterKit, tmp_path: Path) -> None:
    port, state = free_port(), tmp_path / "head.db"
    head = cluster_kit.head(port, state=state)  # no workers: the tasks stay queued
    client = cluster_kit.spawn([sys.executable, "-c", _CLIENT, head.address], name="client")
    client.stdout.wait_for("^submitted")
    assert _stored_tasks(state) == 5

    head.kill()
    client.kill()  # it never comes back
    head = cluster_kit.head(port, state=state, extra=["--client-grace", "1"])
    watcher = cluster_kit.client(head.address)
    assert watcher.status()["queued"] == 5  # restored: the client may still come back

    wait_until(lambda: watcher.status()["queued"] == 0, STEP, "the dead client's tasks dropped")
    wait_until(lambda: _stored_tasks(state) == 0, STEP, "head.db forgetting them")


# -- netlet status -------------------------------------------------------------------------


def _status(address: str, *args: str, columns: str | None = None) -> str:
    """``netlet status`` with its output piped (not a terminal); COLUMNS as given."""
    env = child_env()
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = columns
    result = subprocess.run([*netlet_command(), "status", "--head", address, *args],
                            capture_output=True, text=True, env=env, timeout=STEP * 3,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.timeout(60)
def test_status_drops_dead_workers(cluster_kit: ClusterKit) -> None:
    head, workers, cluster = cluster_kit.start(workers=2)
    workers[0].kill()
    cluster_kit.wait_workers(cluster, 1)

    info = json.loads(_status(head.address, "--json"))
    assert [n["pid"] for n in info["nodes"] if n["role"] == "worker"] == [workers[1].pid]
    table = _status(head.address)
    assert str(workers[1].pid) in table
    assert str(workers[0].pid) not in table
    assert "dead" not in table


@pytest.mark.timeout(60)
def test_status_piped_is_not_truncated(cluster_kit: ClusterKit) -> None:
    head, _workers, cluster = cluster_kit.start(workers=1)
    long_name = "a-rather-long-actor-name-" + "x" * 50
    cluster.spawn(tasks.Counter, name=long_name)

    table = _status(head.address, columns="40")  # a piped COLUMNS=40 must not cut it
    assert long_name in table
    assert head.address in table or cluster_kit.alive_workers(cluster)[0]["address"] in table


@pytest.mark.timeout(60)
def test_status_shows_one_id_per_worker_with_host_and_pid(cluster_kit: ClusterKit) -> None:
    head, workers, cluster = cluster_kit.start(workers=2)
    cluster.spawn(tasks.Counter, name="counter")
    info = json.loads(_status(head.address, "--json"))
    listed = {n["pid"]: n for n in info["nodes"] if n["role"] == "worker"}
    assert set(listed) == {w.pid for w in workers}
    owner = info["names"]["counter"][2]
    assert owner in {n["node"] for n in listed.values()}
    host = socket.gethostname()

    table = _status(head.address)
    rows = {line for line in table.splitlines() if "worker" in line}
    for pid, node in listed.items():
        row = next(r for r in rows if str(pid) in r)
        assert node["id"] in row
        assert host in row
        assert node["node"].startswith(node["id"])
    counter_row = next(r for r in table.splitlines() if "counter" in r)
    assert listed[next(p for p, n in listed.items() if n["node"] == owner)]["id"] in counter_row


@pytest.mark.timeout(60)
def test_status_watch_refreshes_and_stops_on_sigint(cluster_kit: ClusterKit) -> None:
    head = cluster_kit.head()
    watch = cluster_kit.spawn([*netlet_command(), "status", "--head", head.address, "--watch",
                               "--interval", "0.2"], name="status --watch")
    watch.stdout.wait_for(r"0 queued")
    mark = watch.stdout.mark()
    worker = cluster_kit.worker(head.address)
    watch.stdout.wait_for(rf"\b{worker.pid}\b", since=mark)

    watch.signal(signal.SIGINT)
    assert watch.wait() == 0
    assert "Traceback" not in watch.stderr.text()


# -- NETLET_HEAD and NETLET_KEY_FILE -------------------------------------------------------


@pytest.fixture
def keyed_head(cluster_kit: ClusterKit, tmp_path: Path) -> tuple[Proc, Path]:
    key_file = tmp_path / "cluster.key"
    write_key(key_file)
    return cluster_kit.head(key_file=key_file), key_file


@pytest.mark.timeout(60)
def test_head_listens_on_netlet_head(cluster_kit: ClusterKit,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("NETLET_HEAD", f"tcp://127.0.0.1:{port}")
    head = cluster_kit.spawn([*netlet_command(), "head"], name="head")
    assert head.stdout.wait_for(r"^tcp://").group(0)
    assert head.stdout.text().strip() == f"tcp://127.0.0.1:{port}"


@pytest.mark.timeout(60)
def test_worker_and_status_read_the_environment(
        cluster_kit: ClusterKit, keyed_head: tuple[Proc, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    head, key_file = keyed_head
    monkeypatch.setenv("NETLET_HEAD", head.address)
    monkeypatch.setenv("NETLET_KEY_FILE", str(key_file))
    supervisor = cluster_kit.spawn([*netlet_command(), "worker", "-n", "1"], name="worker")
    cluster = cluster_kit.client()  # Cluster() with neither address nor key
    cluster_kit.wait_workers(cluster, 1)
    assert set(supervisor.descendants()) >= {
        n["pid"] for n in cluster_kit.alive_workers(cluster)}

    info = json.loads(cluster_kit.run("status", "--json").stdout)
    assert [n["role"] for n in info["nodes"] if n["role"] == "worker"] == ["worker"]


@pytest.mark.timeout(60)
def test_explicit_arguments_win_over_the_environment(
        cluster_kit: ClusterKit, keyed_head: tuple[Proc, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    head, key_file = keyed_head
    write_key(tmp_path / "other.key")
    monkeypatch.setenv("NETLET_HEAD", f"tcp://127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("NETLET_KEY_FILE", str(tmp_path / "other.key"))

    wrong = cluster_kit.run("status", "--head", head.address)
    assert wrong.returncode != 0  # the address given, the environment's (wrong) key
    result = cluster_kit.run("status", "--head", head.address, "--key-file", str(key_file),
                             "--json")
    assert result.returncode == 0, result.stderr
    cluster = cluster_kit.client(head.address, key_file=str(key_file))
    assert cluster.status()["head"] == json.loads(result.stdout)["head"]


_EXECUTOR = """
import os
from netlet import Cluster, Executor
from tests.cluster import tasks
with Executor() as ex:
    print("executor", ex.submit(tasks.pid_after).result(30), flush=True)
with Cluster() as c:
    print("cluster", c.submit(tasks.pid_after).result(30), flush=True)
"""


@pytest.mark.timeout(90)
def test_cluster_executor_and_primes_use_the_environment(
        cluster_kit: ClusterKit, keyed_head: tuple[Proc, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    head, key_file = keyed_head
    key = load_key(key_file)
    worker = cluster_kit.worker(head.address, key=key)
    monkeypatch.setenv("NETLET_HEAD", head.address)
    monkeypatch.setenv("NETLET_KEY_FILE", str(key_file))

    script = cluster_kit.spawn([sys.executable, "-c", _EXECUTOR], name="script")
    assert script.wait(STEP * 3) == 0, script.stderr.text()
    assert script.stdout.text().split() == ["executor", str(worker.pid),
                                            "cluster", str(worker.pid)]

    primes = cluster_kit.run("primes", "--end", "20000", "--method", "naive", "--json")
    assert primes.returncode == 0, primes.stderr
    summary = json.loads(primes.stdout)
    assert summary["head"] == head.address
    assert summary["count"] == 2262


# -- a head on 0.0.0.0 without a default route ----------------------------------------------


def _in_netns(script: str, timeout: float = STEP * 3) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) in a fresh network namespace: only ``lo``, no route."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {probe.stderr.decode().strip()}")
    return subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True,
                          text=True, env=child_env(), timeout=timeout, check=False)


@pytest.mark.timeout(60)
def test_wildcard_head_without_a_route_refuses_a_loopback_address(tmp_path: Path) -> None:
    write_key(tmp_path / "k.key")
    netlet = " ".join(netlet_command())
    result = _in_netns(f"ip link set lo up; {netlet} head --listen tcp://0.0.0.0:0 "
                       f"--key-file {tmp_path / 'k.key'}")
    assert result.returncode != 0
    assert "--advertise" in result.stderr
    assert "Traceback" not in result.stderr
    assert "127.0.0.1" not in result.stdout  # it never handed out a loopback address


@pytest.mark.timeout(60)
def test_wildcard_head_without_a_route_advertises_a_local_address(tmp_path: Path) -> None:
    write_key(tmp_path / "k.key")
    netlet = " ".join(netlet_command())
    result = _in_netns(
        f"ip link set lo up; ip addr add 10.1.2.3/24 dev lo; {netlet} head --listen "
        f"tcp://0.0.0.0:0 --key-file {tmp_path / 'k.key'} > {tmp_path / 'out'} & pid=$!; "
        # poll for the printed address (up to 10 s), then stop the head
        f"for i in $(seq 200); do grep -q '^tcp://' {tmp_path / 'out'} && break; "
        f"sleep 0.05; done; kill $pid; cat {tmp_path / 'out'}")
    assert result.stdout.startswith("tcp://10.1.2.3:"), result.stderr


@pytest.mark.timeout(60)
def test_status_watch_on_a_terminal_fits_it_and_stops_on_ctrl_c(
        cluster_kit: ClusterKit) -> None:
    pexpect = pytest.importorskip("pexpect")
    head, workers, _ = cluster_kit.start(workers=1)
    env = child_env()
    env.pop("COLUMNS", None)
    term = pexpect.spawn(netlet_command()[0], ["status", "--head", head.address, "--watch",
                                               "--interval", "0.2"],
                         env=env, dimensions=(40, 100), encoding="utf-8", timeout=STEP)
    try:
        term.expect(rf"\b{workers[0].pid}\b")
        term.expect("queued")  # refreshed in place, again and again
        term.expect("queued")
        seen = term.before + term.after
        widths = {len(line) for line in re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", seen).splitlines()}
        assert max(widths) <= 100, "the table is wider than the terminal"
        term.sendintr()  # Ctrl-C
        term.expect(pexpect.EOF)
    finally:
        term.close()
    assert term.exitstatus == 0
    assert "Traceback" not in (term.before or "")
