"""``netlet bank`` (serve, open, close, list, audit) and ``netlet atm`` (terminal, scripts, swarm).

This is the only bank module that reads files, stdin and signals; it turns
options into a Ledger, a Node and the service, or into a BankClient.
Exit status of every command that talks to the bank: 0 done, 1 refused (the
bank answered no), 2 bad usage, 3 outcome unknown (the request may have been
sent; a mutating one's key is printed: ask with ``netlet atm ... outcome
KEY``), 4 not sent (no connection to the bank was ever up: nothing was done).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from netlet.apps.bank._atm import (
    BankClient,
    BankUnavailable,
    NotAdmitted,
    OutcomeUnknown,
    RetryNotice,
    new_key,
)
from netlet.apps.bank._commands import (
    AccountNotEmpty,
    BankError,
    InsufficientFunds,
    format_amount,
)
from netlet.apps.bank._ledger import Ledger
from netlet.apps.bank._messages import RequestOutcome
from netlet.apps.bank._pins import check_pin_format
from netlet.apps.bank._service import (
    MAX_SESSIONS,
    MAX_SESSIONS_PER_ACCOUNT,
    SERVICE_NAME,
    SESSION_TTL,
    BankService,
    ServiceError,
)
from netlet.apps.bank._store import audit_ledger
from netlet.cli._dashboard import check_dashboard_options, dashboard_options, start_dashboard
from netlet.cli._signals import stop_on_signals
from netlet.cli._tls import tls_config, tls_options
from netlet.errors import NetletError
from netlet.node import Node
from netlet.transport import (
    TLSConfig,
    find_user_key,
    is_local_address,
    load_key,
    parse_address,
    save_user_key,
    server_user_key,
)

# atm: see __getattr__ at the end
__all__ = ["atm", "bank", "outcome_line", "say_done"]  # noqa: F822

DEFAULT_BANK = "tcp://127.0.0.1:7350"
EXIT_REFUSED = 1
EXIT_UNKNOWN = 3
EXIT_NOT_SENT = 4


_F = TypeVar("_F", bound=Callable[..., Any])


def _options(*decorators: Callable[[_F], _F]) -> Callable[[_F], _F]:
    def apply(func: _F) -> _F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func
    return apply


_security = _options(
    click.option("--key-file", type=click.Path(dir_okay=False), default=None,
                 help="Key from `netlet keygen`; needed beyond this machine, and it is what "
                      "makes a caller an operator. Without it, a bank on loopback or a unix "
                      "socket uses its per-user key file, which only you can read."),
    tls_options,
)
_patience = _options(
    click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
                 help="Seconds one attempt may take, connecting and the handshake included."),
    click.option("--retry-for", type=click.FloatRange(0), default=30.0, show_default=True,
                 help="Seconds to keep retrying while the bank does not answer."),
)
_bank_option = click.option("--bank", "bank_addr", default=DEFAULT_BANK, show_default=True,
                            help="The bank's address.")


@dataclass(frozen=True)
class _Security:
    key: bytes | None
    tls: TLSConfig | None


def _security_from(key_file: str | None, tls_cert: str | None, tls_key: str | None,
                   tls_ca: str | None) -> _Security:
    """The key and TLS settings of a client command. With no --key-file the key is None,
    and the clients (BankClient, Swarm) use the per-user key of a local bank, if any."""
    try:
        return _server_security(key_file, tls_cert, tls_key, tls_ca)
    except NetletError as exc:  # the command line's mistake (exit 2), never a refusal (1)
        raise click.UsageError(str(exc)) from None


def _server_security(key_file: str | None, tls_cert: str | None, tls_key: str | None,
                     tls_ca: str | None) -> _Security:
    """:func:`_security_from` for ``bank serve``: its mistakes exit 1, as other servers'."""
    tls = tls_config(tls_cert, tls_key, tls_ca)
    return _Security(load_key(key_file) if key_file else None, tls)


