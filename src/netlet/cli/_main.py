"""The ``netlet`` command group, its global options, and the one table of its commands.

Adding a command
================

1. Write one module holding one click command or group, named for it::

       # src/netlet/cli/_hello.py  (a docstring and __all__ first, as everywhere)
       import click

       @click.command()
       def hello() -> None:
           '''One line that `netlet --help` lists.

           The rest of the help text (`netlet hello --help`).
           '''

   The module imports what the command needs (``netlet.cluster``, ...), reads
   the environment and files, and turns them into the library's frozen config
   objects: this is the only layer that does. It never configures logging:
   the group below already did, from ``-v``.

2. Add one line to the table at the bottom of this module::

       netlet.add_lazy_command("hello", "netlet.cli._hello:hello")

That is all. Commands are registered by import path and imported only when
they run (or when ``netlet --help`` lists them), so ``netlet keygen`` does not
pay for the web stack, and a command may live above this layer: the
``netlet.apps`` packages sit on top of ``netlet.cli`` in the import-linter
layers and nothing may import them, so ``netlet bank`` is registered as
``"netlet.apps.bank._cli:bank"`` and ``netlet demo`` (the tour, which runs
the apps) as ``"netlet.apps.tour._cli:demo"``, without an import statement
here. A module that cannot be imported (an optional dependency missing)
leaves a stub that explains why when run; the other commands still work.

Errors
======

A command reports a user's mistake by raising a ``netlet.errors.NetletError``
(usually ``ConfigError``) with a message that says what to do, or
``click.ClickException``; the group prints ``Error: <message>`` and exits
with status 1 instead of a traceback. Anything else is a bug and shows its
traceback.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from netlet.errors import NetletError

__all__ = ["NetletGroup", "main", "netlet"]

_HANDLER_MARK = "_netlet_cli_handler"


class NetletGroup(click.Group):
    """A click group whose commands are imported on first use (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, str] = {}
        """Command name -> ``"package.module:attribute"`` of its click command."""

    def add_lazy_command(self, name: str, target: str) -> None:
        """Register the click command at ``target`` (``"module:attribute"``) as ``name``."""
        module, sep, attr = target.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"a lazy command target is 'package.module:attribute', not {target!r}")
        if name in self.lazy_commands or name in self.commands:
            raise ValueError(f"a command named {name!r} is already registered")
        self.lazy_commands[name] = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = self.commands.get(cmd_name)
        if cmd is not None or cmd_name not in self.lazy_commands:
            return cmd
        cmd = self._load(cmd_name, self.lazy_commands[cmd_name])
        self.commands[cmd_name] = cmd  # import once
        return cmd

    @staticmethod
    def _load(name: str, target: str) -> click.Command:
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            return _unavailable(name, e)
        cmd = getattr(module, attr, None)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{target} is not a click command (registered as {name!r})")
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NetletError as e:
            raise click.ClickException(str(e)) from e


def _unavailable(name: str, error: ImportError) -> click.Command:
    reason = f"netlet {name} is unavailable: {error}"

    def fail() -> None:
        raise click.ClickException(reason)

    return click.Command(name, callback=fail, help=reason, short_help="(unavailable)")


def _configure_logging(verbose: int) -> None:
    """Send netlet's log records to stderr through rich; called only by the CLI."""
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # Whoever read our log went away: go quiet. (Rich's default raises
            # SystemExit, which would kill a head's event loop at its next log line.)
            self.quiet = True

    handler = RichHandler(
        console=_Console(stderr=True),
        level=level,
        show_path=verbose >= 2,
        rich_tracebacks=verbose >= 2,
        log_time_format="[%X]",
    )
    setattr(handler, _HANDLER_MARK, True)
    logger = logging.getLogger("netlet")
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(old)  # the command ran before in this process (tests)
    logger.addHandler(handler)
    logger.setLevel(level)


@click.group(
    name="netlet",
    cls=NetletGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="netlet", prog_name="netlet")
@click.option(
    "-v", "--verbose", count=True,
    help="Log more: -v shows what netlet does (INFO), -vv everything (DEBUG). "
    "Warnings are always shown.",
)
def netlet(verbose: int) -> None:
    """netlet: message passing for Python, in one process or across machines.

    Run `netlet COMMAND --help` for what each command does.
    """
    _configure_logging(verbose)


main = netlet
"""The console-script entry point (``netlet = "netlet.cli:main"``)."""

# -- the commands: one module each, one line each (see the module docstring) --
netlet.add_lazy_command("atm", "netlet.apps.bank._cli:atm")
netlet.add_lazy_command("bank", "netlet.apps.bank._cli:bank")
netlet.add_lazy_command("certs", "netlet.cli._certs:certs")
netlet.add_lazy_command("dashboard", "netlet.cli._dashboard:dashboard")
netlet.add_lazy_command("demo", "netlet.apps.tour._cli:demo")
netlet.add_lazy_command("head", "netlet.cli._cluster:head")
netlet.add_lazy_command("keygen", "netlet.cli._keygen:keygen")
netlet.add_lazy_command("primes", "netlet.apps.primes._cli:primes")
netlet.add_lazy_command("status", "netlet.cli._cluster:status")
netlet.add_lazy_command("worker", "netlet.cli._cluster:worker")
