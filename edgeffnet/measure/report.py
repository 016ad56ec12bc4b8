"""`edgeffnet report`: bench records -> tables (Markdown, CSV, JSON), latency-vs-FLOPs plots, one HTML page.

A row is one bundle on one runtime: its latency record and its throughput record side by side. A series
is one device x runtime x precision; within it, log(latency) is fitted against log(FLOPs): a slope of 1
means latency follows FLOPs, below 1 means bigger models use the device better.
"""

from __future__ import annotations

import base64
import csv
import io
import html
import json
import math
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import UserError
from ..files import atomic_write_text, utc_now
from . import records
from .console import ms

FILES = ("report.md", "report.csv", "report.json", "report.html", "latency_vs_flops.png")


# -- input -----------------------------------------------------------------------------------------

def _search(folder: Path) -> list[Path]:
    """Every JSON file below `folder`, except in hidden directories (a bundle being written is hidden)."""
    return [p for p in sorted(folder.rglob("*.json"))
            if not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def _load(path: Path) -> dict | None:
    rec = records.load(path)
    return None if rec is None else rec.to_dict()


def collect(paths: list[str | Path]) -> list[dict]:
    """Records from record files, bundles (their bench/) and directories (searched); the newest per
    host, bundle, runtime and mode wins, so a re-measured bundle is reported once."""
    if not paths:
        raise UserError("nothing to report: pass bundles, directories or bench record files")
    found: dict[tuple, dict] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"'{p}' does not exist; pass bundles, directories or bench record files")
        if p.is_file():  # named on purpose: say what is wrong with it, rather than skip it
            try:
                rec = records.Record.from_dict(json.loads(p.read_text()), f"'{p}'").to_dict()
            except (OSError, ValueError):
                raise UserError(f"'{p}' is not an edgeffnet bench record (not readable JSON)") from None
            candidates = [(p, rec)]
        else:
            candidates = [(f, r) for f in _search(p) if (r := _load(f)) is not None]
        for f, rec in candidates:
            rec.setdefault("source", str(f))
            key = (measured_by(rec), rec["bundle"], rec["runtime"], rec["mode"])
            if key not in found or rec["created"] > found[key]["created"]:
                found[key] = rec
    if not found:
        raise UserError(f"nothing to report in {', '.join(map(str, paths))}: no bench records; "
                        f"run edgeffnet bench BUNDLE or edgeffnet sweep first")
    return list(found.values())


# -- rows and fits ---------------------------------------------------------------------------------

def measured_by(r: dict) -> str:
    """Who measured a record: the farm node (its Ray node id: nodes may share a hostname) or the host."""
    node = r.get("node") or {}
    return node.get("node_id") or r["host"].get("hostname")


def device_of(r: dict) -> str:
    node = r.get("node")  # a farm record: which device of which target measured it
    where = (f" on {node['target']} {node.get('ip') or node['hostname']} node {node.get('node_id', '')[:8]}"
             if node else "")
    return f"{r['device']['name']} ({r['device']['kind']}){where}"


def series_of(r: dict) -> str:
    return f"{device_of(r)} {r['runtime']} {r['precision']}"