def _client(bank_addr: str, sec: _Security, timeout: float = 10.0,
            retry_for: float = 30.0, *, quiet: bool = False) -> BankClient:
    try:
        client = BankClient(bank_addr, key=sec.key, tls=sec.tls, timeout=timeout,
                            retry_for=retry_for)
    except NetletError as exc:  # a bad address: bad usage (exit 2), and nothing was sent
        raise click.UsageError(str(exc)) from None
    if not quiet:
        client.on_retry = _say_retrying(bank_addr, retry_for)
    return client


def _say_retrying(address: str, retry_for: float) -> Callable[[RetryNotice], None]:
    """Tell stderr, now and then, that the bank is not answering and what is retried."""
    def notice(n: RetryNotice) -> None:
        if n.attempt == 1 or n.attempt % 10 == 0:
            text = str(n.error) or type(n.error).__name__
            say_done(f"the bank at {address} is not answering ({text[:120]}); still trying "
                     f"the {n.what} (attempt {n.attempt + 1}, {n.elapsed:.0f} of at most "
                     f"{retry_for:.0f} s)", err=True)
    return notice


_R = TypeVar("_R")


def _answer(ctx: click.Context | None, what: str, func: Callable[[], _R],
            key: str | None = None) -> _R:
    """``func()``, with each way of not getting an answer mapped to its exit status.

    ``key``: the idempotency key of a mutating request, printed if it is interrupted
    (Ctrl-C or SIGTERM): it may have been sent, so exit 3, never 1 (a refusal) or death
    by a signal.
    """
    code, text = 0, ""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops as Ctrl-C does
    try:
        return func()
    except KeyboardInterrupt:
        code, text = EXIT_UNKNOWN, f"UNKNOWN: the {what} was interrupted; it may have been sent"
        if key is not None:
            text += f" (and applied at most once: ask with its key)\nkey: {key}"
    except OutcomeUnknown as exc:
        code, text = EXIT_UNKNOWN, f"UNKNOWN: {exc}\nkey: {exc.key}"
    except NotAdmitted as exc:
        if exc.reached:
            code, text = EXIT_UNKNOWN, f"UNKNOWN: no answer to the {what}: {exc}"
        else:  # the bank turned this ATM away: a refusal, and nothing was sent
            raise click.ClickException(f"refused: {exc}") from None
    except BankUnavailable as exc:
        if exc.reached:
            code, text = EXIT_UNKNOWN, f"UNKNOWN: no answer to the {what}: {exc}"
        else:
            code, text = EXIT_NOT_SENT, f"NOT SENT: {exc}" + (
                "" if "nothing was sent" in str(exc) else "; nothing was sent")
    except (BankError, ServiceError) as exc:
        raise _refused(exc) from None
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except Exception as exc:  # an error the bank did not mean (a bug there, a type not ours)
        code, text = EXIT_UNKNOWN, f"UNKNOWN: the {what} failed: {exc}"
    say_done(text, err=True)
    if ctx is not None:
        ctx.exit(code)
    raise SystemExit(code)


def say_done(text: str, *, err: bool = False) -> None:
    """Print what became of a request. A stdout or stderr nobody reads any more (a pipe
    whose reader is gone) must not change the exit status, whereas click would exit 1
    for the broken pipe, which says the bank refused the request."""
    stream = sys.stderr if err else sys.stdout
    try:
        click.echo(text, err=err)
        stream.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())  # so the flush at exit does not fail too
        os.close(devnull)


def _read_pin(pin_stdin: bool, confirm: bool = False) -> str:
    if pin_stdin:
        pin = sys.stdin.readline().strip()
    elif not sys.stdin.isatty():
        raise click.UsageError("there is no terminal to ask for the PIN on; pass it on "
                               "stdin with --pin-stdin")
    else:
        pin = click.prompt("PIN", hide_input=True, confirmation_prompt=confirm)
    try:
        return check_pin_format(pin)
    except ValueError:
        raise click.BadParameter("a PIN is 4 to 12 digits", param_hint="PIN") from None


