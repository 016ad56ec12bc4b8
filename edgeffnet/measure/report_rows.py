"""The rows a report is made of, typed, so that a key a table reads is a key a row has (mypy checks both).

`report.rows` makes one `ReportRow` per bench record; report.json's "rows", report.csv's lines and every
table and plot come from them. `AccuracyDrop` is what a row's fidelity cell says of an eval result.
"""

from __future__ import annotations

from typing import TypedDict


class StartAndState(TypedDict):
    """Start-up, memory, artifact and device state (bench record format 2); None where the record lacks them."""

    load_ms: float | None
    first_inference_ms: float | None
    peak_mib: float | None
    memory_increase_mib: float | None
    runners_loaded: float | None
    artifact_bytes: float | None
    load_before: float | None
    load_after: float | None
    others_cpu_share: float | None
    busy: bool | None
    rounds: float | None
    p50_low: float | None
    p50_high: float | None
    p50_coverage: float | None


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


class AccuracyDrop(TypedDict):
    """The worst top-1 accuracy drop any artifact of a bundle shows in its eval results."""

    drop: float  # FP32 minus the artifact, a fraction
    interval: list | None  # its 95% interval, where the result has one
    top1: float | None
    fp32_top1: float | None
    artifact: str | None
    images: int | None
    data: str  # the eval result's file name
    partial: bool
    images_total: int | None
