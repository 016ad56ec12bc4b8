"""What the CLI prints: its two consoles, its own tables, and the one line of an interrupted run.

The measure and search layers print their own records (measure/console.py, search/console.py,
measure/eval_scores.py, measure/report/); the tables here present what only the commands ask for.
"""

from __future__ import annotations

import sys

from rich.table import Table

from edgeffnet.core.user_text import TextConsole
from edgeffnet.specs.scaling import SPEC_FORMS

# Piped output gets wide tables: a log or a grep should not see names broken across lines.
# User text (paths, specs, record names) is printed as text: no markup, no emoji, control characters visible.
out = TextConsole(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = TextConsole(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)


def interrupted(what: str) -> None:
    """Ctrl-C stopped a run that keeps what it measured: say what was kept, exit as an interrupted run does."""
    err.print(f"edgeffnet: interrupted; {what}", markup=False)
    sys.exit(130)


def print_presets(rows: list[dict]) -> None:
    t = Table(title="Presets (MAC ratio to the family baseline vs (alpha*beta^2*gamma^2)^phi)")
    for col in ("spec", "w", "d", "res", "dropout", "params", "MACs", "ratio", "predicted"):
        t.add_column(col, justify="left" if col == "spec" else "right")
    for r in rows:
        t.add_row(
            r["spec"],
            f"{r['width']:.1f}",
            f"{r['depth']:.1f}",
            str(r["resolution"]),
            f"{r['dropout']:.1f}",
            f"{r['params']:,}",
            f"{r['macs'] / 1e9:.3f} G",
            f"{r['mac_ratio']:.2f}x",
            f"{r['predicted']:.2f}x",
        )
    out.print(t)
    out.print(f"Spec forms: {SPEC_FORMS} (see edgeffnet info --help)")


def print_info(d: dict) -> None:
    for w in d["warnings"]:
        err.print(f"warning: {w}")
    t = Table(title=f"{d['spec']} ({d['family']}, {d['activation']}, SE {'on' if d['squeeze_excitation'] else 'off'})")
    for col in ("stage", "operator", "kernel", "resolution", "channels", "layers"):
        t.add_column(col, justify="left" if col == "operator" else "right")
    for r in d["stages"]:
        t.add_row(
            str(r["stage"]),
            r["operator"],
            f"{r['kernel']}x{r['kernel']}",
            f"{r['resolution']}x{r['resolution']}",
            str(r["channels"]),
            str(r["layers"]),
        )
    out.print(t)
    out.print(
        f"depth d = {d['depth']:.4g}   width w = {d['width']:.4g}   resolution r = {d['resolution_multiplier']:.4g}"
        f" ({d['resolution']} px)   dropout {d['dropout']:.2g}"
    )
    phi = "" if d["phi"] is None else f"phi = {d['phi']:g}   "
    out.print(
        f"{phi}alpha = {d['alpha']:g}  beta = {d['beta']:g}  gamma = {d['gamma']:g}   "
        f"alpha*beta^2*gamma^2 = {d['alpha_beta2_gamma2']:.4f}" + (f"   only {d['only']}" if d["only"] else "")
    )
    out.print(
        f"params {d['params']:,}   MACs {d['macs'] / 1e9:.4f} G ({d['flops'] / 1e9:.3f} GFLOPs)"
        f"   classes {d['num_classes']}"
    )
    c = d["scaling_check"]
    if c and c["two_pow_phi"] is None:
        out.print(
            f"MAC check: MACs / MACs({c['baseline']}) = {c['mac_ratio']:.3f}x;  d*w^2*r^2 = {c['predicted']:.3f}x"
            f"  (actual/predicted {c['ratio_over_predicted']:.3f})"
        )
    elif c:
        out.print(
            f"2^phi check: MACs / MACs({c['baseline']}) = {c['mac_ratio']:.3f}x;  "
            f"(alpha*beta^2*gamma^2)^phi = {c['predicted']:.3f}x;  2^phi = {c['two_pow_phi']:.3f}x  "
            f"(actual/predicted {c['ratio_over_predicted']:.3f})"
        )


def print_table3(rows: list[dict]) -> None:
    t = Table(title="Table 3 of the paper: FLOPS as printed vs MACs counted (Conv2d + Linear, one image)")
    for col in ("row", "spec", "res", "params", "paper", "counted", "deviation", "agrees"):
        t.add_column(col, justify="left" if col in ("row", "spec") else "right")
    for r in rows:
        verdict = "yes" if r["agrees"] else f"no: matches '{r['matches']}'" if r["matches"] else "no"
        t.add_row(
            r["label"],
            r["spec"],
            str(r["resolution"]),
            f"{r['params']:,}",
            f"{r['paper_flops']:.1f} B",
            f"{r['macs'] / 1e9:.3f} B",
            f"{r['deviation']:+.1%}",
            verdict,
        )
    out.print(t)
    for note in dict.fromkeys(r["note"] for r in rows if r["note"]):
        out.print(f"note: {note} (see docs/spec.md, Table 3)")


def print_targets(profiles: dict) -> None:
    t = Table(title="Targets")
    for col in ("name", "backend", "device", "precisions", "default", "description"):
        t.add_column(col)
    for p in profiles.values():
        name = p.name + (f" ({', '.join(p.aliases)})" if p.aliases else "")
        t.add_row(name, p.backend, p.device, ",".join(p.precisions), p.default_precision, p.description)
    out.print(t)


def print_farm_status(address: str, found: list[dict]) -> None:
    t = Table(title=f"Ray cluster at {address}")
    for col in ("node", "address", "host", "targets", "builds", "runtimes"):
        t.add_column(col)
    for n in found:
        v = n.get("versions", {})
        runtimes = n.get("error") or ", ".join(
            f"{k} {v[k]}" for k in ("openvino", "tensorrt", "onnxruntime", "edgeffnet", "ray", "python") if k in v
        )
        t.add_row(
            n["node_id"][:8],
            n["ip"],
            n.get("hostname") or "",
            ", ".join(n["targets"]) or "none",
            str(n["builds"] or ""),
            runtimes,
        )
    out.print(t)
