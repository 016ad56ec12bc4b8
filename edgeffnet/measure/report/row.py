"""A bench record as a report row, typed, so that a key a table reads is a key a row has (mypy checks both).

`rows` makes one `ReportRow` per bench record; report.json's "rows", report.csv's lines and every table
and plot come from them."""

from __future__ import annotations

from edgeffnet.measure.report.devices import series_of, short_device
from edgeffnet.measure.report.fidelity import SANE_COSINE, fidelity_of, weights_label, weights_of
from edgeffnet.measure.report.state import StartAndState, start_and_state


class ReportRow(StartAndState):
    """One measurement: what was measured, on what, how fast, and how close to FP32 it computes."""

    model: str  # the spec's name
    family: str
    phi: float | None
    only: str | None
    resolution: int
    precision: str
    runtime: str
    mode: str  # latency | throughput
    batch: int
    baseline: bool
    target: str
    device: str  # the device as a table cell
    series: str  # family, precision, runtime and device: the points one fit goes through
    weights: str  # random | pretrained | checkpoint | unknown
    weights_source: str | None
    fidelity: str  # the fidelity cell's text
    top1_agreement: float | None
    cosine: float | None
    accuracy_drop: float | None
    sane: bool  # not a random-weight graph that computes something else than its FP32
    macs: int
    params: int
    flops: int
    p50: float  # ms
    p90: float
    p99: float
    mean: float
    std: float
    count: int
    threads: int | None
    streams: int | None
    throughput_ips: float | None  # only where throughput was the measurement's aim
    gflops: float | None
    peak_gflops: float | None
    fraction_of_peak: float | None
    scaling_baseline: str | None  # the family's baseline model the multipliers are against
    two_pow_phi: float | None
    predicted_mult: float | None
    actual_mult: float | None
    latency_mult: float | None
    interrupted: bool
    bundle: str


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
