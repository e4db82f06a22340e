"""``netlet atm``: the terminal ATM, scripted operations and the swarm.

The options shared with ``netlet bank`` (security, patience, the exit
statuses) live in ``_cli``; ``_cli`` re-exports :data:`atm` so the command
is found where it always was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import click
from rich.console import Console

from netlet.apps.bank._atm import CardSession, new_key, run_terminal
from netlet.apps.bank._cli import (
    EXIT_NOT_SENT,
    _answer,
    _bank_option,
    _client,
    _read_pin,
    _Security,
    _security,
    _security_from,
    outcome_line,
    say_done,
)
from netlet.apps.bank._commands import BankError, format_amount, parse_amount
from netlet.apps.bank._service import SERVICE_NAME
from netlet.apps.bank._swarm import Swarm, SwarmConfig, run_with_display
from netlet.errors import NetletError
from netlet.node import Node
from netlet.transport import find_user_key

__all__ = ["atm"]


# -- netlet atm ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _AtmOptions:
    bank: str
    account: str | None
    pin_stdin: bool
    sec: _Security
    timeout: float
    retry_for: float
    files: tuple[str | None, str | None, str | None, str | None]  # key file, TLS cert/key/CA


_LATE = ("late_bank", "late_account", "late_pin_stdin", "late_key_file", "late_tls_cert",
         "late_tls_key", "late_tls_ca", "late_timeout", "late_retry_for")


def _atm_command(**settings: Any) -> Callable[[Callable[..., None]], click.Command]:
    """``@atm.command``, also accepting the ``atm`` options after the subcommand's name.

    ``netlet atm swarm --bank X --key-file K`` then means what ``netlet atm --bank X
    --key-file K swarm`` does; a value given after the name wins.
    """
    def decorate(func: Callable[..., None]) -> click.Command:
        @functools.wraps(func)
        def run(ctx: click.Context, *args: Any, **kwargs: Any) -> None:
            late = {name: kwargs.pop(name) for name in _LATE}
            opts: _AtmOptions = ctx.obj
            key_file, tls_cert, tls_key, tls_ca = (late[f"late_{n}"] or old for n, old in zip(
                ("key_file", "tls_cert", "tls_key", "tls_ca"), opts.files, strict=True))
            files = (key_file, tls_cert, tls_key, tls_ca)
            ctx.obj = dataclasses.replace(
                opts, bank=late["late_bank"] or opts.bank,
                account=late["late_account"] or opts.account,
                pin_stdin=late["late_pin_stdin"] or opts.pin_stdin,
                timeout=late["late_timeout"] or opts.timeout,
                retry_for=opts.retry_for if late["late_retry_for"] is None
                else late["late_retry_for"],
                sec=opts.sec if files == opts.files else _security_from(*files),
                files=files)
            func(ctx, *args, **kwargs)

        late_help = "(also accepted before the command)"
        for option in reversed((
            click.option("--bank", "late_bank", default=None, help=f"The bank {late_help}."),
            click.option("--account", "late_account", default=None, help=late_help),
            click.option("--pin-stdin", "late_pin_stdin", is_flag=True, help=late_help),
            click.option("--key-file", "late_key_file", default=None, help=late_help,
                         type=click.Path(dir_okay=False)),
            click.option("--tls-cert", "late_tls_cert", default=None, help=late_help,
                         type=click.Path(dir_okay=False)),
            click.option("--tls-key", "late_tls_key", default=None, help=late_help,
                         type=click.Path(dir_okay=False)),
            click.option("--tls-ca", "late_tls_ca", default=None, help=late_help,
                         type=click.Path(dir_okay=False)),
            click.option("--timeout", "late_timeout", type=click.FloatRange(0.1),
                         default=None, help=late_help),
            click.option("--retry-for", "late_retry_for", type=click.FloatRange(0),
                         default=None, help=late_help),
        )):
            run = option(run)
        return atm.command(**settings)(click.pass_context(run))
    return decorate


@click.group(invoke_without_command=True)
@_bank_option
@click.option("--account", default=None, help="Account for a scripted operation.")
@click.option("--pin-stdin", is_flag=True, help="Read the PIN from the first line of stdin.")
@_security
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds one attempt waits for the bank.")
@click.option("--retry-for", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds to keep retrying a request while the bank does not answer.")
@click.option("--head", "head_addr", default=None, envvar="NETLET_HEAD", show_envvar=True,
              help="Find the bank in this cluster head's name service instead of --bank.")
@click.option("--name", default=SERVICE_NAME, show_default=True,
              help="The bank's name at --head.")
@click.pass_context
def atm(ctx: click.Context, bank_addr: str, account: str | None, pin_stdin: bool,
        key_file: str | None, tls_cert: str | None, tls_key: str | None, tls_ca: str | None,
        timeout: float, retry_for: float, head_addr: str | None, name: str) -> None:
    """An ATM: interactive without a command, scripted with one, or a swarm for load.

    \b
    netlet atm --bank ADDR                                   # at the terminal
    netlet atm --bank ADDR --account A --pin-stdin deposit 12.34
    netlet atm swarm --bank ADDR --atms 64 --seconds 30

    Scripted operations exit 0 on success, 1 when the bank refused, 2 on bad
    usage (nothing sent), 3 when the outcome is unknown (the request's key is
    printed; it was applied at most once: ask with `outcome KEY`), 4 when
    nothing was sent (the bank was never reached).
    """
    sec = _security_from(key_file, tls_cert, tls_key, tls_ca)
    if head_addr:
        bank_addr = _look_up(head_addr, name, sec)
    opts = _AtmOptions(bank_addr, account, pin_stdin, sec, timeout, retry_for,
                       (key_file, tls_cert, tls_key, tls_ca))
    ctx.obj = opts
    if ctx.invoked_subcommand is None:
        if not sys.stdin.isatty():
            raise click.UsageError("the interactive ATM needs a terminal; in a script, use "
                                   "--account A --pin-stdin and an operation (e.g. balance)")
        with _client(opts.bank, opts.sec, timeout, retry_for) as client:
            try:
                run_terminal(client)
            except KeyboardInterrupt:
                click.echo("\nGoodbye.")


def _look_up(head_addr: str, name: str, sec: _Security) -> str:
    """The address the bank registered under ``name`` at the cluster head; without one,
    exit 4 (NOT SENT: no bank was reached, so nothing was done)."""
    from netlet.cluster import Cluster

    try:
        node = Node(key=sec.key or find_user_key(head_addr), tls=sec.tls, call_timeout=10)
    except NetletError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        with Cluster(head_addr, node=node) as cluster:
            found = cluster.lookup(name)
    except NetletError as exc:
        _not_sent(f"cannot ask the head at {head_addr}: {exc}")
    finally:
        node.close()
    address = getattr(found, "__netlet_ref__", lambda: None)()
    if address is None or not address.address:
        _not_sent(f"no bank is registered as {name!r} at {head_addr}")
    return str(address.address)


def _not_sent(why: str) -> NoReturn:
    say_done(f"NOT SENT: {why}; nothing was sent", err=True)
    raise SystemExit(EXIT_NOT_SENT)


def _scripted(ctx: click.Context, what: str, run: Callable[[CardSession], str],
              key: str | None = None) -> None:
    """Sign in with --account and the PIN, run ``run(card)`` and map the outcome to an exit
    (``key``: a mutating request's, shown if it is interrupted)."""
    opts: _AtmOptions = ctx.obj
    if not opts.account:
        raise click.UsageError(f"{what} needs --account (and the PIN, e.g. --pin-stdin)")
    pin = _read_pin(opts.pin_stdin)
    with _client(opts.bank, opts.sec, opts.timeout, opts.retry_for) as client:
        card = client.card(opts.account, pin)
        try:
            message = _answer(ctx, what, lambda: run(card), key)
        finally:
            card.sign_out()  # best effort: it never changes the result
    say_done(message)


def _check_key(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("an empty key would be replaced by a new one, so a retry "
                                 "would apply twice; give a non-empty key, or none")
    return value


_key_arg = click.option("--key", "idem_key", default=None, callback=_check_key,
                        help="Idempotency key to use (repeat a call with the same key to "
                             "retry it safely) [default: a new one].")


_AMOUNT_ARGS = {"ignore_unknown_options": True}  # so "-5" reaches parse_amount and is refused


def _amount(text: str) -> int:
    try:
        return parse_amount(text)
    except BankError as exc:
        raise click.BadParameter(str(exc), param_hint="AMOUNT") from None


@_atm_command(context_settings=_AMOUNT_ARGS)
@click.argument("amount")
@_key_arg
def deposit(ctx: click.Context, amount: str, idem_key: str | None) -> None:
    """Deposit AMOUNT (like 12.34)."""
    cents = _amount(amount)
    key = idem_key or new_key()

    def run(card: CardSession) -> str:
        r = card.deposit(cents, key=key)
        return f"deposited {format_amount(cents)}; balance {format_amount(r.balance)}"
    _scripted(ctx, "deposit", run, key)


@_atm_command(context_settings=_AMOUNT_ARGS)
@click.argument("amount")
@_key_arg
def withdraw(ctx: click.Context, amount: str, idem_key: str | None) -> None:
    """Withdraw AMOUNT; refused (nothing taken) if the balance is lower."""
    cents = _amount(amount)
    key = idem_key or new_key()

    def run(card: CardSession) -> str:
        r = card.withdraw(cents, key=key)
        return f"withdrew {format_amount(cents)}; balance {format_amount(r.balance)}"
    _scripted(ctx, "withdraw", run, key)


@_atm_command(context_settings=_AMOUNT_ARGS)
@click.argument("dst")
@click.argument("amount")
@_key_arg
def transfer(ctx: click.Context, dst: str, amount: str, idem_key: str | None) -> None:
    """Transfer AMOUNT to account DST."""
    cents = _amount(amount)
    key = idem_key or new_key()

    def run(card: CardSession) -> str:
        r = card.transfer(dst, cents, key=key)
        return (f"transferred {format_amount(cents)} to {dst}; "
                f"balance {format_amount(r.src_balance)}")
    _scripted(ctx, "transfer", run, key)


@_atm_command()
def balance(ctx: click.Context) -> None:
    """Print the balance."""
    _scripted(ctx, "balance", lambda card: format_amount(card.balance()))


@_atm_command()
@click.option("-n", "limit", type=click.IntRange(0, 100), default=10, show_default=True)
def statement(ctx: click.Context, limit: int) -> None:
    """Print the last N entries, newest first: key, kind, amount, balance after."""
    def run(card: CardSession) -> str:
        return "\n".join(f"{e.key}\t{e.kind}\t{format_amount(e.amount)}\t"
                         f"{format_amount(e.balance_after)}" for e in card.statement(limit))
    _scripted(ctx, "statement", run)


@_atm_command()
@click.argument("key")
def outcome(ctx: click.Context, key: str) -> None:
    """What became of the request with KEY (asking settles it: an unseen key never applies)."""
    def run(card: CardSession) -> str:
        return outcome_line(key, card.outcome(key))
    _scripted(ctx, "outcome", run)


# -- netlet atm swarm ----------------------------------------------------------------------


@_atm_command()
@click.option("--atms", type=click.IntRange(1, 4096), default=64, show_default=True)
@click.option("--seconds", type=click.FloatRange(0.1), default=30.0, show_default=True)
@click.option("--accounts", type=click.IntRange(2, 1_000_000), default=1000, show_default=True)
@click.option("--grace", type=click.FloatRange(0), default=20.0, show_default=True,
              help="After the run, seconds an unanswered request keeps retrying.")
@click.option("--seed", type=int, default=None, help="Seed for the random operations.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write the summary and every request (key, status) as JSON here.")
@click.option("--plain", is_flag=True, help="Progress as plain lines, not a live display.")
def swarm(ctx: click.Context, atms: int, seconds: float, accounts: int,
          grace: float, seed: int | None, report: str | None, plain: bool) -> None:
    """Many simulated ATMs doing random operations, then a check of the bank's books.

    --bank may list several front-ends of one bank (a PostgreSQL ledger),
    comma-separated: the ATMs are spread over them, and need one --key-file.
    Exits 0 when every acknowledged request was applied exactly once, no refused
    one was, the money adds up and the bank's audit is clean; 1 otherwise.
    """
    opts: _AtmOptions = ctx.obj
    address = opts.bank
    try:  # a report that cannot be written is refused before the run, not after it
        report_file = open(report, "w") if report else None  # noqa: SIM115
    except OSError as exc:
        raise click.BadParameter(f"cannot write {report}: {exc.strerror}",
                                 param_hint="--report") from None
    config = SwarmConfig(atms=atms, seconds=seconds, accounts=accounts, grace=grace,
                         timeout=min(opts.timeout, 5.0), seed=seed)
    console = Console(stderr=True)
    with report_file or contextlib.nullcontext():
        sw = Swarm(address, config, key=opts.sec.key, tls=opts.sec.tls)
        try:
            console.print(f"swarm {sw.run_id}: opening {accounts} accounts at {address} ...")
            try:
                sw.prepare()
            except (BankError, NetletError) as exc:
                raise click.ClickException(f"cannot open the swarm's accounts: {exc}") from None
            run_with_display(sw, console, plain=plain or not console.is_terminal)
            console.print("checking the bank's books against what the ATMs saw ...")
            try:
                result = sw.verify()
            except (BankError, NetletError) as exc:
                raise click.ClickException(f"cannot check against the bank: {exc}") from None
        finally:
            sw.close()
        lines = sw.summary(result)
        click.echo("\n".join(lines[:6]))
        for line in lines[6:]:
            click.echo(line, err=True)
        if report_file is not None:
            json.dump({"run": sw.run_id, "summary": dataclasses.asdict(result),
                       "ops": [dataclasses.asdict(op) for op in sw.ops]}, report_file)
    if not result.ok:
        raise SystemExit(1)
