"""Option types shared by the CLI's command modules (edgeffnet/cli.py, edgeffnet/farm/commands.py)."""

from __future__ import annotations

import math

import click


class FiniteFloat(click.FloatRange):
    """A float that is a real number: click's float takes "nan" and "inf", and nan passes every bound."""

    name = "number"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv
