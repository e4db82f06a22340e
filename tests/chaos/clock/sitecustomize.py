"""Fake this process's wall clock: ``time.time()`` is off by ``$NETLET_CHAOS_CLOCK_OFFSET`` s.

Put this directory first on ``PYTHONPATH`` of a process started on a chaos
host (the realtime clock is one for the whole machine: a time namespace only
offsets the monotonic clocks). Only ``time.time`` and ``time.time_ns`` move.
"""

from __future__ import annotations

import os
import time

_offset = float(os.environ.get("NETLET_CHAOS_CLOCK_OFFSET", "0") or 0)
if _offset:
    _time, _time_ns = time.time, time.time_ns

    def _skewed() -> float:
        return _time() + _offset

    def _skewed_ns() -> int:
        return _time_ns() + int(_offset * 1e9)

    time.time = _skewed
    time.time_ns = _skewed_ns
