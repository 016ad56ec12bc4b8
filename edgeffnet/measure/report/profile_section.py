"""The report's "where the time goes" section, from records that carry a profile (bench --profile).

Per profiled bundle: a roofline (achieved GOP/s of each layer against its arithmetic intensity, under the
device's two ceilings: compute peak and sustained memory bandwidth, points coloured by role) and its ten
costliest layers. Per series (family x precision x runtime x device): a "time by role" stacked bar, one
bar per model, so the depthwise and squeeze-excitation shares can be followed as phi grows. Per family:
each role's latency against its FLOPs across the models, the paper's FLOPS argument taken apart by role.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from edgeffnet.measure.console import ms

TOP = 10
# One colour per role, the same in every plot (matplotlib's tab20 order; overhead in grey).
ROLE_COLOURS = {
    "stem": "#1f77b4",
    "expand": "#ff7f0e",
    "depthwise": "#2ca02c",
    "se": "#d62728",
    "project": "#9467bd",
    "residual": "#8c564b",
    "head": "#e377c2",
    "pool": "#bcbd22",
    "classifier": "#17becf",
    "reduce": "#aec7e8",
    "spatial": "#ffbb78",
    "restore": "#98df8a",
    "shortcut": "#ff9896",
    "overhead": "#7f7f7f",
}


def profiled(records: list[dict]) -> list[dict]:
    return [r for r in records if isinstance(r.get("profile"), dict) and r["profile"].get("layers")]


def label(r: dict) -> str:
    return f"{r['model']['spec']} {r['precision']} {r['runtime']}"


def _slug(r: dict) -> str:
    return "".join(c if c.isalnum() else "-" for c in label(r)).strip("-")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roofline(r: dict, path: Path) -> None:
    plt = _plt()
    p, roof = r["profile"], r["profile"].get("roofline") or {}
    rows = [x for x in p["layers"] if x["role"] != "overhead" and x.get("gops") and x.get("intensity")]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for role in dict.fromkeys(x["role"] for x in rows):
        pts = [x for x in rows if x["role"] == role]
        ax.scatter(
            [x["intensity"] for x in pts],
            [x["gops"] for x in pts],
            s=[12 + 300 * x["share"] for x in pts],
            color=ROLE_COLOURS.get(role, "black"),
            label=role,
            alpha=0.8,
            edgecolors="none",
        )
    peak, bw = roof.get("compute_gops"), roof.get("bandwidth_gbs")
    if peak and bw and rows:
        lo = min(x["intensity"] for x in rows) / 2
        hi = max(max(x["intensity"] for x in rows) * 2, 2 * peak / bw)
        xs = [lo, peak / bw, hi]
        ax.plot(xs, [min(peak, bw * x) for x in xs], color="black", lw=1.5)
        ax.annotate(f"{peak:.0f} GOP/s ({r['precision']} peak)", (hi, peak), ha="right", va="bottom", fontsize=8)
        ax.annotate(f"{bw:.1f} GB/s", (lo, bw * lo), ha="left", va="bottom", fontsize=8, rotation=20)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (ops per byte moved)")
    ax.set_ylabel("achieved GOP/s")
    ax.set_title(f"Roofline: {label(r)} on {r['device']['name']}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def role_bars(series: list[dict], path: Path) -> None:
    plt = _plt()
    series = sorted(series, key=lambda r: r["model"]["flops"])
    roles = list(dict.fromkeys(role for r in series for role in r["profile"]["by_role"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(series) + 3), 4.5))
    bottoms = [0.0] * len(series)
    for role in roles:
        vals = [r["profile"]["by_role"].get(role, 0.0) for r in series]
        ax.bar(range(len(series)), vals, bottom=bottoms, color=ROLE_COLOURS.get(role, "black"), label=role)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_xticks(range(len(series)), [r["model"]["spec"] for r in series], rotation=20, fontsize=8)
    ax.set_ylabel("profiled time (ms, median per layer)")
    r0 = series[0]
    ax.set_title(f"Time by role: {r0['model']['family']} {r0['precision']} {r0['runtime']}", fontsize=10)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def role_flops(family: list[dict], path: Path) -> None:
    """Per role, latency against FLOPs across the family's models (log-log), one line per role."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    family = sorted(family, key=lambda r: r["model"]["flops"])
    roles = dict.fromkeys(role for r in family for role in r["profile"].get("flops_by_role", {}))
    for role in roles:
        pts = [
            (r["profile"]["flops_by_role"][role], r["profile"]["by_role"].get(role, 0.0))
            for r in family
            if r["profile"].get("flops_by_role", {}).get(role) and r["profile"]["by_role"].get(role)
        ]
        if pts:
            ax.plot(
                [f / 1e6 for f, _ in pts],
                [t for _, t in pts],
                "o-",
                color=ROLE_COLOURS.get(role, "black"),
                label=role,
                ms=4,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("role's MFLOPs (2 x MACs, from the layer table)")
    ax.set_ylabel("role's profiled time (ms)")
    r0 = family[0]
    ax.set_title(
        f"Per-role latency against per-role FLOPs: {r0['model']['family']} {r0['precision']} {r0['runtime']}",
        fontsize=10,
    )
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def costliest(r: dict, top: int = TOP) -> tuple[str, list[str], list[list[str]]]:
    p = r["profile"]
    header = ["layer", "role", "ms", "share", "GOP/s", "ops/B", "bound", "kernel", "ran in"]
    body = [
        [
            x["name"] + (f" (+{', '.join(x['fused'])})" if x["fused"] else ""),
            x["role"],
            ms(x["time_ms"]),
            f"{x['share']:.1%}",
            "" if x.get("gops") is None else f"{x['gops']:.1f}",
            "" if x["role"] == "overhead" else f"{x['intensity']:.2f}",
            x.get("bound", ""),
            x["exec_type"],
            x["precision"],
        ]
        for x in p["layers"][:top]
    ]
    roof = p.get("roofline") or {}
    at = (
        ""
        if roof.get("time_memory_bound") is None
        else f"; layer time under the memory roof {roof['time_memory_bound']:.0%}, compute roof "
        f"{roof['time_compute_bound']:.0%}"
    )
    title = (
        f"Ten costliest layers: {label(r)} (mapped {p['mapped_fraction']:.1%}, in layers {p['layer_fraction']:.1%}{at})"
    )
    return title, header, body


def _groups(recs: list[dict], key) -> dict:
    out: dict = {}
    for r in recs:
        out.setdefault(key(r), []).append(r)
    return out


def section(records: list[dict], out: Path, plots: bool) -> tuple[list[str], str, list[str]]:
    """(Markdown lines, HTML fragment, files written) of the profile section; empty without profiles."""
    recs = profiled(records)
    if not recs:
        return [], "", []
    files: list[str] = []
    if plots:
        for r in recs:
            name = f"roofline-{_slug(r)}.png"
            roofline(r, out / name)
            files.append(name)
        by_series = _groups(recs, lambda r: (r["model"]["family"], r["precision"], r["runtime"], r["device"]["name"]))
        for (family, precision, runtime, _), series in by_series.items():
            name = f"time_by_role-{family}-{precision}-{runtime}.png".replace("/", "-")
            role_bars(series, out / name)
            files.append(name)
            if len(series) > 1:
                name = f"role_latency_vs_flops-{family}-{precision}-{runtime}.png".replace("/", "-")
                role_flops(series, out / name)
                files.append(name)
    tables = [costliest(r) for r in recs]
    for w in (r["profile"].get("warning") for r in recs):
        if w:
            tables.append(("Precision", ["warning"], [[w]]))
    md = ["## Where the time goes (bench --profile)", ""] + [f"![{n}]({n})" for n in files] + [""]
    for title, header, body in tables:
        md += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body] + [""]
    images = "".join(
        f'<p><img alt="{html.escape(n)}" src="data:image/png;base64,'
        f'{base64.b64encode((out / n).read_bytes()).decode()}"></p>'
        for n in files
    )
    page = "".join(
        f"<h3>{html.escape(t)}</h3><table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in hd)}</tr>"
        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        + "</table>"
        for t, hd, rows in tables
    )
    return md, f"<h2>Where the time goes (bench --profile)</h2>{images}{page}", files