def _refused(exc: BankError | ServiceError) -> click.ClickException:
    """A refusal as one sentence, amounts shown as money rather than cents."""
    if isinstance(exc, InsufficientFunds):
        text = (f"account {exc.account!r} holds {format_amount(exc.balance)}, "
                f"less than {format_amount(exc.amount)}; nothing was taken")
    elif isinstance(exc, AccountNotEmpty):
        text = f"account {exc.account!r} still holds {format_amount(exc.balance)}; empty it first"
    else:
        text = str(exc) or type(exc).__name__
    return click.ClickException(f"refused: {text}")


# -- netlet bank ------------------------------------------------------------------------


@click.group()
def bank() -> None:
    """Run the bank and manage its accounts (see docs/bank.md).

    \b
    netlet bank serve --listen tcp://127.0.0.1:7350 --db bank.db
    netlet bank open alice --bank tcp://127.0.0.1:7350
    netlet bank list / close NAME / outcome KEY / audit --db bank.db
    """


@bank.command()
@click.option("--listen", default=DEFAULT_BANK, show_default=True, help="Address to serve on.")
@click.option("--db", default="bank.db", show_default=True, type=click.Path(dir_okay=False),
              help="The ledger: an SQLite file (created if missing), or a PostgreSQL URL "
                   "postgresql://USER:PASSWORD@HOST:PORT/DB, which several `bank serve` "
                   "may share (needs netlet[postgres]; see docs/bank.md).")
@click.option("--create", is_flag=True,
              help="Start a new, empty ledger in an existing empty file (a missing file is "
                   "created anyway).")
@_security
@click.option("--insecure", is_flag=True,
              help="Listen beyond loopback without a key (customers only: operator calls "
                   "are then refused).")
@click.option("--group-commit/--no-group-commit", default=True, show_default=True,
              help="Commit many requests with one fsync, or one fsync per request.")
@click.option("--max-batch", type=click.IntRange(1, 4096), default=256, show_default=True)
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=2.0, show_default=True,
              help="How long a group waits for requests on their way.")
@click.option("--lock-seconds", type=click.FloatRange(0), default=300.0, show_default=True,
              help="How long three wrong PINs lock a card.")
@click.option("--session-ttl", type=click.FloatRange(1), default=SESSION_TTL, show_default=True,
              help="Seconds a card session's token stays valid.")
@click.option("--max-sessions", type=click.IntRange(1), default=MAX_SESSIONS, show_default=True,
              help="Card sessions kept at most (each account keeps its newest "
                   f"{MAX_SESSIONS_PER_ACCOUNT}).")
@click.option("--advertise", default=None,
              help="Host or IP to give out as the bank's address (for a wildcard --listen).")
@click.option("--head", "head_addr", default=None, envvar="NETLET_HEAD", show_envvar=True,
              help="Register the bank in this cluster head's name service.")
@click.option("--name", default=SERVICE_NAME, show_default=True,
              help="Name to register under with --head.")
