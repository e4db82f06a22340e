"""``netlet head``, ``netlet worker``, ``netlet status``: run and inspect a cluster."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from netlet.cli._dashboard import check_dashboard_options, dashboard_options, start_dashboard
from netlet.cli._signals import stop_on_signals
from netlet.cli._tls import tls_args, tls_config, tls_options
from netlet.cli._types import Seconds, check_address
from netlet.cluster import Cluster, Head, HeadConfig, HeadStore, usable_cpus, worker_key
from netlet.cluster._env import DEFAULT_HEAD, ENV_HEAD, ENV_KEY_FILE
from netlet.cluster._worker import EXIT_CANNOT_LISTEN, EXIT_KEY_REFUSED
from netlet.errors import ConfigError, HandshakeError, NetletError
from netlet.node import Node
from netlet.transport import (
    TLSConfig,
    find_user_key,
    is_local_address,
    load_key,
    save_user_key,
    server_user_key,
)

__all__ = ["head", "status", "worker"]

_key_option = click.option(
    "--key-file", type=click.Path(dir_okay=False), default=None, envvar=ENV_KEY_FILE,
    show_envvar=True,
    help="Cluster key written by `netlet keygen`; required beyond this machine. Without it, "
         "on loopback or a unix socket, the per-user key of the head's address is used "
         "(created by the head; only you can read it).")

_old_key_option = click.option(
    "--old-key-file", "old_key_files", multiple=True, type=click.Path(dir_okay=False),
    metavar="FILE",
    help="During a key rotation: a key still accepted besides --key-file (the new one), "
         "so workers and clients move to the new key one by one; restart without it once "
         "all have. Repeatable.")


def _load_key(path: str | None) -> bytes | None:
    return load_key(path) if path else None


def _old_keys(key_file: str | None, old_key_files: tuple[str, ...]) -> tuple[bytes, ...]:
    if old_key_files and not key_file:
        raise ConfigError("--old-key-file needs --key-file (the new key of the rotation)")
    return tuple(load_key(p) for p in old_key_files)


def _open_store(state: str) -> HeadStore:
    try:
        return HeadStore(state)
    except (sqlite3.Error, OSError) as e:
        raise ConfigError(f"--state {state}: cannot use it as the head's state file ({e}); "
                          "move it, or give another --state") from None


@click.command()
@click.option("--listen", default=DEFAULT_HEAD, show_default=True, envvar=ENV_HEAD,
              show_envvar=True, callback=check_address, help="Address to serve the head on.")
@_key_option
@_old_key_option
@tls_options
@click.option("--insecure", is_flag=True,
              help="Listen beyond loopback WITHOUT a key (anyone reaching it can run code).")
@click.option("--state", type=click.Path(dir_okay=False), default=None,
              help="SQLite file keeping the queue, the names and the spawned actors (with "
                   "their restart policy); a head restarted on it, even after kill -9, "
                   "resumes from it. Only you can read it (0600); a file of another user "
                   "is refused.")
@click.option("--allow-pickle", is_flag=True,
              help="Let clients send functions by value to workers (lambdas, closures). "
                   "Only over keyed links, and only to workers started with --allow-pickle.")
@click.option("--advertise", metavar="HOST", default=None,
              help="Host name or IP others dial to reach this head, when --listen is "
                   "0.0.0.0 or :: [default: the address of the default route's interface, "
                   "else the first non-loopback address; with neither the head refuses "
                   "to start].")
@click.option("--client-grace", type=Seconds(0.1), default=60.0, show_default=True,
              metavar="SECONDS",
              help="How long finished results wait for a client that lost its connection, "
                   "and how long a head restarted from --state keeps the tasks of clients "
                   "that have not come back; then they are dropped.")
@click.option("--result-budget", type=click.IntRange(1), default=256, show_default=True,
              metavar="MIB",
              help="MiB of finished results the head may hold for clients that have not "
                   "taken them yet (slow or paused ones). A client past its part (the budget "
                   "split among the clients with tasks, plus one part kept free) has its own "
                   "tasks held back until it catches up; others' go on.")
@dashboard_options
def head(listen: str, key_file: str | None, old_key_files: tuple[str, ...],
         tls_cert: str | None, tls_key: str | None, tls_ca: str | None, insecure: bool,
         state: str | None, allow_pickle: bool, advertise: str | None, client_grace: float,
         result_budget: int,
         dashboard_addr: str | None, dashboard_token: str | None,
         dashboard_control: bool) -> None:
    """Start a head: name service, membership and task scheduler.

    Workers join it with `netlet worker --join ADDR`; programs use it through
    `netlet.Cluster(ADDR)` or `netlet.Executor(ADDR)`. Stops on Ctrl-C or SIGTERM.

    A head never runs without a key. Without --key-file, on loopback or a unix
    socket, it uses the per-user key file of its address (mode 0600, in
    $XDG_RUNTIME_DIR/netlet or <tmp>/netlet-UID; kept for a restart on the
    same address): your own workers, `netlet status` and clients on this
    machine find it by themselves, and other users are refused. Beyond
    loopback it needs --key-file (or --insecure, which lets anyone run code).

    With --tls-cert, --tls-key and --tls-ca (from `netlet certs`) every
    connection is mutual TLS: start the workers, and give clients, certificates
    of the same CA. The key is still required: TLS adds encryption and a
    certificate check, it does not replace the key.
    """
    check_dashboard_options(dashboard_addr, dashboard_control)
    tls = tls_config(tls_cert, tls_key, tls_ca)
    key = _load_key(key_file)
    per_user = key is None and is_local_address(listen)
    if per_user:
        key = server_user_key(listen)
    if allow_pickle and key is None:
        raise ConfigError("--allow-pickle needs a key (--key-file): pickles only travel "
                          "between peers that proved they hold it")
    old_keys = _old_keys(key_file, old_key_files)
    store = _open_store(state) if state else None
    try:
        node = Node(listen=listen, key=key, old_keys=old_keys, tls=tls, insecure=insecure,
                    allow_pickle=allow_pickle, call_timeout=None, advertise=advertise)
    except OSError as e:
        raise click.ClickException(e.strerror or str(e)) from None  # names the address
    assert node.address is not None
    where = ""
    if per_user and key is not None:
        where = f", per-user key {save_user_key(node.address, key)}"
    config = HeadConfig(client_grace=client_grace, result_budget=result_budget * 2**20)
    head_obj = Head(node, config, store)
    node.serve(head_obj, "netlet.head")
    head_obj.start()
    board = None
    if dashboard_addr:
        from netlet.web import LocalHead

        try:
            board = start_dashboard(dashboard_addr, head=LocalHead(head_obj),
                                    token=dashboard_token, key=key, control=dashboard_control)
        except BaseException:
            node.close()
            raise
    stop = stop_on_signals()  # before saying we are ready: a Ctrl-C right after stops us cleanly
    # escape(): an IPv6 address ("[fd00::1]") or a path is text, not rich markup.
    Console(stderr=True).print(f"netlet head listening on [cyan]{escape(node.address)}[/]"
                               + escape(where + (f", state in {state}" if state else "")),
                               soft_wrap=True)
    print(node.address, flush=True)
    while not stop.wait(0.5):
        pass
    if board is not None:
        board.stop()
    node.close()
    if store is not None:
        store.close()


@click.command()
@click.option("--join", "join_addr", required=True, envvar=ENV_HEAD, show_envvar=True,
              metavar="ADDR", callback=check_address, help="The head's address.")
@click.option("--processes", "-n", type=click.IntRange(1, 1024), default=None,
              help="Worker processes to run [default: the CPUs this process may use].")
@_key_option
@_old_key_option
@tls_options
@click.option("--credit", default="1", show_default=True,
              help="Tasks a worker holds beyond the one it runs, or 'auto' to cover a round trip.")
@click.option("--allow-pickle", is_flag=True,
              help="Run functions sent by value (pickled), when the head and the client "
                   "agreed too; the workers are keyed in any case.")
@click.option("--listen", default=None, callback=check_address,
              help="Where each worker serves objects placed on it "
                   "[default: an address the head can reach].")
def worker(join_addr: str, processes: int | None, key_file: str | None,
           old_key_files: tuple[str, ...], tls_cert: str | None, tls_key: str | None,
           tls_ca: str | None, credit: str, allow_pickle: bool, listen: str | None) -> None:
    """Join worker processes to a head; they pull and run tasks until stopped.

    A worker whose process dies is started again. While the head is away the
    workers retry joining with backoff, and rejoin a restarted head by themselves.

    Workers never run without the cluster key (their own listener would let
    anyone place code on them): without --key-file they use the per-user key
    of a head on this machine started by the same user, and refuse otherwise.

    During a key rotation, a worker moved to the new key (--key-file) keeps the
    old one (--old-key-file) until every peer has moved: it then still joins a
    head not restarted yet, and clients and other workers still on the old key
    still reach the objects placed on it. With --tls-cert, --tls-key and
    --tls-ca the worker joins a TLS head and serves its objects over TLS.
    """
    if credit != "auto" and not (credit.isascii() and credit.isdigit()):
        raise click.BadParameter("a whole number or 'auto'", param_hint="--credit")
    tls = tls_config(tls_cert, tls_key, tls_ca)
    old_keys = _old_keys(key_file, old_key_files)
    key = worker_key(join_addr, _load_key(key_file))
    _check_key(join_addr, key, old_keys, tls)
    n = processes or usable_cpus()
    cmd = [sys.executable, "-m", "netlet.cluster", "--join", join_addr, "--credit", credit,
           "--key-stdin", "--with-parent", *tls_args(tls)]
    if allow_pickle:
        cmd.append("--pickle")
    if listen is not None:
        cmd += ["--listen", listen]
    console = Console(stderr=True)
    stop = stop_on_signals()

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        # The key, then the old ones: on stdin, never on a command line others can read.
        proc.stdin.write(" ".join(k.hex() for k in (key, *old_keys)).encode() + b"\n")
        proc.stdin.flush()
        return proc

    procs = [start() for _ in range(n)]
    console.print(f"{n} worker process(es) joining [cyan]{escape(join_addr)}[/]")
    failures = 0
    try:
        while not stop.wait(0.5):
            for i, proc in enumerate(procs):
                code = proc.poll()
                if code is None:
                    continue
                if code == EXIT_KEY_REFUSED:
                    raise click.ClickException(_wrong_key(join_addr))
                if code == EXIT_CANNOT_LISTEN:
                    raise click.ClickException(
                        f"a worker cannot listen on {listen} (see above); with a fixed "
                        "--listen port run one process (-n 1) per address")
                failures += 1
                if failures > 10 * n:
                    raise click.ClickException(
                        "workers keep exiting (wrong key? see the messages above); giving up")
                console.print(f"worker {proc.pid} exited with {code}; starting another")
                procs[i] = start()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _wrong_key(address: str) -> str:
    return (f"wrong cluster key: the head at {address} refused it (give the key file the "
            "head was started with: --key-file or NETLET_KEY_FILE)")


def _check_key(address: str, key: bytes, old_keys: tuple[bytes, ...] = (),
               tls: TLSConfig | None = None) -> None:
    """Fail at once, before starting any process, if the head refuses ``key``.

    A head that cannot be reached yet is fine: the workers wait for it.
    """
    node = Node(key=key, old_keys=old_keys, tls=tls, call_timeout=10)
    try:
        node.proxy(address, "netlet.head", timeout=10).names()
    except HandshakeError:
        raise click.ClickException(_wrong_key(address)) from None
    except (NetletError, OSError):
        pass
    finally:
        node.close()


@click.command()
@click.option("--head", "head_addr", default=DEFAULT_HEAD, show_default=True, metavar="ADDR",
              envvar=ENV_HEAD, show_envvar=True, callback=check_address,
              help="The head's address.")
@_key_option
@tls_options
@click.option("--json", "as_json", is_flag=True,
              help="Print the status as JSON, for scripts (schema in docs/cluster.md).")
@click.option("--watch", "-w", is_flag=True, help="Refresh the view until Ctrl-C.")
@click.option("--interval", type=Seconds(0.1, 86400), default=1.0, show_default=True,
              metavar="SECONDS", help="Seconds between refreshes with --watch.")
def status(head_addr: str, key_file: str | None, tls_cert: str | None, tls_key: str | None,
           tls_ca: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Show a cluster's nodes, names and task counts.

    Every node has one short id (the first 8 hex digits of its node id), used in
    every table; workers show their host and pid. Without --key-file, a head on
    this machine is reached with its per-user key. A head under TLS needs
    --tls-cert, --tls-key and --tls-ca too.
    """
    tls = tls_config(tls_cert, tls_key, tls_ca)
    node = None
    if tls is not None:
        key = _load_key(key_file) or find_user_key(head_addr)
        node = Node(key=key, tls=tls, call_timeout=30)
    try:
        with Cluster(head_addr, key_file=key_file, node=node) as cluster:
            if not watch:
                _show(_with_ids(cluster.status()), as_json)
                return
            _watch(cluster, as_json, interval)
    except NetletError as e:
        raise click.ClickException(f"cannot reach the head at {head_addr}: {e}") from None
    finally:
        if node is not None:
            node.close()


