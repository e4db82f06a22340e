"""docs/cluster.md documents every option of ``netlet head``, ``worker`` and ``status``,
as their real ``--help`` lists them, and every environment variable they read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from netlet.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"


@pytest.mark.parametrize("command", ["head", "worker", "status"])
def test_every_option_is_documented(command: str) -> None:
    cmd = main.get_command(click.Context(main), command)
    assert cmd is not None
    text = DOC.read_text()
    assert f"## `netlet {command}`" in text
    options = [o for p in cmd.params if isinstance(p, click.Option)
               for o in (*p.opts, *p.secondary_opts)]
    assert options
    for option in options:
        assert option in text, f"docs/cluster.md does not document {command} {option}"
    # ...and the documented list is the real --help's, option by option.
    real = subprocess.run([sys.executable, "-c", "from netlet.cli import main; main()",
                           command, "--help"], capture_output=True, text=True, timeout=30,
                          check=True, env={"COLUMNS": "100", "PATH": ""}).stdout
    for line in real.splitlines():
        if line.lstrip().startswith("-"):
            assert line.strip().split("  ")[0] in text, line
    for variable in ("NETLET_HEAD", "NETLET_KEY_FILE"):
        if variable in real:
            assert variable in text


def test_shipping_your_code_has_its_place() -> None:
    text = DOC.read_text()
    assert "## Shipping your code" in text
    assert "working_dir=" in text
    assert "py_modules=" in text