@dashboard_options
def serve(listen: str, db: str, create: bool, key_file: str | None, tls_cert: str | None,
          tls_key: str | None, tls_ca: str | None, insecure: bool, group_commit: bool,
          max_batch: int, max_wait_ms: float, lock_seconds: float, session_ttl: float,
          max_sessions: int, advertise: str | None, head_addr: str | None, name: str,
          dashboard_addr: str | None, dashboard_token: str | None,
          dashboard_control: bool) -> None:
    """Serve the bank; stops on Ctrl-C or SIGTERM, after committing what is queued.

    Prints its address on stdout once it listens. Operator calls (open, close,
    list) are allowed to callers that hold the bank's key. The bank never runs
    without one on this machine: without --key-file, on loopback or a unix
    socket, it uses the per-user key file of its address (mode 0600, in
    $XDG_RUNTIME_DIR/netlet or <tmp>/netlet-UID; with --head, the head's own
    per-user key): your own `netlet bank` commands and ATMs on this machine
    find it by themselves, other users are refused. Beyond loopback without a
    key only --insecure serves, to customers only.
    """
    check_dashboard_options(dashboard_addr, dashboard_control)
    sec = _server_security(key_file, tls_cert, tls_key, tls_ca)
    try:
        parse_address(listen)  # a bad address is refused before the ledger makes a file
    except NetletError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    # The ledger first: a file another bank holds, or that is not a sound ledger, is
    # refused before anything is created or the port is bound.
    ledger = Ledger(db, group_commit=group_commit, max_batch=max_batch,
                    max_wait=max_wait_ms / 1000, lock_seconds=lock_seconds, create=create)
    per_user = sec.key is None and is_local_address(listen)
    if per_user:
        shared = find_user_key(head_addr) if head_addr else None  # one key with its head
        try:
            sec = _Security(shared or server_user_key(listen), sec.tls)
        except BaseException:
            ledger.close(discard=True)
            raise
    try:
        node = Node(listen=listen, key=sec.key, tls=sec.tls, insecure=insecure,
                    max_threads=256, call_timeout=None, advertise=advertise)
    except OSError as e:
        ledger.close(discard=True)
        raise click.ClickException(e.strerror or str(e)) from None  # names the address
    except BaseException:
        ledger.close(discard=True)
        raise
    assert node.address is not None
    if per_user and sec.key is not None:
        save_user_key(node.address, sec.key)
    # Only the key makes an operator: a bank on this machine always has one (its
    # per-user key), and one beyond loopback without a key (--insecure) has none.
    # The advertised address never decides.
    operator = sec.key is not None
    service = BankService(ledger, operator=operator, session_ttl=session_ttl,
                          max_sessions=max_sessions, clock=node.config.clock)
    ref = node.serve(service, SERVICE_NAME)
    console = Console(stderr=True)
    cluster = None
    board = None
    ready = False
    try:
        if dashboard_addr:
            from netlet.apps.bank._dashboard import BankProvider

            board = start_dashboard(dashboard_addr, providers=[BankProvider(ledger)],
                                    token=dashboard_token, key=sec.key,
                                    control=dashboard_control, title="netlet bank")
        if head_addr:
            from netlet.cluster import Cluster

            cluster = Cluster(head_addr, node=node)
            cluster.register(name, node.proxy_for(ref))
        mode = "group commit" if group_commit else "one fsync per request"
        stop = stop_on_signals()  # before saying we are ready: a Ctrl-C right after stops us
        console.print(f"netlet bank listening on [cyan]{node.address}[/], ledger "
                      f"{ledger.location} ({mode}); "
                      f"operator calls {'allowed' if operator else 'refused (no key)'}"
                      + (f"; registered as {name!r} at {head_addr}" if cluster else ""),
                      soft_wrap=True)
        print(node.address, flush=True)
        ready = True
        while not stop.wait(0.5):
            pass
    finally:
        if board is not None:
            board.stop()
        if cluster is not None:
            cluster.close()
        node.close()
        ledger.close(discard=not ready)  # a refused start: a new ledger that took nothing


@bank.command("open")
@click.argument("account")
@click.option("--owner", default=None, help="The owner's name [default: ACCOUNT].")
@click.option("--pin-stdin", is_flag=True, help="Read the PIN from the first line of stdin.")
@_bank_option
@_security
@_patience
def open_(account: str, owner: str | None, pin_stdin: bool, bank_addr: str,
          key_file: str | None, tls_cert: str | None, tls_key: str | None,
          tls_ca: str | None, timeout: float, retry_for: float) -> None:
    """Open ACCOUNT (an operator call); asks for its PIN, hashed here with scrypt."""
    pin = _read_pin(pin_stdin, confirm=True)
    sec = _security_from(key_file, tls_cert, tls_key, tls_ca)
    key = new_key("op")
    with _client(bank_addr, sec, timeout, retry_for) as client:
        _answer(None, f"opening of {account}",
                lambda: client.open_account(account, owner or account, pin, key=key), key)
    say_done(f"opened account {account}")