def rows(records: list[dict]) -> list[dict]:
    by_run: dict[tuple, dict] = {}
    for r in records:
        by_run.setdefault((measured_by(r), r["bundle"], r["runtime"]), {})[r["mode"]] = r
    out = []
    for modes in by_run.values():
        lat, tput = modes.get("latency"), modes.get("throughput")
        any_ = lat or tput
        m, check = any_["model"], any_["model"].get("scaling_check") or {}
        out.append({
            "model": m["spec"], "family": m["family"], "phi": m.get("phi"), "only": m.get("only"),
            "resolution": m["resolution"], "precision": any_["precision"], "runtime": any_["runtime"],
            "baseline": any_["baseline"], "target": any_["target"],
            "device": device_of(any_), "series": series_of(any_),
            "macs": m["macs"], "params": m["params"], "flops": m["flops"],
            **{k: lat["stats"][f"{k}_ms"] if lat else None for k in ("p50", "p90", "p99", "mean", "std")},
            "latency_count": lat["stats"]["count"] if lat else None,
            "threads": any_["settings"].get("threads"), "streams": any_["settings"].get("streams"),
            "throughput_ips": tput["throughput_ips"] if tput else None,
            "throughput_batch": tput["batch"] if tput else None,
            "gflops_latency": lat["achieved_gflops"] if lat else None,
            "gflops_throughput": tput["achieved_gflops"] if tput else None,
            "peak_gflops": (any_.get("peak") or {}).get("gflops"),
            "fraction_of_peak": lat["fraction_of_peak"] if lat else tput["fraction_of_peak"],
            "scaling_baseline": check.get("baseline"), "two_pow_phi": check.get("two_pow_phi"),
            "predicted_mult": check.get("predicted"), "actual_mult": check.get("mac_ratio"),
            "latency_mult": None,
            "interrupted": any(r["interrupted"] for r in modes.values()),
            "bundle": any_["bundle"],
        })
    # Latency multiplier: against the family baseline (b0 / lite0) measured in the same series.
    base = {(r["series"], r["model"]): r["p50"] for r in out}
    for r in out:
        b = base.get((r["series"], r["scaling_baseline"]))
        if b and r["p50"]:
            r["latency_mult"] = r["p50"] / b
    return sorted(out, key=lambda r: (r["series"], r["flops"], r["model"]))


def fits(table: list[dict], y: str = "p50") -> list[dict]:
    """Per series, least squares of log10(y) on log10(FLOPs): y ~ FLOPs^slope."""
    out = []
    for name in dict.fromkeys(r["series"] for r in table):
        pts = [(r["flops"], r[y], r["model"]) for r in table if r["series"] == name and r[y]]
        fit = {"series": name, "points": len(pts), "slope": None, "intercept": None, "r2": None,
               "models": [p[2] for p in pts], "flops": [p[0] for p in pts], y: [p[1] for p in pts]}
        if len({p[0] for p in pts}) >= 2:
            x, v = np.log10([p[0] for p in pts]), np.log10([p[1] for p in pts])
            slope, intercept = np.polyfit(x, v, 1)
            resid = v - (slope * x + intercept)
            ss = float(np.sum((v - v.mean()) ** 2))
            fit.update(slope=float(slope), intercept=float(intercept),
                       r2=1 - float(np.sum(resid**2)) / ss if ss > 0 else 1.0)
        out.append(fit)
    return out


# -- plots -----------------------------------------------------------------------------------------

