"""Entry point of one variant run: ``python -m bench._runner SPEC.json``.

The harness writes the spec (the variant function's module and name, its params and
where to write the outcome) and runs this in a fresh session, so that the variant,
the servers it starts and whatever its peer spawns (Ray, Dask) form one process
group the harness can kill. The outcome file holds one JSON object:
``{"figures": {...}}``, ``{"unavailable": reason}`` or ``{"error": reason}``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["main"]

EXIT_HUNG = 3
"""Exit code when the figures were written but the interpreter would not exit."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _write(path: Path, outcome: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome))
    tmp.replace(path)


def _exit_watchdog(grace: float) -> None:
    """After the variant returned, leave within ``grace`` seconds or say who holds us."""

    def watch() -> None:
        threading.Event().wait(grace)
        alive = [t.name for t in threading.enumerate() if not t.daemon and t.is_alive()]
        print(f"bench: interpreter did not exit; non-daemon threads: {alive}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_HUNG)

    threading.Thread(target=watch, name="bench-exit-watchdog", daemon=True).start()


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    out = Path(spec["outcome"])
    signal.signal(signal.SIGTERM, _terminate)
    # Let ``python -m bench.servers`` find the package however we were started.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (spec["root"], os.environ.get("PYTHONPATH", "")) if p
    )
    from bench._measure import Unavailable

    try:
        func = getattr(importlib.import_module(spec["module"]), spec["func"])
        figures = func(spec["params"])
    except Unavailable as exc:
        _write(out, {"unavailable": str(exc)})
        return 0
    except Exception as exc:
        traceback.print_exc()
        _write(out, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _write(out, {"figures": figures})
    _exit_watchdog(grace=10.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
