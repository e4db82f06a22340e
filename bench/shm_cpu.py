"""W5's transfer through the socket and through shared memory, interleaved, with CPU time.

``python -m bench.shm_cpu [ROUNDS [MIB]]``: one keyed ``netlet-shm`` server (shared memory
on), two client nodes with the same key, one with ``shared_memory`` off and one with
it on. Each round sends 64 MiB (or MIB) of bytes and a float64 array of that size to ``length()``
through each; the medians of wall-clock MB/s and the mean CPU time of both processes
per transfer are printed. Interleaving makes the comparison fair on a busy machine,
where W5's separate variants run minutes apart; CPU time is what the two paths cost
whatever else runs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import servers

MiB = 1024 * 1024


def _cpu(pid: int) -> float:
    """CPU seconds of every thread of ``pid`` (``schedstat``: nanoseconds, not ticks)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def _own_cpu() -> float:
    return time.process_time()


def main(rounds: int, size: int = 64 * MiB) -> None:
    import numpy as np

    import netlet

    key = os.urandom(32)
    env = {**os.environ, servers.SHM_KEY_ENV: key.hex()}
    server = subprocess.Popen([sys.executable, "-m", "bench.servers", "netlet-shm"],
                              stdout=subprocess.PIPE, text=True, env=env)
    assert server.stdout is not None
    address = server.stdout.readline().strip().removeprefix("READY ")
    arr = np.random.default_rng(0).random(size // 8)
    payloads: dict[str, Any] = {"bytes": arr.tobytes(), "numpy": arr}
    nodes = {"socket": netlet.Node(key=key),
             "shared memory": netlet.Node(key=key, shared_memory=1 << 20)}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        proxies = {name: node.proxy(address, "echo") for name, node in nodes.items()}
        for proxy in proxies.values():  # connections, imports, buffers
            for data in payloads.values():
                proxy.length(data)
        for _ in range(rounds):
            for path, proxy in proxies.items():
                for kind, data in payloads.items():
                    c0, s0, t0 = _own_cpu(), _cpu(server.pid), time.perf_counter()
                    proxy.length(data)
                    t1, c1, s1 = time.perf_counter(), _own_cpu(), _cpu(server.pid)
                    samples.setdefault((path, kind), []).append((t1 - t0, c1 - c0 + s1 - s0))
    finally:
        for node in nodes.values():
            node.close()
        server.kill()
        server.wait()
    print(f"{rounds} rounds, {size // MiB} MiB each, interleaved; "
          f"load {os.getloadavg()[0]:.1f}")
    for (path, kind), xs in sorted(samples.items()):
        wall = statistics.median(x[0] for x in xs)
        cpu = statistics.mean(x[1] for x in xs)
        print(f"  {path:14} {kind:6} {size / wall / 1e6:7,.0f} MB/s   "
              f"CPU {cpu * 1e3:5.1f} ms per transfer (both processes)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20,
         int(sys.argv[2]) * MiB if len(sys.argv) > 2 else 64 * MiB)
