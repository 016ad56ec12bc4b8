"""The report's tables as text, (title, header, rows): the same tables go into the Markdown and the HTML."""

from __future__ import annotations

import math

from edgeffnet.measure.console import ms
from edgeffnet.measure.report.devices import device_of, measured_by
from edgeffnet.measure.report.row import ReportRow


def cell(v, fmt: str) -> str:
    """A figure as a table cell: empty where the record has none (or it is not a number: NaN)."""
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
                cell(r["throughput_ips"], ".1f"),
                cell(r["gflops"], ".1f"),
                cell(r["fraction_of_peak"], ".1%"),
                r["fidelity"] + ("" if r["sane"] else " (not numerically sane)"),
                cell(r["two_pow_phi"], ".2f"),
                cell(r["predicted_mult"], ".2f"),
                cell(r["actual_mult"], ".2f"),
                cell(r["latency_mult"], ".2f"),
            ]
            for r in table
        ],
    )
    slopes = (
        "Against FLOPs, per series (latency: p50 ~ FLOPs^slope; throughput: img/s ~ FLOPs^slope)",
        ["series", "mode", "points", "slope", "R^2"],
        [
            [f["series"], f["mode"], str(f["points"]), cell(f["slope"], ".3f"), cell(f["r2"], ".3f")]
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
                        cell(r["phi"], "g"),
                        _variant(r),
                        r["model"],
                        f"{r['macs'] / 1e9:.3f}",
                        cell(r["predicted_mult"], ".2f"),
                        cell(r["actual_mult"], ".2f"),
                        ms(r["p50"]),
                        cell(r["latency_mult"], ".2f"),
                    ]
                    for r in scaled
                ],
            )
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
                        cell(r["rounds"], "g"),
                        cell(r["load_ms"], ".0f"),
                        ms(r["first_inference_ms"]),
                        mib(r["peak_mib"]) + (f" ({r['runners_loaded']} loaded)" if r["runners_loaded"] else ""),
                        mib(r["memory_increase_mib"]),
                        cell(r["artifact_bytes"] and r["artifact_bytes"] / 1e6, ".1f"),
                        "" if r["load_before"] is None else f"{r['load_before']:.2f} / {cell(r['load_after'], '.2f')}",
                        cell(r["others_cpu_share"], ".0%"),
                        {True: "busy", False: "no", None: ""}[r["busy"]],
                    ]
                    for r in measured
                ],
            )
        ]
    )


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


def _precision_order(p: str) -> int:
    return ("fp32", "fp16", "int8").index(p) if p in ("fp32", "fp16", "int8") else 3
