"""`edgeffnet info` and `edgeffnet targets`: what a spec is and what it can be built for, without building."""

from __future__ import annotations

import json

import click

from edgeffnet.cli import render
from edgeffnet.cli.options import json_option, latency_model_option, spec_help
from edgeffnet.cli.types import PRECISION, whole
from edgeffnet.core.errors import UserError


@click.command("info", epilog=spec_help())
@click.argument("spec", required=False)
@click.option("--num-classes", type=whole("num_classes"), default=1000, show_default=True, help="Classifier width.")
@json_option()
@click.option(
    "--table3",
    is_flag=True,
    help="The paper's Table 3 (MobileNetV1/V2, ResNet-50 scaled): its FLOPS "
    "beside the counted MACs of each row's spec.",
)
@click.option("--target", "-t", help="Also the p50 this device's latency model predicts on TARGET (edgeffnet latency).")
@click.option("--precision", "-p", type=PRECISION, help="With --target (default its own).")
@latency_model_option("With --target: a model file.")
def info(
    spec: str | None,
    num_classes: int,
    as_json: bool,
    table3: bool,
    target: str | None = None,
    precision: str | None = None,
    latency_model: str | None = None,
) -> None:
    """Show the scaled stage table, d/w/r, params, MACs and the 2^phi check for SPEC.

    Without SPEC, list the published presets.
    """
    from edgeffnet.pipeline import require_build_side

    require_build_side("edgeffnet info")
    from edgeffnet.network import info as inf
    from edgeffnet.specs.scaling import parse_spec

    if table3:
        rows = inf.table3()
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        render.print_table3(rows)
        return
    if num_classes < 1:
        raise UserError(f"--num-classes must be at least 1, got {num_classes}")
    if spec is None:
        rows = inf.presets()
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        render.print_presets(rows)
        return
    d = inf.describe(parse_spec(spec), num_classes)
    predicted = None
    if target:
        from edgeffnet.cli.latency import prediction_line

        predicted = prediction_line(d["spec"], target, precision, latency_model)
        d["latency_prediction"] = predicted
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    render.print_info(d)
    if predicted:
        render.out.print(predicted, markup=False)


@click.command("targets")
@json_option()
def targets_cmd(as_json: bool) -> None:
    """List the device profiles (targets/*.toml); --target also takes a path to your own profile."""
    from dataclasses import asdict

    from edgeffnet.specs import targets

    profiles = targets.known()
    if as_json:
        click.echo(json.dumps([asdict(t) for t in profiles.values()], indent=2))
        return
    render.print_targets(profiles)


COMMANDS = (info, targets_cmd)
