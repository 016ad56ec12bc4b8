"""The CLI's parameter types: numbers that are real and whole numbers in bounds, each range shown in the help."""

from __future__ import annotations

import math

import click

from edgeffnet.pipeline.options import BOUNDS


class FiniteFloat(click.FloatRange):
    """A float that is a real number: click's float takes "nan" and "inf", and nan passes every bound."""

    name = "number"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv

    def _describe_range(self) -> str:
        # click writes an unbounded range as "x<=None"; the help then shows nothing (an empty string hides it).
        if self.min is None and self.max is None:
            return ""
        return super()._describe_range()


class Whole(click.IntRange):
    name = "whole number"  # click's "integer range" reads oddly in "'1e7' is not a valid ..."


def whole(name: str) -> click.IntRange:
    """A build option's whole-number type with the bounds of pipeline/options.py."""
    return Whole(*BOUNDS[name])


FINITE = FiniteFloat()
SECONDS = FiniteFloat(0, 86400)  # a measurement's seconds: up to a day
COUNT = Whole(1, 10_000_000)  # iterations: as many as a run can reach
TOP = Whole(1, 100_000)  # top-k
THREADS = Whole(1, 1024)
CLASS_INDEX = Whole(0, BOUNDS["num_classes"][1] - 1)  # one class of the widest classifier a build makes


class Choice(click.Choice):
    """click's Choice, with a suggestion for a near miss ("fp61": did you mean 'fp16'?)."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            from edgeffnet.core.suggest import did_you_mean

            e.message = e.message.rstrip(".") + did_you_mean(value, self.choices)
            raise


PRECISION = Choice(["fp32", "fp16", "int8"])
