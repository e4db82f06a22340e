"""The dashboard's views: Jinja2 templates (autoescaped) and the filters they use.

Everything a member reports about itself (its name, host, a task's function,
a traceback) reaches the page only through these templates, which escape it.
Charts are drawn here as inline SVG from numbers alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jinja2
from markupsafe import Markup

__all__ = ["chart", "environment"]


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(t: float | None) -> str:
    if not t:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


TOO_BIG = 10**18
"""Members report some numbers themselves (pid, cores, memory), and netlet carries integers
of any size; Python refuses to print one of over 4,300 digits. Beyond this, a "?"."""


def _shown(value: Any) -> Any:
    """Every ``{{ value }}`` of the templates passes here (``finalize``)."""
    if isinstance(value, int) and abs(value) >= TOO_BIG:
        return "?"
    return value


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    if abs(n) >= TOO_BIG:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _num(n: float | None, digits: int = 1) -> str:
    if n is None:
        return "-"
    if isinstance(n, int) and abs(n) >= TOO_BIG:
        return "?"
    if isinstance(n, int) or float(n).is_integer():
        return f"{int(n):,}"
    return f"{n:,.{digits}f}"


def chart(series: Sequence[tuple[str, str, Sequence[float]]], width: int = 900,
          height: int = 120, unit: str = "/s") -> Markup:
    """Lines (``(label, css class, values)``) on one scale, newest on the right."""
    top = max((max(v) for _, _, v in series if v), default=0.0) or 1.0
    n = max((len(v) for _, _, v in series), default=0) or 1
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height + 20}" role="img" '
             f'aria-label="rates over the last {n} s">',
             f'<line class="axis" x1="0" y1="{height}" x2="{width}" y2="{height}"/>',
             f'<text class="label" x="2" y="12">{_num(top)}{Markup.escape(unit)}</text>']
    x_step = width / max(1, n - 1)
    for i, (label, css, values) in enumerate(series):
        offset = n - len(values)
        pts = " ".join(f"{(offset + j) * x_step:.1f},{height - v / top * (height - 16):.1f}"
                       for j, v in enumerate(values))
        if pts:
            parts.append(f'<polyline class="{Markup.escape(css)}" points="{pts}"/>')
        last = values[-1] if values else 0.0
        parts.append(f'<text class="legend {Markup.escape(css)}" x="{10 + 170 * i}" '
                     f'y="{height + 16}">{Markup.escape(label)}: {_num(last)}'
                     f'{Markup.escape(unit)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("netlet.web", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, finalize=_shown)
    env.filters.update({"ago": _ago, "clock": _clock, "bytes": _bytes, "num": _num,
                        "short": lambda s: str(s)[:8]})
    env.globals["chart"] = chart
    return env


def render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    return env.get_template(name).render(**context)
