"""``netlet keygen``: write a new cluster key file; the key itself is never printed."""

from __future__ import annotations

import os
from pathlib import Path

import click

from netlet.errors import ConfigError
from netlet.transport import write_key

__all__ = ["keygen"]

DEFAULT_PATH = "netlet.key"


def _write_new(path: Path, force: bool) -> None:
    """Write a fresh 0600 key file; with ``force`` replace ``path`` atomically (see write_key)."""
    if os.path.lexists(path) and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it")
    write_key(path, force=force)  # without force, O_EXCL still refuses a file that appeared


@click.command()
@click.argument(
    "path", default=DEFAULT_PATH, metavar="[PATH]",
    type=click.Path(dir_okay=False),
)
@click.option(
    "--force", is_flag=True,
    help="Replace an existing key file. Nodes that hold the old key can no longer join.",
)
def keygen(path: str, force: bool) -> None:
    """Write a new random cluster key to PATH (default: netlet.key).

    The key is 32 random bytes, stored as hex in a file only you can read
    (mode 0600); it is never printed. Every node of a cluster loads the same
    key file and proves it holds the key before anything else is exchanged.
    Nodes refuse to listen beyond loopback without one.

    On one machine you need none: a head, worker or bank given no key on
    loopback or a unix socket uses a per-user key file (0600, in
    $XDG_RUNTIME_DIR/netlet or <tmp>/netlet-UID) that your own local clients
    find by themselves and other users cannot read.

    An existing file is kept unless --force is given.
    """
    if not path or path.endswith(os.sep):
        raise click.BadParameter(f"{path!r} names no file", param_hint="PATH")
    try:
        _write_new(Path(path), force)
    except OSError as e:
        raise ConfigError(f"cannot write a key to {path}: {e.strerror or e}") from None
    where = os.path.abspath(path)
    click.echo(f"Wrote a new cluster key to {where} (mode 0600; the key is not shown).")
    click.echo(
        "Every node of the cluster needs this same file:\n"
        "  - copy it to each machine over a secure channel and keep it private;\n"
        f"  - netlet commands that listen or connect take it as --key-file {where};\n"
        f'  - in Python: TransportConfig(key=load_key("{where}")).'
    )
