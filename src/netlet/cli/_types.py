"""Click parameter types shared by the commands."""

from __future__ import annotations

import math
from typing import Any

import click

__all__ = ["Seconds", "check_address"]


class Seconds(click.FloatRange):
    """A number of seconds: a float range that also refuses nan and infinity.

    click's FloatRange lets ``nan`` through (every comparison with it is false),
    and a head given ``--client-grace nan`` ran with a grace that never ends.
    """

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return rv


def check_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: an address option that does not parse is a usage error (exit 2)."""
    from netlet.errors import ConfigError
    from netlet.transport import parse_address

    if value is not None:
        try:
            parse_address(value)
        except ConfigError as e:
            raise click.BadParameter(str(e), ctx, param) from None
    return value
