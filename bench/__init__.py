"""netlet's benchmarks: each workload of docs BENCHMARKS.md, netlet beside its peers.

Run with ``python -m bench`` (``make bench``). One module per workload (``w1_latency``,
``w2_pipelined``, ...) declares a module-level ``WORKLOAD``; the harness finds it there.
Workload modules import nothing heavy at the top: peers are imported inside the
functions that run them, in their own subprocess.
"""

__all__: list[str] = []
