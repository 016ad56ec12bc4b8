"""The `edgeffnet` command. Options are parsed here; the work lives in the stage modules.

User errors (UserError) are caught once, in `main`, and printed as one line on stderr.
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from .errors import UserError
from .scaling import SPEC_FORMS, __doc__ as SPEC_GRAMMAR

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeffnet")
def cli() -> None:
    """Compile compound-scaled EfficientNets for a device and measure how fast they really run there."""


def _spec_help() -> str:
    grammar = SPEC_GRAMMAR.split("::", 1)[1].strip("\n")
    lines = [line[4:] if line.startswith("    ") else line for line in grammar.rstrip().splitlines()]
    # "\b" stops click from re-flowing a paragraph: the grammar's columns must stay as written.
    paragraphs = "\n".join(lines).split("\n\n")
    return "\n\n".join(["\b\nModel spec grammar:"] + ["\b\n" + p for p in paragraphs])


@cli.command(epilog=_spec_help())
@click.argument("spec", required=False)
@click.option("--num-classes", type=int, default=1000, show_default=True, help="Classifier width.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(spec: str | None, num_classes: int, as_json: bool) -> None:
    """Show the scaled stage table, d/w/r, params, MACs and the 2^phi check for SPEC.

    Without SPEC, list the published presets.
    """
    from . import info as inf
    from .scaling import parse_spec

    if num_classes < 1:
        raise UserError(f"--num-classes must be at least 1, got {num_classes}")
    if spec is None:
        rows = inf.presets()
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        t = Table(title="Presets (MAC ratio to the family baseline vs (alpha*beta^2*gamma^2)^phi)")
        for col in ("spec", "w", "d", "res", "dropout", "params", "MACs", "ratio", "predicted"):
            t.add_column(col, justify="left" if col == "spec" else "right")
        for r in rows:
            t.add_row(r["spec"], f"{r['width']:.1f}", f"{r['depth']:.1f}", str(r["resolution"]), f"{r['dropout']:.1f}",
                      f"{r['params']:,}", f"{r['macs'] / 1e9:.3f} G", f"{r['mac_ratio']:.2f}x",
                      f"{r['predicted']:.2f}x")
        out.print(t)
        out.print(f"Spec forms: {SPEC_FORMS} (see edgeffnet info --help)")
        return
    d = inf.describe(parse_spec(spec), num_classes)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    _print_info(d)


def _print_info(d: dict) -> None:
    for w in d["warnings"]:
        err.print(f"warning: {w}")
    t = Table(title=f"{d['spec']} ({d['family']}, {d['activation']}, SE {'on' if d['squeeze_excitation'] else 'off'})")
    for col in ("stage", "operator", "kernel", "resolution", "channels", "layers"):
        t.add_column(col, justify="left" if col == "operator" else "right")
    for r in d["stages"]:
        t.add_row(str(r["stage"]), r["operator"], f"{r['kernel']}x{r['kernel']}",
                  f"{r['resolution']}x{r['resolution']}", str(r["channels"]), str(r["layers"]))
    out.print(t)
    out.print(f"depth d = {d['depth']:.4g}   width w = {d['width']:.4g}   resolution r = {d['resolution_multiplier']:.4g}"
              f" ({d['resolution']} px)   dropout {d['dropout']:.2g}")
    phi = "" if d["phi"] is None else f"phi = {d['phi']:g}   "
    out.print(f"{phi}alpha = {d['alpha']:g}  beta = {d['beta']:g}  gamma = {d['gamma']:g}   "
              f"alpha*beta^2*gamma^2 = {d['alpha_beta2_gamma2']:.4f}" + (f"   only {d['only']}" if d["only"] else ""))
    out.print(f"params {d['params']:,}   MACs {d['macs'] / 1e9:.4f} G ({d['flops'] / 1e9:.3f} GFLOPs)"
              f"   classes {d['num_classes']}")
    c = d["scaling_check"]
    if c:
        out.print(f"2^phi check: MACs / MACs({c['baseline']}) = {c['mac_ratio']:.3f}x;  "
                  f"(alpha*beta^2*gamma^2)^phi = {c['predicted']:.3f}x;  2^phi = {c['two_pow_phi']:.3f}x  "
                  f"(actual/predicted {c['ratio_over_predicted']:.3f})")


@cli.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def targets_cmd(as_json: bool) -> None:
    """List the device profiles (targets/*.toml); --target also takes a path to your own profile."""
    from dataclasses import asdict

    from . import targets

    profiles = targets.known()
    if as_json:
        click.echo(json.dumps([asdict(t) for t in profiles.values()], indent=2))
        return
    t = Table(title="Targets")
    for col in ("name", "backend", "device", "precisions", "default", "description"):
        t.add_column(col)
    for p in profiles.values():
        name = p.name + (f" ({', '.join(p.aliases)})" if p.aliases else "")
        t.add_row(name, p.backend, p.device, ",".join(p.precisions), p.default_precision, p.description)
    out.print(t)


@cli.command(epilog=_spec_help())
@click.argument("spec")
@click.option("--target", "-t", default="cpu", show_default=True, help="Target name or path to a profile .toml.")
@click.option("--precision", "-p", type=click.Choice(["fp32", "fp16", "int8"]), help="Default: the target's default.")
@click.option("--weights", "-w", help="Checkpoint (.pth/.pt) or 'pretrained' (lite0..lite2). Default: seeded random.")
@click.option("--num-classes", type=int, help="Classifier width (random init; must match a checkpoint).")
@click.option("--resolution", type=int, help="Input resolution in pixels (default: the spec's).")
@click.option("--batch", type=int, default=1, show_default=True, help="Static batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension.")
@click.option("--opset", type=int, default=13, show_default=True, help="ONNX opset (13 is read by every target).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random weights.")
@click.option("--views", type=int, default=8, show_default=True, help="Real-photo views used for parity checks.")
@click.option("--no-cache", is_flag=True, help="Rebuild every stage instead of reusing finished ones.")
@click.option("-o", "--output", type=click.Path(), help="Bundle directory (default build/SPEC-TARGET-PRECISION).")
def build(spec, target, precision, weights, num_classes, resolution, batch, dynamic_batch, opset, seed, views,
          no_cache, output) -> None:
    """Build SPEC for a target: export, simplify, verify and compile into a bundle directory."""
    from .build import BuildRequest, build as run_build

    req = BuildRequest(spec=spec, target=target, precision=precision, weights=weights, num_classes=num_classes,
                       resolution=resolution, batch=batch, dynamic_batch=dynamic_batch, opset=opset, output=output,
                       seed=seed, views=views, cache=not no_cache)
    path = run_build(req, echo=lambda m: err.print(m, markup=False))
    out.print(str(path))


@cli.command()
@click.argument("bundle_dir", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top", default=5, show_default=True, help="How many classes to print per image.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def predict(bundle_dir, images, top, as_json) -> None:
    """Run a bundle's compiled artifact on IMAGES with the bundle's preprocessing; print the top classes."""
    from .predict import predict as run_predict

    results = run_predict(bundle_dir, images, top)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        out.print(f"{r['image']}  ({r['runtime']})")
        for c in r["top"]:
            out.print(f"  {c['probability']:7.2%}  {c['class']:4d}  {c['name']}")


def main() -> None:
    try:
        cli(standalone_mode=False)
    except UserError as e:
        err.print(f"edgeffnet: error: {e}", markup=False)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err.print("edgeffnet: interrupted", markup=False)
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("edgeffnet: interrupted; nothing half-written was left behind", markup=False)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
