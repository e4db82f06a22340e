"""``netlet certs``: a private CA and node certificates for (mutual) TLS.

The certificate work is in ``_pki``; this module parses options and explains
the result.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from netlet.cli import _pki

__all__ = ["certs"]

DEFAULT_DIR = "certs"

_dir_option = click.option(
    "--dir", "directory", default=DEFAULT_DIR, show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory holding ca.pem, ca.key and the node certificates.",
)


@click.group()
def certs() -> None:
    """Make a private CA and node certificates for (mutual) TLS.

    \b
    netlet certs init --dir certs
        makes certs/ca.pem (give it to every node) and certs/ca.key (keep it
        secret: it signs certificates the whole cluster trusts)
    netlet certs node NAME --dir certs --host 10.0.0.5 --host node5.lan
        makes certs/NAME.pem and certs/NAME.key, signed by that CA

    A node certificate works as server and as client certificate, so one pair
    per node is enough for mutual TLS: each node loads its own NAME.pem and
    NAME.key and trusts ca.pem. Keys are written with mode 0600 and existing
    files are kept unless --force is given. Needs the cryptography package
    (pip install netlet[certs]).
    """


@certs.command("init")
@_dir_option
@click.option(
    "--days", default=_pki.CA_DAYS, show_default=True, type=click.IntRange(min=1),
    help="How long the CA certificate is valid.",
)
@click.option(
    "--common-name", default="netlet private CA", show_default=True,
    help="The CA's name as it appears in certificates.",
)
@click.option(
    "--force", is_flag=True,
    help="Replace an existing CA. Certificates it issued are no longer trusted.",
)
def init(directory: Path, days: int, common_name: str, force: bool) -> None:
    """Make a private CA: ca.pem and ca.key in --dir (created if missing).

    The CA's key is EC P-256 and its certificate is self-signed with
    SHA-256. Copy ca.pem to every node; keep ca.key on the machine where you
    issue node certificates.
    """
    files = _pki.init_ca(directory, force=force, days=days, common_name=common_name)
    click.echo(f"Made a private CA in {os.path.abspath(directory)}:")
    click.echo(f"  {files.cert}  the CA certificate: give it to every node (the trust anchor)")
    click.echo(f"  {files.key}  its key (mode 0600): keep it secret; it signs node certificates")
    if force:
        click.echo("Certificates issued by the previous CA are no longer trusted: reissue them.")
    click.echo(f"Next: netlet certs node NAME --dir {directory} --host HOST ...")


@certs.command("node")
@click.argument("name")
@_dir_option
@click.option(
    "--host", "hosts", multiple=True, metavar="HOST",
    help="An IP address or DNS name the node is reached at; repeat for more. "
    f"[default: {', '.join(_pki.DEFAULT_HOSTS)}]",
)
@click.option(
    "--days", default=_pki.NODE_DAYS, show_default=True, type=click.IntRange(min=1),
    help="How long the certificate is valid (never past the CA's own expiry).",
)
@click.option("--force", is_flag=True, help="Replace an existing NAME.pem and NAME.key.")
def node(name: str, directory: Path, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Issue a certificate for node NAME, signed by the CA in --dir.

    Writes NAME.pem and NAME.key (mode 0600). The certificate names NAME in
    its subject, lists every --host as a SubjectAltName and is valid for both
    serverAuth and clientAuth, so the node uses it to listen and to connect.
    NAME may hold letters, digits, '.', '_' and '-'.
    """
    names = hosts or _pki.DEFAULT_HOSTS
    files = _pki.issue_node(directory, name, names, force=force, days=days)
    ca = Path(directory) / _pki.CA_CERT
    click.echo(f"Issued a certificate for node {name!r} ({', '.join(names)}):")
    click.echo(f"  {files.cert}  the certificate")
    click.echo(f"  {files.key}  its key (mode 0600): copy it only to that node")
    click.echo(
        "Use it with the CA for mutual TLS:\n"
        f'  TLSConfig(certfile="{files.cert}", keyfile="{files.key}", cafile="{ca}")'
    )
