"""`edgeffnet report`: bench records -> tables (Markdown, CSV, JSON), latency-vs-FLOPs plots, one HTML page.

A row is one bundle on one runtime in one bench mode: latency (batch 1, synchronous) and throughput (the
backend's best) are different measurements, so each gets its own row. A row also says what the bundle
computes: its weights (pretrained, a checkpoint, or seeded random: a latency study) and its fidelity to FP32
(the accuracy drop from `edgeffnet eval` when the bundle has one, else the build's agreement on
verification photos). A series is one family x precision x runtime x device; within it, log(latency) is
fitted against log(FLOPs): a slope of 1 means latency follows FLOPs, below 1 means bigger models use the
device better. Families are fitted apart: Lite and B-series are different networks.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from edgeffnet.core.errors import UserError
from edgeffnet.core.files import atomic_write_text, utc_now
from edgeffnet.core.layout import EVAL
from edgeffnet.core.untrusted import UntrustedFileError
from edgeffnet.core.version import __version__
from edgeffnet.measure import device_state, eval_result, profile_report, records
from edgeffnet.measure.console import ms
from edgeffnet.measure.report_rows import AccuracyDrop, ReportRow, StartAndState

FILES = ("report.md", "report.csv", "report.json", "report.html", "latency_vs_flops.png")


# -- input -----------------------------------------------------------------------------------------


def _search(folder: Path) -> list[Path]:
    """Every JSON file below `folder`, except in hidden directories (a bundle being written is hidden)."""
    return [
        p
        for p in sorted(folder.rglob("*.json"))
        if not any(part.startswith(".") for part in p.relative_to(folder).parts) and not p.is_dir()
    ]


def _renders(rec: dict, where: str) -> dict:
    """`rec` if a report can be made of it: a record whose fields pass their checks can still hold a
    value no row or machine line can be made of (a node that is a list); it is found here, alone."""
    try:
        rows([rec])
        machines([rec])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError) as e:
        raise UserError(
            f"{where} is a damaged bench record ({type(e).__name__}: {str(e)[:60]}); measure again with edgeffnet bench"
        ) from None
    return rec


def _named(p: Path) -> dict:
    """A record file named on purpose: what is wrong with it is said, rather than skipped."""
    try:
        rec = records.read(p)
    except UntrustedFileError as e:
        if "not valid JSON" in str(e):
            raise UserError(f"'{p}' is not an edgeffnet bench record (not readable JSON)") from None
        raise
    if rec is None:
        raise UserError(f"'{p}' is not an edgeffnet bench record")
    return _renders(rec.to_dict(), f"'{p}'")


def _found(folder: Path, skipped: list[str]) -> list[tuple[Path, dict]]:
    """The records below `folder`; a damaged or unreadable one (a `*.json` link to /dev/zero, a FIFO, a
    field of the wrong type) is skipped and counted in `skipped`, so one bad file does not lose the rest."""
    out = []
    for f in _search(folder):
        try:
            rec = records.read(f)
            if rec is not None:
                out.append((f, _renders(rec.to_dict(), f"'{f}'")))
        except UserError as e:
            skipped.append(str(e))
    return out


def collect(paths: list[str | Path], skipped: list[str] | None = None, baselines=()) -> list[dict]:
    """Records from record files, bundles (their bench/) and directories (searched); the newest per
    host, bundle, runtime and mode wins, so a re-measured bundle is reported once. What was found in a
    directory but could not be read is skipped, and why is appended to `skipped`.

    Baseline records (PyTorch, ONNX Runtime on the CPU) only where asked for: `baselines` names the
    runtimes to keep, or is True for all. A `bench --baseline` run on a sweep's bundle would otherwise
    join the sweep's next report, and its ~100 ms PyTorch point set the plot's scale."""
    if not paths:
        raise UserError("nothing to report: pass bundles, directories or bench record files")
    skipped = [] if skipped is None else skipped
    found: dict[tuple, dict] = {}
    skipped_baselines: set[str] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"'{p}' does not exist; pass bundles, directories or bench record files")
        candidates = _found(p, skipped) if p.is_dir() else [(p, _named(p))]
        for f, rec in candidates:
            if rec.get("baseline") and baselines is not True and rec["runtime"] not in baselines:
                skipped_baselines.add(rec["runtime"])
                continue
            rec.setdefault("source", str(f))
            key = (measured_by(rec), rec["bundle"], rec["runtime"], rec["mode"])
            if key not in found or rec["created"] > found[key]["created"]:
                found[key] = rec
    if not found:
        bad = f" ({len(skipped)} damaged record(s) skipped: {skipped[0][:200]})" if skipped else ""
        only = (
            f" (only baseline records, {', '.join(sorted(skipped_baselines))}: add --baselines to report them)"
            if skipped_baselines
            else ""
        )
        raise UserError(
            f"nothing to report in {', '.join(map(str, paths))}: no bench records{only}{bad}; "
            f"run edgeffnet bench BUNDLE or edgeffnet sweep first"
        )
    return list(found.values())


# -- rows and fits ---------------------------------------------------------------------------------


def measured_by(r: dict) -> str:
    """Who measured a record: the farm node (its Ray node id: nodes may share a hostname) or the host."""
    node = r.get("node") or {}
    return node.get("node_id") or r["host"].get("hostname")


def device_of(r: dict) -> str:
    node = r.get("node")  # a farm record: which device of which target measured it
    where = (
        f" on {node['target']} {node.get('ip') or node['hostname']} node {node.get('node_id', '')[:8]}" if node else ""
    )
    return f"{r['device']['name']} ({r['device']['kind']}){where}"


def short_device(r: dict) -> str:
    """The device as a table cell: the name without trademarks, clock and filler words ("AMD EPYC 7B13
    (CPU)"); the Machines table carries the whole name, cores, ISA and peak."""
    import re

    full = str(r["device"]["name"])
    name = re.sub(r"@.*$|\bwith\b.*$", "", full)
    name = re.sub(r"\((R|TM|C)\)|\b(CPU|Processor)\b|\b\d+-Core\b", " ", name, flags=re.IGNORECASE)
    name = " ".join(name.split()) or full
    node = r.get("node")  # farm devices may share an address (or a host): the node id tells them apart
    return f"{name} ({r['device']['kind']})" + (
        f" on {node['target']} {node.get('ip') or node['hostname']} node {node.get('node_id', '')[:8]}" if node else ""
    )


def series_of(r: dict) -> str:
    return f"{r['model']['family']} {r['precision']} {r['runtime']} on {device_of(r)}"


# A random-weight INT8 graph whose logits are further than this from its FP32 (mean cosine) does not compute
# what FP32 computes: its latency may not carry over to trained weights (a trained network's ranges differ).
SANE_COSINE = 0.9


def _manifest(bundle_dir: str) -> dict:
    from edgeffnet.bundle import read_manifest

    try:
        return read_manifest(bundle_dir)  # checked as a bundle's reader checks it: a damaged one is none
    except UserError:
        return {}


def weights_of(r: dict) -> dict:
    """The record's weights; a record older than the field gets them from its bundle, where it still is."""
    if r.get("weights"):
        return r["weights"]
    return records.weights_of(_manifest(r["bundle"]))


def weights_label(w: dict) -> str:
    if w.get("random_init"):
        return "random"
    source = str(w.get("source", "unknown"))
    return "pretrained" if source.startswith("pretrained") else "unknown" if source == "unknown" else "checkpoint"


def _fraction(v) -> float | None:
    """An accuracy or drop as a fraction, from a number or a dict holding one (eval's layout, or a plain key)."""
    if isinstance(v, dict):
        v = v.get("difference", v.get("accuracy"))
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def accuracy_drop(bundle_dir: str) -> AccuracyDrop | None:
    """The worst top-1 accuracy drop any artifact shows in BUNDLE/eval/*.json (`edgeffnet eval`), read
    tolerantly: a file or row this report cannot read is left out, never fatal."""
    worst: AccuracyDrop | None = None
    for f in sorted((Path(bundle_dir) / EVAL).glob("*.json")):
        if f.name.endswith(".partial.json"):  # an interrupted re-run kept beside its complete result
            continue
        try:
            result = eval_result.read(f)
        except UserError:
            continue
        if not isinstance(result.get("artifacts"), list):
            continue
        fp32 = _fraction((result.get("reference") or {}).get("top1"))
        for a in result["artifacts"]:
            if not isinstance(a, dict):
                continue
            drop, top1 = _fraction(a.get("top1_drop", a.get("drop"))), _fraction(a.get("top1"))
            if drop is None and fp32 is not None and top1 is not None:
                drop = fp32 - top1
            if drop is not None and (worst is None or drop > worst["drop"]):
                interval = (a.get("top1_drop") or {}).get("interval") if isinstance(a.get("top1_drop"), dict) else None
                if not (
                    isinstance(interval, list)
                    and len(interval) == 2
                    and all(_fraction(v) is not None for v in interval)
                ):
                    interval = None
                worst = {
                    "drop": drop,
                    "interval": interval,
                    "top1": top1,
                    "fp32_top1": fp32,
                    "artifact": a.get("name") or a.get("artifact"),
                    "images": result.get("images"),
                    "data": f.name,
                    "partial": result.get("partial") is True,
                    "images_total": result.get("images_total"),
                }
    return worst


def fidelity_of(r: dict) -> tuple[str, dict]:
    """The row's fidelity cell and its numbers: FP32 runs are the reference; otherwise the accuracy drop
    where the bundle was evaluated on labelled data, else the build's agreement with FP32."""
    if r["precision"] == "fp32":
        return "FP32 (reference)", {}
    drop = accuracy_drop(r["bundle"])
    if drop:
        interval = drop["interval"]
        text = (
            f"top-1 drop {drop['drop'] * 100:.2f} pt"
            + (
                f" [{interval[0] * 100:.2f}, {interval[1] * 100:.2f}]"
                if isinstance(interval, list) and len(interval) == 2
                else ""
            )
            + (f", top-1 {drop['top1']:.1%}" if drop["top1"] is not None else "")
        )
        if drop["partial"]:  # an interrupted eval: its figure covers only the images it reached
            text += f" (partial: {drop['images']} of {drop['images_total']} images)"
        return text, {"accuracy_drop": drop["drop"]}
    own, worst = _fidelity_rows(r)
    f = own or worst
    if not f:
        return "not measured", {}
    whose = f.get("artifact", "artifact") + ("" if own else " (the bundle's worst row)")
    text = f"{whose}: {_agreement(f)}"
    if own and worst and worst.get("artifact") != own.get("artifact") and _worse(worst, own):
        text += f"; bundle's worst: {worst.get('artifact', 'a graph')} {_agreement(worst, short=True)}"
    sure = f.get("confident_top1_agreement")
    return text, {"top1_agreement": f["top1_agreement"], "confident_top1_agreement": sure, "cosine": f["cosine_mean"]}


def _fidelity_rows(r: dict) -> tuple[dict | None, dict | None]:
    """(the benched artifact's own fidelity row, the bundle's worst row). The artifact's row is its build's
    compile-stage row; a record whose bundle is gone keeps only the worst row it was saved with."""
    manifest = _manifest(r["bundle"])
    compiled = ((manifest.get("stages") or {}).get("compile") or {}).get("fidelity")
    own = compiled if isinstance(compiled, dict) and "top1_agreement" in compiled else None
    worst = (records.worst_fidelity(manifest) if manifest.get("fidelity") else None) or r.get("fidelity")
    return own, worst


def _worse(a: dict, b: dict) -> bool:
    return (a["top1_agreement"], a["cosine_mean"]) < (b["top1_agreement"], b["cosine_mean"])


def _agreement(f: dict, short: bool = False) -> str:
    sure = f.get("confident_top1_agreement")  # what the gate judges: agreement where FP32 is confident
    confident = f" ({sure:.1%} of {f['confident_views']} confident)" if sure is not None else ""
    if short:
        return f"{f['top1_agreement']:.1%}{confident}"
    return f"agreement {f['top1_agreement']:.1%}{confident}, cosine {f['cosine_mean']:.3f} ({f['views']} views)"


def rows(records: list[dict]) -> list[ReportRow]:
    out: list[ReportRow] = []
    for r in records:
        m, check = r["model"], r["model"].get("scaling_check") or {}
        w = weights_of(r)
        fidelity, numbers = fidelity_of(r)
        lat = r["mode"] == "latency"
        out.append(
            {
                "model": m["spec"],
                "family": m["family"],
                "phi": m.get("phi"),
                "only": m.get("only"),
                "resolution": m["resolution"],
                "precision": r["precision"],
                "runtime": r["runtime"],
                "mode": r["mode"],
                "batch": r["batch"],
                "baseline": r["baseline"],
                "target": r["target"],
                "device": short_device(r),
                "series": series_of(r),
                "weights": weights_label(w),
                "weights_source": w.get("source"),
                "fidelity": fidelity,
                "top1_agreement": numbers.get("top1_agreement"),
                "cosine": numbers.get("cosine"),
                "accuracy_drop": numbers.get("accuracy_drop"),
                "sane": not (
                    w.get("random_init") and numbers.get("cosine") is not None and numbers["cosine"] < SANE_COSINE
                ),
                "macs": m["macs"],
                "params": m["params"],
                "flops": m["flops"],
                "p50": r["stats"]["p50_ms"],
                "p90": r["stats"]["p90_ms"],
                "p99": r["stats"]["p99_ms"],
                "mean": r["stats"]["mean_ms"],
                "std": r["stats"]["std_ms"],
                "count": r["stats"]["count"],
                "threads": r["settings"].get("threads"),
                "streams": r["settings"].get("streams"),
                # img/s only where it was the measurement's aim: a latency run's count/seconds is not throughput
                "throughput_ips": None if lat else r["throughput_ips"],
                "gflops": r["achieved_gflops"],
                "peak_gflops": (r.get("peak") or {}).get("gflops"),
                "fraction_of_peak": r["fraction_of_peak"],
                "scaling_baseline": check.get("baseline"),
                "two_pow_phi": check.get("two_pow_phi"),
                "predicted_mult": check.get("predicted"),
                "actual_mult": check.get("mac_ratio"),
                "latency_mult": None,
                "interrupted": r["interrupted"],
                "bundle": r["bundle"],
                **start_and_state(r),
            }
        )
    # Latency multiplier: against the family baseline (b0 / lite0) measured in the same series and mode.
    base: dict[tuple[str, str, str | None], float] = {
        (row["series"], row["mode"], row["model"]): row["p50"] for row in out
    }
    for row in out:
        b = base.get((row["series"], row["mode"], row["scaling_baseline"]))
        if b and row["p50"]:
            row["latency_mult"] = row["p50"] / b
    return sorted(out, key=lambda row: (row["series"], row["flops"], row["model"], row["mode"]))


# -- start-up, memory, the device's state and the spread across rounds (record format 2) ------------------


def start_and_state(r: dict) -> StartAndState:
    """The row's start-up, memory, artifact and device-state columns; None where the record lacks them
    (format 1, or a probe this device does not answer)."""

    def entry(key: str) -> dict:
        v = r.get(key)
        return v if isinstance(v, dict) else {}

    def number(v):  # a record from elsewhere: a figure that is not a number is left out, not fatal
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    mem, art, state, rounds = (entry(k) for k in ("memory", "artifact", "device_state", "rounds"))
    loads = [(s if isinstance(s, dict) else {}).get("load_average") for s in (state.get("before"), state.get("after"))]
    before, after = (number(v[0]) if isinstance(v, list) and v else None for v in loads)
    interval = rounds.get("interval_ms")
    if not isinstance(interval, list):
        interval = [None, None]
    return {
        "load_ms": number(r.get("load_ms")),
        "first_inference_ms": number(r.get("first_inference_ms")),
        "peak_mib": number(mem.get("peak_mib")),
        "memory_increase_mib": number(mem.get("increase_mib")),
        "runners_loaded": number(mem.get("runners_loaded")),
        "artifact_bytes": number(art.get("bytes")),
        "load_before": before,
        "load_after": after,
        "others_cpu_share": number(state.get("others_cpu_share")),
        "busy": state.get("busy") if isinstance(state.get("busy"), bool) else None,
        "rounds": number(rounds.get("count")),
        "p50_low": number(interval[0]),
        "p50_high": number(interval[-1]),
        "p50_coverage": number(rounds.get("coverage")),
    }


def overlapping(table: list[ReportRow]) -> list[tuple[ReportRow, ReportRow]]:
    """Neighbouring models of a series (by FLOPs) whose intervals for the median overlap: the spread across
    rounds is wider than the gap between them, so the order of their latencies is not established. Latency
    rows only: a throughput row's figure is images/s, not its requests' p50."""
    out = []
    for name in dict.fromkeys(r["series"] for r in table):
        pts = sorted(
            (
                r
                for r in table
                if r["series"] == name
                and r["mode"] == "latency"
                and r["p50_low"] is not None
                and r["p50_high"] is not None
            ),
            key=lambda r: (r["flops"], r["model"]),
        )
        # (every point has both ends, as filtered above: said again for the type checker)
        out += [
            (a, b)
            for a, b in itertools.pairwise(pts)
            if a["p50_low"] is not None
            and b["p50_low"] is not None
            and a["p50_high"] is not None
            and b["p50_high"] is not None
            and a["p50_low"] <= b["p50_high"]
            and b["p50_low"] <= a["p50_high"]
        ]
    return out


def state_warnings(table: list[ReportRow]) -> list[str]:
    out = []
    busy = [r for r in table if r["busy"]]
    if busy:
        out.append(
            f"Measured on a busy machine ({', '.join(sorted({r['model'] + ' ' + r['precision'] for r in busy}))}): "
            f"other processes used at least {device_state.BUSY_SHARE:.0%} of its CPUs while they were measured "
            f"(each record's device_state says by which rule); their latencies are slower and noisier than "
            f"the device's own."
        )
    pairs = overlapping(table)
    if pairs:
        out.append(
            "Spread wider than the gap (p50 intervals across interleaved rounds overlap, so which is faster is "
            "not established): "
            + "; ".join(
                f"{a['model']} [{ms(a['p50_low'])}, {ms(a['p50_high'])}] and {b['model']} "
                f"[{ms(b['p50_low'])}, {ms(b['p50_high'])}] ms ({a['series']})"
                for a, b in pairs
            )
            + "."
        )
    return out


def start_table(table: list[ReportRow]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Load time, cold latency and peak memory beside p50, with the device's state (busy rows marked), for
    the rows whose records have them (none: no table)."""

    def mib(v):
        return "" if v is None else f"{v:.0f}"

    measured = [r for r in table if r["load_ms"] is not None or r["rounds"] is not None]
    title = (
        "Start-up, memory and the device's state (load: reading and compiling the artifact; first: the cold "
        "first inference; p50 interval: across interleaved rounds)"
    )
    return (
        []
        if not measured
        else [
            (
                title,
                [
                    "model",
                    "precision",
                    "runtime",
                    "mode",
                    "p50 ms",
                    "p50 interval ms",
                    "rounds",
                    "load ms",
                    "first inference ms",
                    "peak MiB",
                    "+MiB over baseline",
                    "artifact MB",
                    "load avg before/after",
                    "others' CPU",
                    "busy",
                ],
                [
                    [
                        r["model"],
                        r["precision"],
                        r["runtime"],
                        r["mode"],
                        ms(r["p50"]),
                        ""
                        if r["p50_low"] is None
                        else f"{ms(r['p50_low'])} - {ms(r['p50_high'])}"
                        + (f" ({r['p50_coverage']:.0%})" if r["p50_coverage"] is not None else ""),
                        _num(r["rounds"], "g"),
                        _num(r["load_ms"], ".0f"),
                        ms(r["first_inference_ms"]),
                        mib(r["peak_mib"]) + (f" ({r['runners_loaded']} loaded)" if r["runners_loaded"] else ""),
                        mib(r["memory_increase_mib"]),
                        _num(r["artifact_bytes"] and r["artifact_bytes"] / 1e6, ".1f"),
                        "" if r["load_before"] is None else f"{r['load_before']:.2f} / {_num(r['load_after'], '.2f')}",
                        _num(r["others_cpu_share"], ".0%"),
                        {True: "busy", False: "no", None: ""}[r["busy"]],
                    ]
                    for r in measured
                ],
            )
        ]
    )


def fits(table: list[ReportRow], y: Literal["p50", "throughput_ips"] = "p50", mode: str = "latency") -> list[dict]:
    """Per series, least squares of log10(y) on log10(FLOPs) over the rows of one bench mode: y ~ FLOPs^slope."""
    table = [r for r in table if r["mode"] == mode]
    out = []
    for name in dict.fromkeys(r["series"] for r in table):
        pts = [(r["flops"], got, r["model"]) for r in table if r["series"] == name and (got := r[y])]
        fit = {
            "series": name,
            "mode": mode,
            "points": len(pts),
            "slope": None,
            "intercept": None,
            "r2": None,
            "models": [p[2] for p in pts],
            "flops": [p[0] for p in pts],
            y: [p[1] for p in pts],
        }
        if len({p[0] for p in pts}) >= 2:
            x, v = np.log10([p[0] for p in pts]), np.log10([p[1] for p in pts])
            slope, intercept = np.polyfit(x, v, 1)
            resid = v - (slope * x + intercept)
            ss = float(np.sum((v - v.mean()) ** 2))
            fit.update(
                slope=float(slope), intercept=float(intercept), r2=1 - float(np.sum(resid**2)) / ss if ss > 0 else 1.0
            )
        out.append(fit)
    return out


# -- plots -----------------------------------------------------------------------------------------


def _steps(lo: float, hi: float) -> list[float]:
    """1-2-5 values from the largest at or below `lo` to the smallest at or above `hi` (at least two):
    y ticks that enclose every point."""
    first = math.floor(math.log10(lo))
    values = [m * 10.0**d for d in range(first, math.floor(math.log10(hi)) + 2) for m in (1, 2, 5)]
    start = max(i for i, v in enumerate(values) if v <= lo * (1 + 1e-9))
    end = min(i for i, v in enumerate(values) if v >= hi * (1 - 1e-9))
    return values[start : max(end, start + 1) + 1]


# Two models whose FLOPs are closer than this ratio share one x tick (B0 0.772 and Lite0 0.770 GFLOPs would
# print on top of each other, "0.7772"): the points keep their own positions and name labels.
TICK_MERGE_RATIO = 1.08


def merged_ticks(values: list[float], ratio: float = TICK_MERGE_RATIO) -> list[float]:
    """The x ticks: each model's FLOPs, except one that sits within `ratio` of the tick before it."""
    ticks: list[float] = []
    for v in sorted({float(f"{v:.3g}") for v in values}):
        if not ticks or v / ticks[-1] >= ratio:
            ticks.append(v)
    return ticks


def colours(names) -> dict[str, str]:
    """One colour per series name, the same in every plot of a report (latency and throughput list
    different series, so a colour by position would change between them)."""
    return {name: f"C{i % 10}" for i, name in enumerate(sorted(set(names)))}


def figure(series_fits: list[dict], y: str, ylabel: str, title: str, palette: dict[str, str] | None = None):
    """The log-log plot of one mode's series: points, fitted lines, a labelled x tick at each model's
    FLOPs (merged where two nearly coincide; the smallest model is the first tick, nothing sits outside
    the ticks) and 1-2-5 y ticks. `palette`: colour per series name (colours())."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    xs_all, ys_all = [], []
    palette = palette or colours(f["series"] for f in series_fits)
    for f in series_fits:
        if not f["points"]:
            continue
        color = palette[f["series"]]
        gx = np.array(f["flops"]) / 1e9
        xs_all += list(gx)
        ys_all += list(f[y])
        label = f["series"] + (f" (slope {f['slope']:.2f})" if f["slope"] is not None else "")
        ax.loglog(gx, f[y], "o", color=color, label=label)
        if f["slope"] is not None:
            xs = np.geomspace(gx.min(), gx.max(), 20)
            ax.loglog(xs, 10 ** (f["slope"] * np.log10(xs * 1e9) + f["intercept"]), "--", color=color, lw=1)
        for xv, yv, name in zip(gx, f[y], f["models"]):
            ax.annotate(name, (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    if xs_all:
        ticks = merged_ticks(xs_all)  # 3 digits: equal-FLOPs variants share a tick, near-equal ones too
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_xlim(min(xs_all) / 1.15, max(xs_all) * 1.15)
        plt.setp(
            ax.get_xticklabels(),
            rotation=60 if len(ticks) > 6 else 0,
            ha="right" if len(ticks) > 6 else "center",
            fontsize=8,
        )
        steps = _steps(min(ys_all), max(ys_all))
        ax.yaxis.set_major_locator(FixedLocator(steps))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylim(steps[0], steps[-1])
    ax.set_xlabel("FLOPs per image (G, = 2 x MACs; a tick at each model)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot(
    series_fits: list[dict], y: str, ylabel: str, title: str, path: Path, palette: dict[str, str] | None = None
) -> None:
    import matplotlib.pyplot as plt

    # Names are text, not mathtext: a '$' in a spec or series would otherwise be parsed (and can raise).
    with plt.rc_context({"text.parse_math": False}):
        fig = figure(series_fits, y, ylabel, title, palette)
        # The series travel in the PNG's text chunk: a reader (or a test) can tell what the picture shows.
        meta = [{k: f[k] for k in ("series", "points", "slope", "models")} for f in series_fits]
        fig.savefig(path, metadata={"Title": title, "Description": json.dumps(meta)})
    plt.close(fig)


# -- tables ----------------------------------------------------------------------------------------


def _num(v, fmt: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _variant(r: ReportRow) -> str:
    return r["only"] + " only" if r["only"] else "compound" if r["phi"] is not None else "preset"


def tables(
    table: list[ReportRow], lat_fits: list[dict], tput_fits: list[dict]
) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) as text: the same tables go into the Markdown and the HTML."""
    results = (
        "Results (one row per bench mode)",
        [
            "model",
            "weights",
            "precision",
            "runtime",
            "mode",
            "batch",
            "device",
            "MACs (G)",
            "params (M)",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "img/s",
            "GFLOP/s",
            "of peak",
            "fidelity to FP32",
            "2^phi",
            "(a*b^2*g^2)^phi",
            "actual MAC x",
            "latency x",
        ],
        [
            [
                r["model"] + (" (interrupted)" if r["interrupted"] else "") + (" (busy)" if r["busy"] else ""),
                r["weights"],
                r["precision"],
                r["runtime"],
                r["mode"],
                str(r["batch"]),
                r["device"],
                f"{r['macs'] / 1e9:.3f}",
                f"{r['params'] / 1e6:.2f}",
                ms(r["p50"]),
                ms(r["p90"]),
                ms(r["p99"]),
                _num(r["throughput_ips"], ".1f"),
                _num(r["gflops"], ".1f"),
                _num(r["fraction_of_peak"], ".1%"),
                r["fidelity"] + ("" if r["sane"] else " (not numerically sane)"),
                _num(r["two_pow_phi"], ".2f"),
                _num(r["predicted_mult"], ".2f"),
                _num(r["actual_mult"], ".2f"),
                _num(r["latency_mult"], ".2f"),
            ]
            for r in table
        ],
    )
    slopes = (
        "Against FLOPs, per series (latency: p50 ~ FLOPs^slope; throughput: img/s ~ FLOPs^slope)",
        ["series", "mode", "points", "slope", "R^2"],
        [
            [f["series"], f["mode"], str(f["points"]), _num(f["slope"], ".3f"), _num(f["r2"], ".3f")]
            for f in [*lat_fits, *tput_fits]
            if f["points"]
        ],
    )
    out = [slopes, results, *start_table(table)]
    scaled = [r for r in table if r["mode"] == "latency" and (r["phi"] is not None or r["model"] in ("b0", "lite0"))]
    if any(r["only"] for r in scaled):  # a scaling sweep: the paper's Table 3, in milliseconds
        scaled.sort(key=lambda r: (r["series"], r["family"], r["phi"] or 0, _variant(r)))
        out.append(
            (
                "Scaling at matched FLOPS budget (width / depth / resolution only vs compound)",
                [
                    "series",
                    "phi",
                    "variant",
                    "model",
                    "MACs (G)",
                    "(a*b^2*g^2)^phi",
                    "actual MAC x",
                    "p50 ms",
                    "latency x",
                ],
                [
                    [
                        r["series"],
                        _num(r["phi"], "g"),
                        _variant(r),
                        r["model"],
                        f"{r['macs'] / 1e9:.3f}",
                        _num(r["predicted_mult"], ".2f"),
                        _num(r["actual_mult"], ".2f"),
                        ms(r["p50"]),
                        _num(r["latency_mult"], ".2f"),
                    ]
                    for r in scaled
                ],
            )
        )
    return out


def warnings(table: list[ReportRow]) -> list[str]:
    """What a reader must know before trusting a row: random weights, and INT8 graphs that do not follow FP32."""
    out = []
    random = sorted({r["model"] for r in table if r["weights"] == "random"}, key=str)
    if random:
        out.append(
            f"Random weights ({', '.join(random)}): latency study: the outputs mean nothing. Their "
            f"fidelity column says how closely the reduced-precision graph follows its FP32 graph, not accuracy."
        )
    insane = {(r["model"], r["precision"]): r["cosine"] for r in table if not r["sane"]}
    if insane:
        out.append(
            f"Not numerically sane (mean cosine with FP32 below {SANE_COSINE}): "
            + ", ".join(f"{m} {p} (cosine {c:.2f})" for (m, p), c in sorted(insane.items()))
            + ". These random-weight graphs do not compute what their FP32 computes; their speed may not "
            "carry over to trained weights."
        )
    return out


def machines(records: list[dict]) -> list[dict]:
    """One row per device; its peak per precision (an INT8 peak counts 4 int8 ops per FP32 lane: it is not
    the FP32 rows' peak, so each precision's figure is shown under its own name)."""
    seen: dict = {}
    peaks: dict = {}
    for r in records:
        key = (measured_by(r), r["device"]["name"], r["device"]["kind"])
        c = r["device"]["cpu"]
        detail = (r.get("peak") or {}).get("detail", "")
        if detail:
            peaks.setdefault(key, {})[r["precision"]] = detail
        seen[key] = {
            "device": device_of(r),
            "host": r["host"].get("hostname"),
            "cpu": f"{c['model']}, {c['physical_cores']} cores, {c.get('mhz')} MHz, {' '.join(c['isa'])}",
            "peak": "",
            "tools": ", ".join(
                f"{k} {v}" for k, v in r["tools"].items() if k in ("openvino", "onnxruntime", "torch", "tensorrt")
            ),
        }
    for key, row in seen.items():
        found = peaks.get(key, {})
        row["peak"] = "; ".join(f"{p}: {found[p]}" for p in sorted(found, key=_precision_order))
    return list(seen.values())


_MARKDOWN_ACTIVE = re.compile(r"([\\`|<>\[\]])")


def _md(text: str) -> str:
    """Text from a record (a spec, family, node or tool name) as inert Markdown: one line, and no character
    that ends a table cell, opens code, a link, an image or an HTML tag."""
    return _MARKDOWN_ACTIVE.sub(r"\\\1", " ".join(str(text).split()))


def _precision_order(p: str) -> int:
    return ("fp32", "fp16", "int8").index(p) if p in ("fp32", "fp16", "int8") else 3


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _html_table(header: list[str], body: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows_ = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{rows_}</tbody></table>"


CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.5em}
table{border-collapse:collapse;margin:1em 0;font-size:12px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}
table.text td,table.text th{text-align:left}
.note{color:#666}.warning{color:#8a3b00;background:#fff4e5;padding:4px 8px}"""


# -- the command -----------------------------------------------------------------------------------

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
    md = ["# edgeffnet latency report", "", intro, ""] + [f"> **Warning:** {_md(n)}" for n in notes] + [""]
    md += [f"![{n}]({n})" for n in plots] + [""]
    for title, header, body in text:
        md += [f"## {title}", "", _markdown_table(header, body), ""]
    md += [
        "## Machines",
        "",
        _markdown_table(["device", "host", "cpu", "peak", "tools"], [list(m.values()) for m in report["machines"]]),
        "",
    ]
    profile_md, profile_html, profile_files = profile_report.section(records, out, bool(plots))
    atomic_write_text(out / "report.md", "\n".join(md + profile_md))
    embedded = {n: base64.b64encode((out / n).read_bytes()).decode() for n in plots}  # no file beside the page
    images = "".join(f'<p><img alt="{n}" src="data:image/png;base64,{data}"></p>' for n, data in embedded.items())
    page = "".join(f"<h2>{html.escape(t)}</h2>{_html_table(h, b)}" for t, h, b in text)
    page += "<h2>Machines</h2>" + _html_table(
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


def console_table(report: dict):
    """The results for a terminal, in 80 columns: the ones that matter most (report.md has them all)."""
    from rich import box
    from rich.table import Table

    t = Table(
        title=f"Results ({report['generated']})",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
    )
    for h in ("model", "runtime", "mode", "GMACs", "p50 ms", "p90 ms", "img/s", "GFLOP/s", "peak"):
        # No column is cut or wrapped: "latency"/"throughput" whole; a narrow terminal scrolls, as a pipe does.
        t.add_column(
            h,
            justify="left" if h in ("model", "runtime", "mode") else "right",
            no_wrap=True,
            min_width=len("throughput") if h == "mode" else None,
        )
    for r in report["rows"]:
        t.add_row(
            r["model"]
            + (" (random)" if r["weights"] == "random" else "")
            + (" (interrupted)" if r["interrupted"] else "")
            + (" (busy)" if r["busy"] else ""),
            f"{r['runtime']} {r['precision']}",
            r["mode"],
            f"{r['macs'] / 1e9:.3f}",
            ms(r["p50"]),
            ms(r["p90"]),
            _num(r["throughput_ips"], ".1f"),
            _num(r["gflops"], ".1f"),
            _num(r["fraction_of_peak"], ".0%"),
        )
    return t