@bank.command()
@click.argument("account")
@_bank_option
@_security
@_patience
def close(account: str, bank_addr: str, key_file: str | None, tls_cert: str | None,
          tls_key: str | None, tls_ca: str | None, timeout: float, retry_for: float) -> None:
    """Close ACCOUNT, which must be empty (an operator call)."""
    sec = _security_from(key_file, tls_cert, tls_key, tls_ca)
    with _client(bank_addr, sec, timeout, retry_for) as client:
        key = new_key("op")
        _answer(None, f"closing of {account}", lambda: client.close_account(account, key=key),
                key)
    say_done(f"closed account {account}")


@bank.command("list")
@click.option("--prefix", default="", help="Only accounts whose id starts with this.")
@_bank_option
@_security
@_patience
def list_(prefix: str, bank_addr: str, key_file: str | None, tls_cert: str | None,
          tls_key: str | None, tls_ca: str | None, timeout: float, retry_for: float) -> None:
    """List the accounts with their owner, status and balance (an operator call)."""
    sec = _security_from(key_file, tls_cert, tls_key, tls_ca)
    with _client(bank_addr, sec, timeout, retry_for) as client:
        rows = _answer(None, "listing", lambda: client.accounts(prefix))
    table = Table(title=f"accounts at {bank_addr}")
    for col, justify in (("account", "left"), ("owner", "left"), ("status", "left"),
                         ("balance", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(row.account, row.owner, row.status, format_amount(row.balance))
    Console().print(table)


@bank.command()
@click.argument("keys", metavar="KEY...", nargs=-1, required=True)
@_bank_option
@_security
@_patience
def outcome(keys: tuple[str, ...], bank_addr: str, key_file: str | None,
            tls_cert: str | None, tls_key: str | None, tls_ca: str | None, timeout: float,
            retry_for: float) -> None:
    """What became of each request KEY, any account's or an operator's (an operator call).

    Asking settles a key: one the bank never saw is recorded as never applied, for good.
    """
    sec = _security_from(key_file, tls_cert, tls_key, tls_ca)
    with _client(bank_addr, sec, timeout, retry_for) as client:
        answers = _answer(None, "outcome enquiry", lambda: client.outcomes(list(keys)))
    say_done("\n".join(outcome_line(key, answer)
                        for key, answer in zip(keys, answers, strict=True)))


def outcome_line(key: str, answer: RequestOutcome | None) -> str:
    """The bank's final word on ``key``, as one line."""
    if answer is None:
        return f"{key}: not applied (the bank never saw it, and now never will)"
    if answer.error is not None:
        return f"{key}: refused: {answer.error}"
    applied = dataclasses.asdict(answer.unwrap())
    return f"{key}: applied: {json.dumps(applied, sort_keys=True)}"


@bank.command()
@click.option("--db", required=True, type=click.Path(dir_okay=False),
              help="The ledger's SQLite file or PostgreSQL URL (running banks may keep "
                   "using it).")
def audit(db: str) -> None:
    """Recompute every balance from the journal; exit 1 if the books do not balance."""
    report = audit_ledger(db)
    click.echo(f"{report.n_commands} commands, {report.n_entries} entries, "
               f"journal total {report.total}")
    if not report.ok:
        for violation in report.violations:
            click.echo(f"VIOLATION: {violation}", err=True)
        raise SystemExit(1)
    click.echo("audit OK: every transaction balances, no account is negative, "
               "cached balances match the journal, the hash chain holds")


def __getattr__(name: str) -> Any:
    """``atm`` lives in ``_cli_atm`` (which uses the helpers here); found here as before."""
    if name == "atm":
        from netlet.apps.bank._cli_atm import atm

        return atm
    raise AttributeError(name)
