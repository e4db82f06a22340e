"""Running simulation seeds in a test: what failed, with the line that replays it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def failures(run: Callable[[int, Any], Any], seeds: Iterable[int],
             config: Any = None) -> list[str]:
    """``run(seed, config)`` for each seed (``simulate`` or ``simulate_bank``); the
    summary, violations and replay command of each that found something."""
    out = []
    for seed in seeds:
        report = run(seed, config)
        if not report.ok:
            out.append(f"{report.summary()}\n    " + "\n    ".join(report.violations)
                       + f"\n    replay: {report.replay}")
    return out
