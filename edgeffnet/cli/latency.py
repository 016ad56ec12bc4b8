"""`edgeffnet latency fit` and `edgeffnet latency predict`; `prediction_line` for `edgeffnet info SPEC --target T`."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from edgeffnet.cli.options import (
    cluster_option,
    connect_timeout_option,
    json_option,
    latency_model_option,
    precision_option,
    refuse_ignored,
    target_option,
    task_timeout_option,
)
from edgeffnet.cli.render import err, interrupted, out
from edgeffnet.cli.types import FiniteFloat, Whole
from edgeffnet.core.errors import UserError


@click.group("latency")
def latency() -> None:
    """A latency model per device: collect it once, then predict networks that were never built."""


def held_out_line(m) -> str:
    h, f = m.errors.get("held_out") or {}, m.errors.get("fit") or {}
    return (
        f"fitted on {m.data.get('networks')} networks ({m.data.get('profiled_networks', 0)} with profiles): fit RMSE "
        f"{f.get('rmse_pct', float('nan')):.1f}%, held-out RMSE {h.get('rmse_pct', float('nan')):.1f}% "
        f"({h.get('within_10pct', float('nan')):.0%} within +-10%)"
    )


@latency.command("fit")
@target_option
@precision_option
@click.option(
    "--design",
    "networks",
    type=Whole(4, 2000),
    default=None,
    help="Networks in the designed set (default 48: about 20 minutes at fp32 on a 2-core CPU).",
)
@click.option("--refit", is_flag=True, help="Fit again on the device's data; measure nothing.")
@click.option(
    "--seconds", "-s", type=FiniteFloat(0.05, 600), default=None, help="Minimum seconds per timing (default 1)."
)
@click.option(
    "-o",
    "--model",
    "model_file",
    type=click.Path(dir_okay=False),
    help="Also write the model here (it is always kept under the cache for this device).",
)
@cluster_option(
    "Ray head HOST:PORT of a device farm: every device of TARGET collects and fits its own model there, "
    "and each is kept here under the cache by its device's key."
)
@task_timeout_option("With --cluster: seconds a device may take per network of the design.")
@connect_timeout_option("With --cluster: seconds to wait for the Ray head to answer before giving up with one line.")
def fit_cmd(target, precision, networks, refit, seconds, model_file, cluster, task_timeout, connect_timeout) -> None:
    """Build and time a designed set of networks on TARGET (resumable), then fit this device's model."""
    from dataclasses import replace

    from edgeffnet.latency import device, store
    from edgeffnet.latency.model import fit
    from edgeffnet.search import console
    from edgeffnet.search import latency_collect as collect

    refuse_ignored(dict.fromkeys(("--task-timeout", "--connect-timeout"), (bool(cluster), "--cluster")))
    precision = device.check_precision(target, precision)
    if cluster:
        if refit:
            raise UserError(
                "--refit fits this machine's data; with --cluster each device fits its own after collecting "
                "(run it again: what a device measured is skipped, and it fits again): drop --refit"
            )
        if model_file:
            raise UserError(
                "-o writes one model; with --cluster each device's model is kept under the cache at "
                "latency/<device key>/<precision>/model.json (the lines name the keys): drop -o"
            )
        c = collect.Collection(target=target, precision=precision)
        if networks:
            c.networks = networks
        if seconds:
            c.settings = replace(c.settings, seconds=seconds)
        fit_on_farm(c, cluster, task_timeout, connect_timeout)
        return
    ident = device.identity(target)
    if not refit:
        c = collect.Collection(target=target, precision=precision)
        if networks:
            c.networks = networks
        if seconds:
            c.settings = replace(c.settings, seconds=seconds)
        with console.candidate_progress(err, "latency fit") as (on_network, echo):
            result = collect.run(c, echo=echo, on_network=on_network)
        err.print(
            f"{result['measured']} networks measured in {result['seconds']:.0f} s, {result['skipped']} already "
            f"in the data, {len(result['failed'])} failed; {result['data']}",
            markup=False,
        )
        if result["interrupted"]:
            err.print(
                f"edgeffnet: interrupted; the {result['measured']} networks measured are kept; run the same "
                f"command again to continue",
                markup=False,
            )
            sys.exit(130)
    rows, skipped = store.read(device.data_path(ident, precision))
    model = fit(rows, precision, ident)
    path = model.save(device.model_path(ident, precision))
    if model_file:
        model.save(model_file)
    out.print(held_out_line(model), markup=False)
    if skipped:
        err.print(f"{skipped} unreadable lines of the data were skipped", markup=False)
    err.print(f"wrote {path}" + (f" and {model_file}" if model_file else ""), markup=False)


