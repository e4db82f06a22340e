"""``--tls-cert``, ``--tls-key``, ``--tls-ca``: mutual TLS for every server and client command.

One definition for ``netlet head``, ``netlet worker``, ``netlet status`` and
the bank's commands, and one place that turns the three paths into a
:class:`~netlet.transport.TLSConfig`, so they check them alike: the
certificate and its key go together, and a certificate needs the CA that
verifies the other end (without one no certificate would be checked).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from netlet.errors import ConfigError
from netlet.transport import TLSConfig

__all__ = ["tls_args", "tls_config", "tls_options"]

F = TypeVar("F", bound=Callable[..., Any])


def tls_options(fn: F) -> F:
    """Add ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` (parameters ``tls_cert``, ...)."""
    fn = click.option(
        "--tls-ca", type=click.Path(dir_okay=False), default=None, metavar="FILE",
        help="CA to verify the other end with (mutual TLS): the ca.pem of `netlet certs "
             "init`; required with --tls-cert.")(fn)
    fn = click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
                      metavar="FILE", help="This node's private key.")(fn)
    return click.option(
        "--tls-cert", type=click.Path(dir_okay=False), default=None, metavar="FILE",
        help="This node's certificate (from `netlet certs node`): with it every connection, "
             "in and out, is TLS, and peers without a certificate of the same CA are "
             "refused.")(fn)


def tls_config(tls_cert: str | None, tls_key: str | None,
               tls_ca: str | None) -> TLSConfig | None:
    """The TLS settings the three options give (None: plain TCP); refuses half a set."""
    if (tls_cert is None) != (tls_key is None) or (tls_ca and not tls_cert):
        raise ConfigError("--tls-cert and --tls-key go together (and --tls-ca needs them)")
    if tls_cert and not tls_ca:
        raise ConfigError("--tls-cert needs --tls-ca: without a CA no certificate is verified")
    return TLSConfig(tls_cert, tls_key, tls_ca) if tls_cert and tls_key else None


def tls_args(tls: TLSConfig | None) -> list[str]:
    """The same settings as options again, for a child process (``netlet worker``'s)."""
    if tls is None:
        return []
    assert tls.cafile is not None  # tls_config always gives one
    return ["--tls-cert", tls.certfile, "--tls-key", tls.keyfile, "--tls-ca", tls.cafile]
