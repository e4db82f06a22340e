"""Fixtures of the chaos suite: ``network`` builds hosts and removes them whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netlet.transport import write_key
from tests.chaos.hosts import Network, require_hosts


@pytest.fixture
def network() -> Iterator[Callable[..., Network]]:
    """``network(family=4)``: a new bridge to add hosts to; all of it removed at the end."""
    require_hosts()
    made: list[Network] = []

    def make(family: int = 4) -> Network:
        net = Network(family)
        made.append(net)
        return net

    try:
        yield make
    finally:
        for net in made:
            net.close()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A fresh cluster key file, shared by the hosts (they all see this file system)."""
    path = tmp_path / "cluster.key"
    write_key(path)
    return path
