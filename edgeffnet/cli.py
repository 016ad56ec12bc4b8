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


def main() -> None:
    try:
        cli(standalone_mode=False)
    except UserError as e:
        err.print(f"edgeffnet: error: {e}", markup=False)
        sys.exit(2)
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
