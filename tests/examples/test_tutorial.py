"""The tutorial's programs (examples/tutorial/), run as real processes.

Each program runs with ``sys.executable``; servers print their address on
their first line and the tests connect to it. Tests wait on output lines,
never on sleeps, and every process a test started is killed when it ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tutorial"
STEP = 15.0
"""Seconds to wait for any one thing; a test fails well before pytest-timeout."""

PROGRAMS = ["ping_pong.py", "message_server.py", "send_message.py", "bank.py", "atm.py",
            "prime_server.py", "prime_node.py", "cluster_job.py"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


class Program:
    """One example program running in a child process, its output read line by line."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), *args], cwd=EXAMPLES, env=_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._cond = threading.Condition()
        self._eof = 0
        self._seen = 0
        self._readers = [threading.Thread(target=self._read, args=(s, lines), daemon=True)
                         for s, lines in ((self.proc.stdout, self.out),
                                          (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                with self._cond:
                    lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        with self._cond:
            self._eof += 1
            self._cond.notify_all()

    def expect(self, pattern: str, timeout: float = STEP) -> re.Match[str]:
        """The next stdout line (after the last one matched) that matches ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(self._seen, len(self.out)):
                    m = rx.search(self.out[i])
                    if m is not None:
                        self._seen = i + 1
                        return m
                left = deadline - time.monotonic()
                if self._eof == 2 or left <= 0:
                    pytest.fail(f"{self.name} printed no line matching {pattern!r}:\n"
                                f"{self.output()}")
                self._cond.wait(left)

    def address(self) -> str:
        """The address a server prints on its first line."""
        return self.expect(r"^tcp://\S+$").group(0)

    def finish(self, timeout: float = STEP) -> int:
        """Wait for the program to exit by itself; its exit status."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit in {timeout} s:\n{self.output()}")
        for t in self._readers:
            t.join(STEP)
        return code

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the exit status."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        return self.finish()

    def kill(self) -> None:
        """SIGKILL (if still running), reap, and close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STEP)
        for t in self._readers:
            t.join(STEP)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.out, "--- stderr", *self.err])


Start = Callable[..., Program]


@pytest.fixture
def start() -> Iterator[Start]:
    """``start(name, *args)`` runs a program; every one started is killed afterwards."""
    started: list[Program] = []

    def launch(name: str, *args: str) -> Program:
        program = Program(name, *args)
        started.append(program)
        return program

    try:
        yield launch
    finally:
        for program in started:
            program.kill()


def run(name: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a program to its end."""
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=EXAMPLES,
                          env=_env(), input=stdin, capture_output=True, text=True,
                          timeout=STEP, check=False)


def lines(text: str) -> list[str]:
    return text.splitlines()


# -- every program --------------------------------------------------------------------


@pytest.mark.parametrize("name", PROGRAMS)
def test_help(name: str) -> None:
    done = run(name, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")
    assert done.stderr == ""


# -- ping-pong --------------------------------------------------------------------------


def test_ping_pong_in_one_process() -> None:
    done = run("ping_pong.py", "--rounds", "5")
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["pong 1", "ping 2", "pong 3", "ping 4", "pong 5"]
    assert done.stderr == ""


@pytest.mark.parametrize("rounds", ["5", "6"])  # pong, then ping, hits the last ball
def test_ping_pong_in_two_processes_by_hand(start: Start, rounds: str) -> None:
    pong = start("ping_pong.py", "--role", "pong", "--rounds", rounds)
    address = pong.address()
    ping = start("ping_pong.py", "--role", "ping", "--connect", address, "--rounds", rounds)
    assert ping.finish() == 0, ping.output()
    assert pong.finish() == 0, pong.output()
    n = int(rounds)
    assert ping.out == [f"ping {b}" for b in range(2, n + 1, 2)]
    assert pong.out == [address, *(f"pong {b}" for b in range(1, n + 1, 2))]
    assert ping.err == pong.err == []


def test_ping_pong_starts_its_second_process() -> None:
    done = run("ping_pong.py", "--two-processes", "--rounds", "4")
    assert done.returncode == 0, done.stderr
    out = lines(done.stdout)
    assert [x for x in out if x.startswith("ping")] == ["ping 2", "ping 4"]
    pong = [re.fullmatch(r"  \[pid (\d+)\] (pong \d+)", x) for x in out if "pong" in x]
    assert [m.group(2) for m in pong if m] == ["pong 1", "pong 3"]
    assert len({m.group(1) for m in pong if m}) == 1


def test_pong_stops_on_sigterm_while_waiting(start: Start) -> None:
    pong = start("ping_pong.py", "--role", "pong")
    pong.address()
    assert pong.stop() == 130
    assert pong.err == []


# -- message server ------------------------------------------------------------------------


def test_message_server_answers_every_message(start: Start) -> None:
    server = start("message_server.py")
    address = server.address()
    done = run("send_message.py", address, "hello", "world")
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["'hello' -> 'OK #1'", "'world' -> 'OK #2'"]
    server.expect(r"^received #1: 'hello'$")
    server.expect(r"^received #2: 'world'$")

    done = run("send_message.py", "--json", address, '{"to": "bank", "n": [1, 2]}')
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["{'to': 'bank', 'n': [1, 2]} -> 'OK #3'"]

    # The handler's exception travels back on the reply channel.
    done = run("send_message.py", address, "")
    assert done.returncode == 1
    assert lines(done.stdout) == ["'' -> error: ValueError: empty message"]

    assert server.stop() == 0, server.output()
    assert server.err == []


def test_send_message_to_nobody_fails_cleanly(start: Start) -> None:
    server = start("message_server.py")
    address = server.address()
    assert server.stop() == 0
    done = run("send_message.py", address, "hello")
    assert done.returncode == 1
    assert "cannot reach" in done.stderr
    assert "Traceback" not in done.stderr


# -- bank and ATM ---------------------------------------------------------------------------


def test_atm_credits_debits_and_reads_the_balance(start: Start) -> None:
    bank = start("bank.py")
    address = bank.address()

    done = run("atm.py", "--bank", address, "--account", "alice",
               "credit", "100", "debit", "30", "balance")
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["credit 100: ok, balance 100", "debit 30: ok, balance 70",
                                  "balance: 70"]
    bank.expect(r"^CREDIT alice 100 -> 100$")
    bank.expect(r"^DEBIT alice 30 -> 70$")

    # No overdraft: refused, exit status 1, nothing changes.
    done = run("atm.py", "--bank", address, "--account", "alice", "debit", "71", "balance")
    assert done.returncode == 1
    assert lines(done.stdout) == ["debit 71: refused: insufficient funds: alice holds 70, "
                                  "asked 71"]

    # Only the owner may use an account.
    for command in (["debit", "1"], ["credit", "1"], ["balance"]):
        done = run("atm.py", "--bank", address, "--account", "alice", "--user", "mallory",
                   *command)
        assert done.returncode == 1
        assert "refused: 'mallory' does not own account 'alice'" in done.stdout

    done = run("atm.py", "--bank", address, "--account", "bob", "balance")
    assert done.returncode == 1
    assert lines(done.stdout) == ["balance: refused: no account named 'bob'"]

    done = run("atm.py", "--bank", address, "--account", "alice", "balance")
    assert lines(done.stdout) == ["balance: 70"]

    assert bank.stop() == 0, bank.output()
    assert bank.err == []


def test_atm_reads_commands_from_the_terminal(start: Start) -> None:
    bank = start("bank.py")
    address = bank.address()
    done = run("atm.py", "--bank", address, "--account", "carol",
               stdin="credit 50\nbalance\nwithdraw 5\ndebit 80\ndebit 20\n\nbalance\n")
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == [
        "Welcome to the netlet Banking ATM Network, carol!",
        "Commands: credit AMOUNT, debit AMOUNT, balance; an empty line quits.",
        "credit 50: ok, balance 50",
        "balance: 50",
        "unknown command 'withdraw' (use credit, debit, balance)",
        "debit 80: refused: insufficient funds: carol holds 50, asked 80",
        "debit 20: ok, balance 30",
        "Thank you for banking with netlet.",
    ]


def test_atm_rejects_bad_commands_and_missing_banks(start: Start) -> None:
    done = run("atm.py", "--bank", "tcp://127.0.0.1:1", "--account", "a", "credit", "ten")
    assert done.returncode == 2
    assert "credit needs a whole amount" in done.stderr

    bank = start("bank.py")
    address = bank.address()
    assert bank.stop() == 0
    done = run("atm.py", "--bank", address, "--account", "a", "balance")
    assert done.returncode == 1
    assert f"cannot use the bank at {address}" in done.stderr
    assert "Traceback" not in done.stderr


# -- prime search -----------------------------------------------------------------------------


_PRIME_SERVER_LINE = re.compile(
    r"tcp://\S+|JOIN \w+|LOST \w+: \d+\.\.\d+ goes back for another node"
    r"|\d+\.\.\d+: \d+ primes from \w+ \(\d+/\d+ chunks, \d+ primes/s\)"
    r"|chunks by node: .*"
    r"|DONE: \d+ primes in \d+\.\.\d+ \(\d+\.\d\d s since the first node joined\)")


def assert_whole_lines(server: Program) -> None:
    """Each line the server printed is one of its own forms: its loop thread (JOIN,
    LOST) and its main thread (chunks) print at once, and print() writes a line's
    text and its newline separately, so without a lock two lines could interleave
    (this broke the JOIN check below in CI)."""
    bad = [line for line in server.out if not _PRIME_SERVER_LINE.fullmatch(line)]
    assert bad == [], server.output()


def test_prime_nodes_join_and_share_the_work(start: Start) -> None:
    server = start("prime_server.py", "--end", "20000", "--chunk", "500")
    address = server.address()
    nodes = {name: start("prime_node.py", address, "--name", name) for name in ("A", "B")}
    shares = server.expect(r"^chunks by node: (.*)$").group(1)
    server.expect(r"^DONE: 2262 primes in 1\.\.20000 ")  # pi(20000) = 2262
    assert server.finish() == 0, server.output()
    assert sum(int(n) for n in re.findall(r"\d+", shares)) == 40  # each chunk counted once
    assert_whole_lines(server)
    joined = {name for name in nodes if f"JOIN {name}" in server.out}
    assert joined, server.output()
    for name, node in nodes.items():
        code = node.finish()
        if name in joined:  # told that the search is over, and how much it did
            assert code == 0, node.output()
            node.expect(rf"^{name}: the search is over; this node checked \d+ chunks$")
        else:  # came after the server had finished and gone
            assert code == 1, node.output()
            assert "no prime server there" in "\n".join(node.err)


def test_a_dead_nodes_numbers_go_to_another_node(start: Start) -> None:
    server = start("prime_server.py", "--end", "1000000", "--chunk", "10000")
    address = server.address()
    a = start("prime_node.py", address, "--name", "A")
    server.expect(r"^JOIN A$")
    server.expect(r" primes from A ")  # A is working...
    a.kill()  # ...and dies (SIGKILL) in the middle of the search
    lost = server.expect(r"^LOST A: (\d+)\.\.(\d+) goes back for another node$")
    b = start("prime_node.py", address, "--name", "B")
    server.expect(r"^JOIN B$")
    server.expect(rf"^{lost.group(1)}\.\.{lost.group(2)}: \d+ primes from B ")
    server.expect(r"^DONE: 78498 primes in 1\.\.1000000 ")  # pi(10**6) = 78498
    assert server.finish() == 0, server.output()
    assert b.finish() == 0, b.output()
    assert server.err == []
    assert_whole_lines(server)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_prime_server_idles_without_nodes_and_stops_on_sigterm(start: Start) -> None:
    server = start("prime_server.py")
    server.address()
    if Path("/proc/self/stat").exists():  # the seed's server spun while no node was there
        before = _cpu_seconds(server.proc.pid)
        with pytest.raises(subprocess.TimeoutExpired):
            server.proc.wait(1.0)  # a measurement interval, not a synchronisation
        assert _cpu_seconds(server.proc.pid) - before < 0.2
    assert server.stop() == 130
    assert server.err == []


# -- beyond loopback: a cluster key, TLS --------------------------------------------------


def netlet_command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``netlet`` command (as ``netlet ARGS...`` would)."""
    return subprocess.run([sys.executable, "-c", "from netlet.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=STEP, check=False)


def test_listening_beyond_loopback_needs_a_key() -> None:
    done = run("bank.py", "--listen", "tcp://0.0.0.0:0")
    assert done.returncode == 2
    assert "refusing to listen on tcp://0.0.0.0:0 without a cluster key" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bank_with_a_key_serves_only_atms_with_it(start: Start,
                                                     tmp_path: Path) -> None:
    key, other = tmp_path / "cluster.key", tmp_path / "other.key"
    for path in (key, other):
        assert netlet_command("keygen", str(path)).returncode == 0
    bank = start("bank.py", "--key", str(key))
    address = bank.address()
    done = run("atm.py", "--bank", address, "--key", str(key), "--account", "ada",
               "credit", "5")
    assert (done.returncode, done.stdout) == (0, "credit 5: ok, balance 5\n"), done.stderr
    done = run("atm.py", "--bank", address, "--account", "ada", "balance")
    assert done.returncode == 1
    assert "requires the cluster key" in done.stderr
    done = run("atm.py", "--bank", address, "--key", str(other), "--account", "ada", "balance")
    assert done.returncode == 1
    assert "does not hold our cluster key" in done.stderr
    assert bank.stop() == 0


def test_a_bank_and_atm_over_mutual_tls(start: Start, tmp_path: Path) -> None:
    certs, key = tmp_path / "certs", tmp_path / "cluster.key"
    for args in (["certs", "init", "--dir", str(certs)],
                 ["certs", "node", "bank", "--dir", str(certs), "--host", "127.0.0.1"],
                 ["certs", "node", "atm", "--dir", str(certs)],
                 ["keygen", str(key)]):
        done = netlet_command(*args)
        assert done.returncode == 0, done.stderr
    bank = start("bank.py", "--key", str(key), "--tls-dir", str(certs))
    address = bank.address()
    done = run("atm.py", "--bank", address, "--key", str(key), "--tls-dir", str(certs),
               "--account", "ada", "credit", "7", "balance")
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == ["credit 7: ok, balance 7", "balance: 7"]
    done = run("atm.py", "--bank", address, "--key", str(key), "--account", "ada", "balance")
    assert done.returncode == 1  # no TLS: the bank will not talk
    assert bank.stop() == 0


# -- chapter 8: netlet head and netlet worker on two addresses -------------------------------


class Command(Program):
    """``netlet ARGS...`` run like a program (from the examples directory)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.name = "netlet " + " ".join(args[:1])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from netlet.cli import main; main()", *args],
            cwd=EXAMPLES, env=env or _env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err = [], []
        self._cond = threading.Condition()
        self._eof = self._seen = 0
        self._readers = [threading.Thread(target=self._read, args=(st, ls), daemon=True)
                         for st, ls in ((self.proc.stdout, self.out),
                                        (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    def expect_err(self, pattern: str, timeout: float = STEP) -> None:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self._cond:
            while not any(rx.search(line) for line in self.err):
                left = deadline - time.monotonic()
                if self._eof == 2 or left <= 0:
                    pytest.fail(f"{self.name} said nothing matching {pattern!r}:\n"
                                f"{self.output()}")
                self._cond.wait(left)


@pytest.mark.timeout(90)
def test_chapter_8_head_and_workers_on_two_addresses(tmp_path: Path) -> None:
    key = tmp_path / "cluster.key"
    assert netlet_command("keygen", str(key)).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        address = f"tcp://127.0.0.2:{s.getsockname()[1]}"
    started: list[Program] = []
    try:
        head = Command("head", "--listen", address, "--key-file", str(key))
        started.append(head)
        assert head.address() == address
        worker = Command("worker", "--join", address, "--key-file", str(key), "-n", "2")
        started.append(worker)
        worker.expect_err(r"2 worker process\(es\) joining")

        job = run("cluster_job.py", address, "--key", str(key), "--count", "4")
        assert job.returncode == 0, job.stderr
        assert [line.split(" (")[0] for line in lines(job.stdout)] == [
            "0^2 = 0", "1^2 = 1", "2^2 = 4", "3^2 = 9"]
        pids = {int(line.rsplit(" ", 1)[1].rstrip(")")) for line in lines(job.stdout)}
        assert pids <= _descendants(worker.proc.pid)

        env = {**_env(), "NETLET_HEAD": address, "NETLET_KEY_FILE": str(key)}
        again = subprocess.run([sys.executable, str(EXAMPLES / "cluster_job.py")], cwd=EXAMPLES,
                               env=env, capture_output=True, text=True, timeout=STEP * 2,
                               check=False)
        assert again.returncode == 0, again.stderr
        assert len(lines(again.stdout)) == 8
        status = subprocess.run([sys.executable, "-c", "from netlet.cli import main; main()",
                                 "status", "--json"], env=env, capture_output=True, text=True,
                                timeout=STEP, check=False)
        assert status.returncode == 0, status.stderr
        assert "worker" in status.stdout
    finally:
        for program in started:
            program.kill()


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in children.read_text().split()]
                found.update(kids)
                todo += kids
    return found


# -- docs/tutorial.md stays true to the programs ---------------------------------------------

DOC = EXAMPLES.parents[1] / "docs" / "tutorial.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", DOC.read_text(), re.M | re.S)


def _code_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_doc_quotes_the_programs_as_they_are() -> None:
    sources = {p.name: _code_lines(p.read_text()) for p in EXAMPLES.glob("*.py")}
    quotes = _blocks("python")
    assert quotes
    for quote in quotes:
        wanted = _code_lines(quote)
        found = False
        for source in sources.values():
            for start in (i for i, line in enumerate(source) if line == wanted[0]):
                window, at = source[start:start + len(wanted) + 12], 0
                for line in window:  # in order, skipping only a few lines (a docstring)
                    if at < len(wanted) and line == wanted[at]:
                        at += 1
                found = found or at == len(wanted)
        assert found, f"docs/tutorial.md quotes code no program has:\n{quote}"


def test_doc_interactive_session_runs() -> None:
    import doctest

    sessions = _blocks("pycon")
    assert sessions
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for i, text in enumerate(sessions):
        test = doctest.DocTestParser().get_doctest(text, {}, f"tutorial-{i}", str(DOC), 0)
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_doc_commands_name_real_programs_and_options() -> None:
    commands = [line[2:] for block in _blocks("console") + _blocks("sh")
                for line in block.splitlines() if line.startswith("$ ")]
    helps: dict[tuple[str, ...], str] = {}
    checked = 0
    for command in commands:
        words = command.split()
        if words[0] == "python" and words[1].endswith(".py"):
            what: tuple[str, ...] = (words[1],)
            if what not in helps:
                helps[what] = run(words[1], "--help").stdout
        elif words[0] == "netlet":
            what = tuple(w for w in words[1:] if not w.startswith("-"))[:2]
            if what[0] != "certs":
                what = what[:1]
            if what not in helps:
                helps[what] = netlet_command(*what, "--help").stdout
        else:
            continue
        help_text = helps[what]
        assert help_text.startswith(("usage:", "Usage:")), command
        for option in (w for w in words if w.startswith("--")):
            assert option in help_text, f"{option} is not an option of: {command}"
        checked += 1
    assert checked >= 20


def test_cluster_job_without_a_head_fails_cleanly(tmp_path: Path) -> None:
    key = tmp_path / "cluster.key"
    subprocess.run([sys.executable, "-m", "netlet", "keygen", str(key)], check=True,
                   capture_output=True, timeout=STEP)
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{closed.getsockname()[1]}"
        done = run("cluster_job.py", address, "--key", str(key), "--count", "2")
        no_key = run("cluster_job.py", address, "--count", "2")
    for result in (done, no_key):
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert address in result.stderr
