"""The report set: report.md, .csv, .json, .html and the plots, written whole or not at all."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from edgeffnet.core.errors import UserError
from edgeffnet.core.files import atomic_write_text, utc_now
from edgeffnet.core.version import __version__
from edgeffnet.measure.report import profile_section
from edgeffnet.measure.report.caveats import state_warnings, warnings
from edgeffnet.measure.report.plots import plot
from edgeffnet.measure.report.render import CSS, html_table, markdown_table, markdown_text
from edgeffnet.measure.report.row import rows
from edgeffnet.measure.report.series import colours, fits
from edgeffnet.measure.report.tables import machines, tables

FILES = ("report.md", "report.csv", "report.json", "report.html", "latency_vs_flops.png")

PLOTS = ("latency_vs_flops.png", "throughput_vs_flops.png")


def write(records: list[dict], out_dir: str | Path, skipped: list[str] | tuple = ()) -> dict:
    """Write every report file into out_dir; return the report (what report.json holds) with file paths.

    The set is written whole into a hidden directory inside out_dir first and then renamed into place file
    by file, so a report that fails halfway leaves the previous set as it was, never new JSON beside old
    HTML; a plot the new set lacks is removed with it."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".report.partial-{os.getpid()}-", dir=out))
    except OSError as e:
        raise UserError(f"cannot create -o {out}: {e.strerror or e}") from None
    try:
        report = _write_set(records, staging, list(skipped))
        # The set's own files first, then whatever else it wrote (the profile section's plots)
        extra = sorted(p.name for p in staging.iterdir() if p.is_file() and p.name not in (*FILES, *PLOTS))
        names = [n for n in dict.fromkeys((*FILES, *PLOTS, *extra)) if (staging / n).exists()]
        for n in PLOTS:
            if n not in names:
                (out / n).unlink(missing_ok=True)
        for n in names:
            os.replace(staging / n, out / n)
    except OSError as e:
        raise UserError(
            f"cannot write the report into {out}: {e.strerror or e}; the previous report there is unchanged"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report["files"] = [str(out / n) for n in names]
    return report


def _write_set(records: list[dict], out: Path, skipped: list[str]) -> dict:
    table = rows(records)
    lat_fits = fits(table, "p50", "latency")
    tput_fits = fits(table, "throughput_ips", "throughput")
    plots = {
        "latency_vs_flops.png": ("p50", "p50 latency (ms, batch 1, synchronous)", "Latency against FLOPs", lat_fits)
    }
    if any(f["points"] for f in tput_fits):
        plots["throughput_vs_flops.png"] = (
            "throughput_ips",
            "throughput (images/s)",
            "Throughput against FLOPs",
            tput_fits,
        )
    try:
        import matplotlib  # noqa: F401  (a device-side install may lack it: tables still get written)

        no_plots = []
    except ImportError:
        from edgeffnet.core.extras import install_line

        no_plots = [f"no plots: they need matplotlib, which this install lacks: {install_line('report')}"]
        plots = {}
    palette = colours(r["series"] for r in table)
    for name, (y, ylabel, title, f) in plots.items():
        plot(f, y, ylabel, title, out / name, palette)
    generated = utc_now()
    notes = (
        warnings(table)
        + state_warnings(table)
        + no_plots
        + ([f"{len(skipped)} damaged bench record(s) skipped, e.g. {skipped[0][:300]}"] if skipped else [])
    )
    report = {
        "report": "edgeffnet-report",
        "edgeffnet": __version__,
        "generated": generated,
        "rows": table,
        "warnings": notes,
        "series": lat_fits,
        "throughput_series": tput_fits,
        "machines": machines(records),
        "records": sorted(r.get("source") or r["bundle"] for r in records),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(table[0]))
    w.writeheader()
    w.writerows(table)
    atomic_write_text(out / "report.csv", buf.getvalue())
    text = tables(table, lat_fits, tput_fits)
    bundles = len({r["bundle"] for r in table})
    intro = (
        f"{len(table)} measurements from {bundles} bundle{'s' if bundles > 1 else ''}, "
        f"generated {generated} by edgeffnet {__version__}. Latency mode: batch 1, synchronous, nearest-rank "
        f"percentiles, GFLOP/s = 2 x MACs / p50; throughput mode: the backend's best, img/s, GFLOP/s = "
        f"2 x MACs x img/s, its percentiles per request; each against the device's peak "
        f"(see Machines); 'latency x' is p50 over the family baseline's in the same series; '2^phi' and "
        f"'(a*b^2*g^2)^phi' are the predicted MAC multipliers, 'actual MAC x' the counted one."
        + ("" if plots else " No plots: matplotlib is not installed here (pip install 'edgeffnet[report]').")
    )
    md = ["# edgeffnet latency report", "", intro, ""] + [f"> **Warning:** {markdown_text(n)}" for n in notes] + [""]
    md += [f"![{n}]({n})" for n in plots] + [""]
    for title, header, body in text:
        md += [f"## {title}", "", markdown_table(header, body), ""]
    md += [
        "## Machines",
        "",
        markdown_table(["device", "host", "cpu", "peak", "tools"], [list(m.values()) for m in report["machines"]]),
        "",
    ]
    profile_md, profile_html, profile_files = profile_section.section(records, out, bool(plots))
    atomic_write_text(out / "report.md", "\n".join(md + profile_md))
    embedded = {n: base64.b64encode((out / n).read_bytes()).decode() for n in plots}  # no file beside the page
    images = "".join(f'<p><img alt="{n}" src="data:image/png;base64,{data}"></p>' for n, data in embedded.items())
    page = "".join(f"<h2>{html.escape(t)}</h2>{html_table(h, b)}" for t, h, b in text)
    page += "<h2>Machines</h2>" + html_table(
        ["device", "host", "cpu", "peak", "tools"], [list(m.values()) for m in report["machines"]], "text"
    )
    warned = "".join(f"<p class='warning'><b>Warning:</b> {html.escape(n)}</p>" for n in notes)
    atomic_write_text(
        out / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>edgeffnet latency report</title>"
        f"<style>{CSS}</style></head><body><h1>edgeffnet latency report</h1><p class='note'>{html.escape(intro)}</p>"
        f"{warned}{images}{page}{profile_html}</body></html>\n",
    )
    return report