def _with_ids(info: dict[str, Any]) -> dict[str, Any]:
    """Give each node its short id, the one every view shows."""
    for n in info.get("nodes", []):
        n["id"] = str(n.get("node", ""))[:8]
    return info


def _show(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2, default=str), flush=True)
    else:
        _console().print(_render(info))


def _watch(cluster: Cluster, as_json: bool, interval: float) -> None:
    """Refresh until SIGINT/SIGTERM: in place on a terminal, else one view per refresh."""
    stop = stop_on_signals()
    console = _console()
    if as_json or not console.is_terminal:
        while not stop.is_set():
            info = _with_ids(cluster.status())
            if as_json:
                print(json.dumps(info, default=str), flush=True)
            else:
                console.print(_render(info))
                console.print()
                sys.stdout.flush()
            stop.wait(interval)
        return
    with Live(_render(_with_ids(cluster.status())), console=console,
              auto_refresh=False, screen=False) as live:
        while not stop.wait(interval):
            live.update(_render(_with_ids(cluster.status())), refresh=True)


def _console() -> Console:
    """A terminal gets its own width (cells wrap); a pipe gets whole lines, never cut."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=100_000, no_color=True, highlight=False)
    return console


def _shown(value: Any, limit: int = 200) -> str:
    """Text a member sent about itself, made safe to print: members choose these strings.

    Control characters (ANSI escapes, carriage returns, bidi overrides) are shown
    as ``\\x..`` escapes instead of reaching the terminal, and rich markup is
    escaped so ``[bold red]`` prints as typed; long values are cut.
    """
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return escape(safe)


def _number(value: Any, fmt: str = "{}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else _shown(value)


def _render(info: dict[str, Any]) -> Group:
    nodes = Table(title=f"nodes (head {_shown(str(info['head'])[:8])})", title_justify="left")
    for col in ("id", "role", "host", "pid", "name", "address", "up", "heartbeat", "running",
                "done", "failed"):
        nodes.add_column(col, overflow="fold")
    now = time.time()
    for n in info["nodes"]:
        if not n["alive"]:
            continue  # a dead worker (an older head lists them) or a client gone
        since = n["since"]
        up = f"{now - since:.0f} s" if isinstance(since, (int, float)) else _shown(since)
        nodes.add_row(_shown(n["id"]), _shown(n["role"]), _shown(n["host"]),
                      _number(n.get("pid") or ""), _shown(n.get("name", "")),
                      _shown(n["address"]), up,
                      _number(n["heartbeat_age"], "{:.1f} s ago"), _number(n["running"]),
                      _number(n["done"]), _number(n["failed"]))
    names = Table(title="names", title_justify="left")
    for col in ("name", "kind", "address", "owner"):
        names.add_column(col, overflow="fold")
    for name, (kind, address, owner) in sorted(info["names"].items()):
        names.add_row(_shown(name), _shown(kind), _shown(address), _shown(str(owner)[:8]))
    tasks = (f"tasks: {_number(info['queued'])} queued, {_number(info['running'])} running"
             + (f", {_number(info['refused_results'])} results refused"
                if info.get("refused_results") else "")
             + (f", {_mib(info['results_waiting'])} of results waiting for clients"
                if info.get("results_waiting") else ""))
    lines = [tasks]
    if info.get("paused"):
        lines.append("hand-outs paused: results nobody took yet fill the head's result "
                     "budget (they go on once clients read theirs)")
    for n in info["nodes"]:
        if n.get("held"):
            lines.append(f"held back: client {_shown(n['id'])}'s queued tasks "
                         f"({_mib(n.get('results_waiting', 0))} of its results wait unread; "
                         "they go out again once it reads)")
    return Group(nodes, names, Text.from_markup("\n".join(lines)))


def _mib(value: Any) -> str:
    return (f"{value / (1024 * 1024):.1f} MiB" if isinstance(value, (int, float))
            else _shown(value))