def fit_on_farm(c, address: str, task_timeout: float, connect_timeout: float) -> None:
    """One line per device as each ends; interrupted, failed or unfitted devices decide the exit."""
    from edgeffnet.farm.latency_fit import collect, line

    result = collect(c, address, task_timeout, connect_timeout, echo=lambda m: out.print(m, markup=False))
    folders = sorted({d["kept"]["folder"] for d in result["devices"] if d.get("kept")})
    if folders:
        err.print(f"kept under {', '.join(folders)}", markup=False)
    if result["interrupted"]:
        interrupted(
            f"{len(result['pending'])} devices had not finished; each keeps the networks it measured: run "
            f"the same command again to continue"
        )
    failed = [d for d in result["devices"] if d.get("error") or d["kept"]["model"] is None]
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise UserError(f"no model from {line(failed[0])}{more}")


@latency.command("predict")
@click.argument("specs", nargs=-1, required=True)
@target_option
@precision_option
@latency_model_option("A model file (default: this device's, under the cache).")
@json_option()
def predict_cmd(specs, target, precision, latency_model, as_json) -> None:
    """Predicted p50 of each SPEC on TARGET, with the 90% interval of the model's held-out errors; nothing
    is built."""
    from edgeffnet.latency import device
    from edgeffnet.latency.use import find_model
    from edgeffnet.specs.layers import spec_layers
    from edgeffnet.specs.scaling import parse_spec

    precision = device.check_precision(target, precision)
    model = find_model(target, precision, latency_model, echo=lambda m: err.print(m, markup=False), required=True)
    rows = []
    for text in specs:
        spec = parse_spec(text)
        ms = model.predict(spec.name)
        lo, hi = model.interval(ms)
        rows.append(
            {
                "spec": spec.name,
                "macs": sum(layer.macs for layer in spec_layers(spec)),
                "predicted_p50_ms": ms,
                "low_ms": lo,
                "high_ms": hi,
            }
        )
    if as_json:
        click.echo(
            json.dumps({"target": target, "precision": precision, "model": model.path, "predictions": rows}, indent=1)
        )
        return
    t = Table(title=f"predicted p50 on {target} ({precision}), {held_out_line(model)}")
    for col in ("spec", "MACs", "p50 ms", "90% interval ms"):
        t.add_column(col, justify="left" if col == "spec" else "right")
    for r in rows:
        t.add_row(
            r["spec"],
            f"{r['macs'] / 1e6:.0f} M",
            f"{r['predicted_p50_ms']:.3f}",
            f"{r['low_ms']:.3f} .. {r['high_ms']:.3f}",
        )
    out.print(t)


def prediction_line(spec: str, target: str, precision: str | None, model_file: str | None = None) -> str:
    """One line for `edgeffnet info SPEC --target T`."""
    from edgeffnet.latency import device
    from edgeffnet.latency.use import find_model

    precision = device.check_precision(target, precision)
    model = find_model(target, precision, model_file, required=True)
    ms = model.predict(spec)
    lo, hi = model.interval(ms)
    h = model.errors.get("held_out") or {}
    return (
        f"predicted p50 on {target} ({precision}): {ms:.3f} ms (90% interval {lo:.3f} .. {hi:.3f}; latency model "
        f"held-out RMSE {h.get('rmse_pct', float('nan')):.1f}%, never built)"
    )


COMMANDS = (latency,)
