"""CPU time per W1 call (``echo(64 bytes)``, blocking proxy), on the client and the server.

``python -m bench.call_cpu [CALLS [RUNS]]``: against the W1 server process
(``bench.servers netlet``), CALLS calls (default 20,000) after 3,000 warm-up,
RUNS times (default 3); prints the median run's wall µs per call and the CPU
µs per call of the client (this process) and of the server (``/proc``, in clock
ticks: about 4% resolution at the default size). CPU time is steadier than W1's
latency on a shared machine. To compare two trees, run it with
``PYTHONPATH=<tree>/src`` for each, interleaved (the server inherits it).
"""

from __future__ import annotations

import os
import sys
import time

from bench import servers


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_pid() -> int:
    """The W1 server: this process's child running ``bench.servers``."""
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if parent == me and b"bench.servers" in cmd:
            return int(entry)
    raise RuntimeError("the W1 server process was not found")


def main(calls: int, runs: int) -> None:
    import netlet

    payload = os.urandom(64)
    with servers.start("netlet") as address:
        server = _server_pid()
        proxy = netlet.connect(address, "echo")
        for _ in range(3000):
            proxy.echo(payload)
        rows = []
        for _ in range(runs):
            s0, c0, w0 = _cpu_seconds(server), time.process_time(), time.perf_counter()
            for _ in range(calls):
                proxy.echo(payload)
            w1, c1, s1 = time.perf_counter(), time.process_time(), _cpu_seconds(server)
            rows.append(tuple(1e6 * x / calls for x in (w1 - w0, c1 - c0, s1 - s0)))
    rows.sort()
    wall, client, server_us = rows[len(rows) // 2]
    print(f"{netlet.__file__.rsplit('/src/', 1)[0]}: wall {wall:.2f} us/call, CPU client "
          f"{client:.2f} + server {server_us:.2f} = {client + server_us:.2f} us/call")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000,
         int(sys.argv[2]) if len(sys.argv) > 2 else 3)
