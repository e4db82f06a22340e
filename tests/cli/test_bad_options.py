"""Hostile values for the options of head, worker and status: each is refused with a
message that names the option or file, never a traceback, a hang or a restart loop.
Real processes; each test takes about a second."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netlet.errors import ConfigError
from netlet.transport import load_key

NETLET = str(Path(sys.executable).parent / "netlet")


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NETLET, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)


def _refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode in (1, 2), result
    assert "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


# -- key files that are not key files ----------------------------------------------


@pytest.mark.timeout(30)
def test_a_binary_file_as_key_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "binary.key"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not a netlet key file"):
        load_key(binary)
    _refused(_run("head", "--listen", "tcp://127.0.0.1:0", "--key-file", str(binary)),
             "not a netlet key file")


@pytest.mark.timeout(30)
def test_a_huge_key_file_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.key"
    huge.write_text("ab" * (1 << 20))  # hex, but 1 MiB: not a file keygen wrote
    with pytest.raises(ConfigError, match="not a netlet key file"):
        load_key(huge)


@pytest.mark.timeout(30)
def test_a_fifo_as_key_file_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo)  # nobody writes: opening it for reading would block for ever
    with pytest.raises(ConfigError, match="not a regular file"):
        load_key(fifo)
    _refused(_run("status", "--head", "tcp://127.0.0.1:1", "--key-file", str(fifo)),
             "not a regular file")


# -- head --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_head_state_that_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite at all\n" * 100)
    _refused(_run("head", "--listen", "tcp://127.0.0.1:0", "--state", str(junk)),
             str(junk), "--state")
    assert junk.read_text() == "not sqlite at all\n" * 100  # left as it was


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", ["nan", "-inf"])
def test_head_client_grace_must_be_a_number_of_seconds(value: str) -> None:
    result = _run("head", "--listen", "tcp://127.0.0.1:0", "--client-grace", value)
    _refused(result, "--client-grace")
    assert result.returncode == 2


# -- worker ------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("credit", ["\u00b2", "-1", "1.5", ""])
def test_worker_credit_is_checked_before_any_process_starts(credit: str) -> None:
    result = _run("worker", "--join", "tcp://127.0.0.1:1", "-n", "1", "--credit", credit)
    _refused(result, "--credit")
    assert result.returncode == 2
    assert "exited" not in result.stderr  # no worker process was started


@pytest.mark.timeout(30)
@pytest.mark.parametrize("listen", ["garbage", "tcp://127.0.0.1:99999", ""])
def test_worker_listen_address_is_checked_before_any_process_starts(listen: str) -> None:
    result = _run("worker", "--join", "tcp://127.0.0.1:1", "-n", "1", "--listen", listen)
    _refused(result, "--listen")
    assert result.returncode == 2
    assert "exited" not in result.stderr
    assert "wrong key" not in result.stderr


# -- status ------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", ["nan", "1e300"])
def test_status_watch_interval_must_be_a_sane_number_of_seconds(value: str) -> None:
    # 1e300 reached threading.Event.wait: OverflowError, with a traceback.
    result = _run("status", "--head", "tcp://127.0.0.1:1", "-w", "--interval", value)
    _refused(result, "--interval")
    assert result.returncode == 2


# -- demo, dashboard ---------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", ["nan", "1e300"])
def test_demo_time_limit_must_be_a_sane_number_of_seconds(value: str) -> None:
    # Both reached Thread.join: ValueError / OverflowError, with a traceback.
    result = _run("demo", "--part", "calls", "--time-limit", value)
    _refused(result, "--time-limit")
    assert result.returncode == 2


@pytest.mark.timeout(30)
def test_dashboard_on_a_host_that_is_not_here_says_why() -> None:
    result = _run("head", "--listen", "tcp://127.0.0.1:0", "--dashboard",
                  "no-such-host.invalid:0")
    _refused(result, "could not listen on no-such-host.invalid:0")
    assert not result.stderr.rstrip().endswith(": 3")  # uvicorn's exit code, not a reason


# -- addresses: a usage error (2) in every command, as worker --listen is ----------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("args", "option"), [
    (["head", "--listen", "garbage"], "--listen"),
    (["head", "--listen", "tcp://127.0.0.1:99999"], "--listen"),
    (["worker", "--join", "", "-n", "1"], "--join"),
    (["worker", "--join", "ftp://x:1", "-n", "1"], "--join"),
    (["status", "--head", "garbage"], "--head"),
    (["dashboard", "--head", "tcp://nohost"], "--head"),
])
def test_an_address_that_does_not_parse_is_a_usage_error(args: list[str], option: str) -> None:
    result = _run(*args)
    _refused(result, option)
    assert result.returncode == 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", [["head", "--listen", "tcp://127.0.0.1:0"],
                                     ["primes", "--end", "100", "-w", "1"],
                                     ["bank", "serve", "--listen", "tcp://127.0.0.1:0"]])
@pytest.mark.parametrize("option", [["--dashboard-control"],
                                    ["--dashboard-token", "x" * 32]])
def test_dashboard_options_without_a_dashboard_are_a_usage_error(
        command: list[str], option: list[str], tmp_path: Path) -> None:
    # Both were silently ignored: a head ran (no dashboard), a search ran, a bank served.
    result = subprocess.run([NETLET, *command, *option], capture_output=True, text=True,
                            timeout=25, check=False, cwd=tmp_path, stdin=subprocess.DEVNULL)
    _refused(result, "--dashboard HOST:PORT")
    assert result.returncode == 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("args", "option"), [
    (["head", "--listen", "tcp://127.0.0.1:0", "--result-budget", "0"], "--result-budget"),
    (["head", "--listen", "tcp://127.0.0.1:0", "--result-budget", "0.5"], "--result-budget"),
    (["worker", "--join", "tcp://127.0.0.1:1", "-n", "0"], "--processes"),
    (["worker", "--join", "tcp://127.0.0.1:1", "-n", "1025"], "--processes"),
], ids=["budget-0", "budget-fraction", "processes-0", "processes-1025"])
def test_ranges_the_help_gives_are_enforced(args: list[str], option: str) -> None:
    result = _run(*args)
    _refused(result, option)
    assert result.returncode == 2
    assert "exited" not in result.stderr  # no worker process was started
