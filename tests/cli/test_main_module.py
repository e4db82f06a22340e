"""``python -m netlet`` is the netlet command, for a venv whose scripts are not on PATH."""

from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_netlet_runs_the_command() -> None:
    out = subprocess.run([sys.executable, "-m", "netlet", "--help"], capture_output=True,
                         text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: netlet ")
    assert "keygen" in out.stdout


def test_python_dash_m_netlet_passes_exit_codes_through() -> None:
    out = subprocess.run([sys.executable, "-m", "netlet", "no-such-command"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2
    assert "No such command" in out.stderr