def plot(table: list[dict], series_fits: list[dict], y: str, ylabel: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    for i, f in enumerate(series_fits):
        if not f["points"]:
            continue
        color = f"C{i % 10}"
        gx = np.array(f["flops"]) / 1e9
        label = f["series"] + (f" (slope {f['slope']:.2f})" if f["slope"] is not None else "")
        ax.loglog(gx, f[y], "o", color=color, label=label)
        if f["slope"] is not None:
            xs = np.geomspace(gx.min(), gx.max(), 20)
            ax.loglog(xs, 10 ** (f["slope"] * np.log10(xs * 1e9) + f["intercept"]), "--", color=color, lw=1)
        for xv, yv, name in zip(gx, f[y], f["models"]):
            ax.annotate(name, (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    from matplotlib.ticker import FuncFormatter, LogFormatter

    for axis in (ax.xaxis, ax.yaxis):  # 0.5, 2, 20 rather than 5x10^-1; minor ticks labelled on short axes
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlabel("FLOPs per image (G, = 2 x MACs)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    # The series travel in the PNG's text chunk: a reader (or a test) can tell what the picture shows.
    meta = [{k: f[k] for k in ("series", "points", "slope", "models")} for f in series_fits]
    fig.savefig(path, metadata={"Title": title, "Description": json.dumps(meta)})
    plt.close(fig)


# -- tables ----------------------------------------------------------------------------------------

def _num(v, fmt: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _variant(r: dict) -> str:
    return r["only"] + " only" if r["only"] else "compound" if r["phi"] is not None else "preset"


def tables(table: list[dict], series_fits: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) as text: the same tables go into the Markdown and the HTML."""
    results = ("Results", ["model", "precision", "runtime", "device", "MACs (G)", "params (M)", "p50 ms", "p90 ms",
                           "p99 ms", "img/s", "GFLOP/s", "of peak", "2^phi", "(a*b^2*g^2)^phi", "actual MAC x",
                           "latency x"],
               [[r["model"] + (" (interrupted)" if r["interrupted"] else ""), r["precision"], r["runtime"], r["device"],
                 f"{r['macs'] / 1e9:.3f}", f"{r['params'] / 1e6:.2f}", ms(r["p50"]), ms(r["p90"]),
                 ms(r["p99"]), _num(r["throughput_ips"], ".1f"),
                 _num(r["gflops_latency"] or r["gflops_throughput"], ".1f"),
                 _num(r["fraction_of_peak"], ".1%"), _num(r["two_pow_phi"], ".2f"), _num(r["predicted_mult"], ".2f"),
                 _num(r["actual_mult"], ".2f"), _num(r["latency_mult"], ".2f")] for r in table])
    slopes = ("Latency against FLOPs, per series (p50 ~ FLOPs^slope)", ["series", "points", "slope", "R^2"],
              [[f["series"], str(f["points"]), _num(f["slope"], ".3f"), _num(f["r2"], ".3f")] for f in series_fits])
    out = [slopes, results]
    scaled = [r for r in table if r["phi"] is not None or r["model"] in ("b0", "lite0")]
    if any(r["only"] for r in scaled):  # a scaling sweep: the paper's Table 3, in milliseconds
        scaled.sort(key=lambda r: (r["series"], r["family"], r["phi"] or 0, _variant(r)))
        out.append(("Scaling at matched FLOPS budget (width / depth / resolution only vs compound)",
                    ["series", "phi", "variant", "model", "MACs (G)", "(a*b^2*g^2)^phi", "actual MAC x", "p50 ms",
                     "latency x"],
                    [[r["series"], _num(r["phi"], "g"), _variant(r), r["model"], f"{r['macs'] / 1e9:.3f}",
                      _num(r["predicted_mult"], ".2f"), _num(r["actual_mult"], ".2f"), ms(r["p50"]),
                      _num(r["latency_mult"], ".2f")] for r in scaled]))
    return out


def machines(records: list[dict]) -> list[dict]:
    seen = {}
    for r in records:
        key = (measured_by(r), r["device"]["name"], r["device"]["kind"])
        c = r["device"]["cpu"]
        seen[key] = {"device": device_of(r), "host": r["host"].get("hostname"),
                     "cpu": f"{c['model']}, {c['physical_cores']} cores, {c.get('mhz')} MHz, {' '.join(c['isa'])}",
                     "peak": (r.get("peak") or {}).get("detail", ""),
                     "tools": ", ".join(f"{k} {v}" for k, v in r["tools"].items()
                                        if k in ("openvino", "onnxruntime", "torch", "tensorrt"))}
    return list(seen.values())


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def _html_table(header: list[str], body: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows_ = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{rows_}</tbody></table>"


CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.5em}
table{border-collapse:collapse;margin:1em 0;font-size:12px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}
table.text td,table.text th{text-align:left}
.note{color:#666}"""


# -- the command -----------------------------------------------------------------------------------

def write(records: list[dict], out_dir: str | Path) -> dict:
    """Write every report file into out_dir; return the report (what report.json holds) with file paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create -o {out}: {e.strerror or e}") from None
    table = rows(records)
    lat_fits = fits(table, "p50")
    tput_fits = fits(table, "throughput_ips")
    plots = {"latency_vs_flops.png": ("p50", "p50 latency (ms, batch 1, synchronous)",
                                      "Latency against FLOPs", lat_fits)}
    if any(f["points"] for f in tput_fits):
        plots["throughput_vs_flops.png"] = ("throughput_ips", "throughput (images/s)", "Throughput against FLOPs",
                                            tput_fits)
    try:
        import matplotlib  # noqa: F401  (a device-side install may lack it: tables still get written)
    except ImportError:
        plots = {}
    for name, (y, ylabel, title, f) in plots.items():
        plot(table, f, y, ylabel, title, out / name)
    generated = utc_now()
    report = {"report": "edgeffnet-report", "edgeffnet": __version__, "generated": generated, "rows": table,
              "series": lat_fits, "throughput_series": tput_fits, "machines": machines(records),
              "records": sorted(r.get("source") or r["bundle"] for r in records)}
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(table[0]))
    w.writeheader()
    w.writerows(table)
    atomic_write_text(out / "report.csv", buf.getvalue())
    text = tables(table, lat_fits)
    bundles = len({r["bundle"] for r in table})
    intro = (f"{len(table)} measurements from {bundles} bundle{'s' if bundles > 1 else ''}, "
             f"generated {generated} by edgeffnet {__version__}. Latency: batch 1, synchronous, nearest-rank "
             f"percentiles; GFLOP/s = 2 x MACs / p50 (throughput mode: x images/s), against the device's peak "
             f"(see Machines); 'latency x' is p50 over the family baseline's in the same series; '2^phi' and "
             f"'(a*b^2*g^2)^phi' are the predicted MAC multipliers, 'actual MAC x' the counted one."
             + ("" if plots else " No plots: matplotlib is not installed here (pip install 'edgeffnet[report]')."))
    md = ["# edgeffnet latency report", "", intro, ""]
    md += [f"![{n}]({n})" for n in plots] + [""]
    for title, header, body in text:
        md += [f"## {title}", "", _markdown_table(header, body), ""]
    md += ["## Machines", "", _markdown_table(["device", "host", "cpu", "peak", "tools"],
                                               [list(m.values()) for m in report["machines"]]), ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    embedded = {n: base64.b64encode((out / n).read_bytes()).decode() for n in plots}  # no file beside the page
    images = "".join(f'<p><img alt="{n}" src="data:image/png;base64,{data}"></p>' for n, data in embedded.items())
    body = "".join(f"<h2>{html.escape(t)}</h2>{_html_table(h, b)}" for t, h, b in text)
    body += "<h2>Machines</h2>" + _html_table(["device", "host", "cpu", "peak", "tools"],
                                              [list(m.values()) for m in report["machines"]], "text")
    atomic_write_text(
        out / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>edgeffnet latency report</title>"
        f"<style>{CSS}</style></head><body><h1>edgeffnet latency report</h1><p class='note'>{html.escape(intro)}</p>"
        f"{images}{body}</body></html>\n")
    report["files"] = [str(out / n) for n in (*FILES, *plots) if (out / n).exists()]
    report["files"] = list(dict.fromkeys(report["files"]))
    return report


def console_table(report: dict):
    """The results for a terminal, in 80 columns: the ones that matter most (report.md has them all)."""
    from rich import box
    from rich.table import Table

    t = Table(title=f"Results ({report['generated']})", box=box.SIMPLE_HEAD, padding=(0, 1),
              collapse_padding=True, pad_edge=False)
    for h in ("model", "runtime", "GMACs", "p50 ms", "p90 ms", "img/s", "GFLOP/s", "peak"):
        t.add_column(h, justify="left" if h in ("model", "runtime") else "right", no_wrap=h in ("model", "runtime"))
    for r in report["rows"]:
        t.add_row(r["model"] + (" (interrupted)" if r["interrupted"] else ""), f"{r['runtime']} {r['precision']}",
                  f"{r['macs'] / 1e9:.3f}", ms(r["p50"]), ms(r["p90"]), _num(r["throughput_ips"], ".1f"),
                  _num(r["gflops_latency"] or r["gflops_throughput"], ".1f"), _num(r["fraction_of_peak"], ".0%"))
    return t
