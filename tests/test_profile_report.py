"""The report's profile section: a roofline per profiled bundle, time by role per series, the ten costliest
layers, per-role latency against per-role FLOPs across a family; the HTML page embeds them."""

from __future__ import annotations

import copy
import json

import pytest
from profile_bundles import build

from edgeffnet.measure import bench, report


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile-report")
    path = build(root, "fp32")
    records, _ = bench.run(path, bench.Settings(iterations=5, seconds=0, warmup=0, profile=5))
    return path, records[0]


def test_the_report_draws_and_tabulates_the_profile(profiled, tmp_path):
    path, rec = profiled
    out = report.write(report.collect([path]), tmp_path / "r")
    files = {f.split("/")[-1] for f in out["files"]}
    assert any(f.startswith("roofline-") for f in files) and any(f.startswith("time_by_role-") for f in files)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Where the time goes" in md and "Ten costliest layers" in md
    table = md.split("Ten costliest layers")[1].split("\n\n")[1].splitlines()
    assert len(table) == 2 + 10  # header, rule, ten layers
    assert rec.profile["layers"][0]["name"] in table[2]
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "Ten costliest layers" in page


def test_a_family_gets_per_role_latency_against_flops(profiled, tmp_path):
    path, rec = profiled
    base = json.loads((path / "bench" / "openvino-latency.json").read_text())
    bigger = copy.deepcopy(base)  # a second model of the series: another spec with twice the work
    bigger.update(bundle=base["bundle"] + "-x2", created=base["created"])
    bigger["model"] = base["model"] | {"spec": "lite0,res=91", "flops": 2 * base["model"]["flops"]}
    bigger["profile"]["by_role"] = {k: 2 * v for k, v in base["profile"]["by_role"].items()}
    bigger["profile"]["flops_by_role"] = {k: 2 * v for k, v in base["profile"]["flops_by_role"].items()}
    files = []
    for i, d in enumerate((base, bigger)):
        f = tmp_path / f"rec{i}.json"
        f.write_text(json.dumps(d))
        files.append(f)
    out = report.write(report.collect(files), tmp_path / "r")
    names = [f.split("/")[-1] for f in out["files"]]
    assert any(n.startswith("role_latency_vs_flops-") for n in names)
    assert sum(n.startswith("roofline-") for n in names) == 2
