"""``netlet dashboard`` and the ``--dashboard`` options of ``netlet head`` (and the bank).

The web layer is an optional extra: it is imported only when a dashboard is
asked for, and its absence is told as what to install.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from netlet.cli._tls import tls_config, tls_options
from netlet.cli._types import check_address
from netlet.cluster._env import DEFAULT_HEAD, ENV_HEAD, ENV_KEY_FILE
from netlet.errors import ConfigError
from netlet.transport import find_user_key, load_key

if TYPE_CHECKING:
    from netlet.web import Dashboard, HeadSource

__all__ = ["check_dashboard_options", "dashboard", "dashboard_options", "start_dashboard"]

F = TypeVar("F", bound=Callable[..., Any])
ENV_TOKEN = "NETLET_DASHBOARD_TOKEN"


def dashboard_options(fn: F) -> F:
    """``--dashboard ADDR``, ``--dashboard-token``, ``--dashboard-control``."""
    fn = click.option(
        "--dashboard-control", is_flag=True,
        help="Let the dashboard act (cancel a task, drain a worker, start an audit): POSTs "
             "with the token and a CSRF token. Needs a token, even on loopback.")(fn)
    fn = click.option(
        "--dashboard-token", default=None, envvar=ENV_TOKEN, show_envvar=True,
        help="Token every dashboard request must carry [default: derived from the cluster "
             "key when one is needed].")(fn)
    return click.option(
        "--dashboard", "dashboard_addr", metavar="HOST:PORT", default=None,
        help="Serve the web dashboard and /metrics here (e.g. 127.0.0.1:8340). Beyond "
             "loopback it needs a token. Needs netlet[web].")(fn)


def check_dashboard_options(dashboard_addr: str | None, control: bool) -> None:
    """--dashboard-control or --dashboard-token typed without --dashboard is a mistake.

    (A token from $NETLET_DASHBOARD_TOKEN is not: the environment serves every command.)
    """
    if dashboard_addr:
        return
    source = click.get_current_context().get_parameter_source
    if control or source("dashboard_token") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--dashboard-control and --dashboard-token are for the "
                               "dashboard: give --dashboard HOST:PORT too")


def _need_web() -> None:
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise ConfigError("the dashboard needs the web extra: pip install 'netlet[web]'")


def start_dashboard(addr: str, *, head: HeadSource | None = None,
                    providers: list[Any] | None = None,
                    token: str | None = None, key: bytes | None = None,
                    control: bool = False, title: str = "netlet") -> Dashboard:
    """Start a dashboard and tell where it is (the URL carries the token, if any)."""
    _need_web()
    from netlet.web import Dashboard

    board = Dashboard(head, list(providers or []), listen=addr, token=token, key=key,
                      control=control, title=title).start()
    mode = "control on" if control else "read-only"
    console = Console(stderr=True)
    # The token opens the dashboard: shown to a person at a terminal, never written to
    # a log file or a pipe (there, say where it comes from instead).
    url = board.url if console.is_terminal else board.base_url + "/"
    note = ""
    if board.token and not console.is_terminal:
        note = ("; it needs its token: the one given, or derived from the cluster key "
                "(netlet.web.derive_token)" if token or key else
                "; it needs a token: give --dashboard-token to know it")
    # escape(): a token may hold "[" (any printable character is allowed), not markup.
    console.print(f"dashboard at [cyan]{escape(url)}[/] ({mode}){note}", soft_wrap=True)
    return board


@click.command()
@click.option("--head", "head_addr", default=DEFAULT_HEAD, show_default=True, envvar=ENV_HEAD,
              show_envvar=True, callback=check_address, help="The head to watch.")
@click.option("--key-file", type=click.Path(dir_okay=False), default=None, envvar=ENV_KEY_FILE,
              show_envvar=True,
              help="The cluster key (`netlet keygen`); without it, a head on this machine is "
                   "reached with its per-user key.")
@click.option("--listen", default="127.0.0.1:8340", show_default=True, metavar="HOST:PORT",
              help="Where to serve the dashboard. Beyond loopback it needs a token.")
@click.option("--token", default=None, envvar=ENV_TOKEN, show_envvar=True,
              help="Token every request must carry [default: derived from the cluster key "
                   "when one is needed].")
@tls_options
def dashboard(head_addr: str, key_file: str | None, listen: str, token: str | None,
              tls_cert: str | None, tls_key: str | None, tls_ca: str | None) -> None:
    """Serve a web dashboard of a running head, watching it as a client.

    It needs the cluster key like any member, and is read-only: tasks are
    cancelled by their own clients. Stops on Ctrl-C or SIGTERM.
    """
    from netlet.cli._signals import stop_on_signals

    _need_web()
    from netlet.web import RemoteHead

    key = load_key(key_file) if key_file else find_user_key(head_addr)
    if key is None:
        raise ConfigError(f"no key for {head_addr}: give --key-file (the cluster key), or "
                          "start the head on this machine as this user")
    source = RemoteHead(head_addr, key=key, tls=tls_config(tls_cert, tls_key, tls_ca))
    try:
        source.check()  # fail now, with the head's reason, not on the first page
    except Exception:
        source.close()
        raise
    stop = stop_on_signals()
    board = start_dashboard(listen, head=source, token=token, key=key, title="netlet")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        board.stop()
