"""``NETLET_HEAD`` and ``NETLET_KEY_FILE``: where the cluster is, and its key, for every
command and for ``Cluster()``/``Executor()`` given neither. An explicit argument wins."""

from __future__ import annotations

import os

__all__ = ["DEFAULT_HEAD", "ENV_HEAD", "ENV_KEY_FILE", "env_head", "env_key_file"]

ENV_HEAD = "NETLET_HEAD"
"""The head's address (``netlet head`` listens there)."""
ENV_KEY_FILE = "NETLET_KEY_FILE"
"""The cluster key file (from ``netlet keygen``)."""
DEFAULT_HEAD = "tcp://127.0.0.1:7340"
"""Where ``netlet head`` listens and ``netlet status`` looks when nothing says otherwise."""


def env_head(address: str | None = None) -> str | None:
    """``address`` if given, else ``$NETLET_HEAD`` if set (and not empty), else None."""
    return address or os.environ.get(ENV_HEAD) or None


def env_key_file(key_file: str | None = None) -> str | None:
    """``key_file`` if given, else ``$NETLET_KEY_FILE`` if set (and not empty), else None."""
    return key_file or os.environ.get(ENV_KEY_FILE) or None
