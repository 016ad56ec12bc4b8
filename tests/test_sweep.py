"""The sweep: --models ranges, the scaling variants, the plan, and resuming from what is on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeffnet.core.errors import UserError
from edgeffnet.measure import bench
from edgeffnet.network.info import describe
from edgeffnet.specs.scaling import parse_spec
from edgeffnet.workflows import sweep


def test_model_ranges():
    assert sweep.parse_models("b0-b3,lite0-lite2") == ["b0", "b1", "b2", "b3", "lite0", "lite1", "lite2"]
    assert sweep.parse_models(" b2 ,efficientnet-b4,b1-b2") == ["b2", "b4", "b1"]  # duplicates once, in order
    assert sweep.parse_models("lite4-lite4") == ["lite4"]
    for bad in ("b3-b1", "b0-lite2", "b9", "b0,,b1", "b0-", "phi=2"):
        with pytest.raises(UserError, match="bad --models"):
            sweep.parse_models(bad)


def test_scaling_variants_spend_the_same_budget():
    specs = sweep.scaling_specs("1,2")
    assert specs == [
        "b0",
        "b0,phi=1",
        "b0,only=width,phi=1",
        "b0,only=depth,phi=1",
        "b0,only=resolution,phi=1",
        "b0,phi=2",
        "b0,only=width,phi=2",
        "b0,only=depth,phi=2",
        "b0,only=resolution,phi=2",
    ]
    assert sweep.scaling_specs("lite0:1")[0] == "lite0" and len(sweep.scaling_specs("lite0:1")) == 5
    for phi in (1, 2):
        group = [describe(parse_spec(s))["scaling_check"] for s in specs if f"phi={phi}" in s]
        assert len(group) == 4 and len({round(c["predicted"], 9) for c in group}) == 1  # one FLOPS budget
        for c in group:  # rounding channels, layers and pixels keeps each variant near it
            assert 0.75 < c["ratio_over_predicted"] < 1.3, c
    for bad in ("b3:1", "b0:x", "b0:"):
        with pytest.raises(UserError, match="scaling"):
            sweep.scaling_specs(bad)


def test_plan():
    items = sweep.plan("b0-b1", ("lite0,res=96", "b0"), None, ["fp32", "int8"])
    assert [(i.spec, i.precision) for i in items] == [
        ("b0", "fp32"),
        ("b0", "int8"),
        ("b1", "fp32"),
        ("b1", "int8"),
        ("lite0,res=96", "fp32"),
        ("lite0,res=96", "int8"),
    ]
    assert [i.spec for i in sweep.plan(None, (), None, ["fp32"])] == ["b0", "b1", "b2", "b3", "lite0"]
    assert len(sweep.plan(None, (), "1", ["fp32"])) == 5
    assert sweep.Item("b0,phi=2,only=depth", "int8").bundle_dir(Path("r"), "cpu").name == "b0-phi2-onlydepth-cpu-int8"


def test_plan_uses_real_weights_where_they_exist():
    items = {i.spec: i.weights for i in sweep.plan("b0,lite0-lite1", ("lite0,res=96", "lite0,w=1.2"), None, ["int8"])}
    assert items == {
        "b0": None,
        "lite0": "pretrained",
        "lite1": "pretrained",
        "lite0,res=96": "pretrained",
        "lite0,w=1.2": None,
    }  # lite0's weights fit any resolution, not another width
    assert {i.weights for i in sweep.plan("b0,lite0", (), None, ["fp32"], weights="random")} == {None}
    with pytest.raises(UserError, match="--weights takes pretrained or random"):
        sweep.plan("lite0", (), None, ["fp32"], weights="imagenet")


QUICK = bench.Settings(iterations=3, seconds=0, warmup=0)
SPECS = ("lite0,res=96", "lite0,res=128")


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path_factory.getbasetemp() / "sweep-cache"))


class Counter:
    """Wraps a function and counts the calls, by first argument."""

    def __init__(self, fn, fail_on=None):
        self.fn, self.calls, self.fail_on = fn, [], fail_on

    def __call__(self, *args, **kw):
        first = args[0]
        self.calls.append(getattr(first, "spec", None) or str(first))
        if self.fail_on and self.fail_on(first):
            raise KeyboardInterrupt
        return self.fn(*args, **kw)


REAL_BUILD, REAL_LOAD = sweep.build, bench.cold_start


def _run(out, monkeypatch, settings=QUICK, interrupt_on=None):
    """The sweep, counting builds and runner loads (each item's runner is loaded once per measurement)."""
    builds, loads = Counter(REAL_BUILD), Counter(REAL_LOAD, fail_on=interrupt_on)
    monkeypatch.setattr(sweep, "build", builds)
    monkeypatch.setattr(bench, "cold_start", loads)
    items = sweep.plan(None, SPECS, None, ["fp32"])
    result = sweep.run(items, "cpu", out, ["latency"], [], settings)
    return result, builds.calls, loads.calls


def test_resume_continues_where_it_stopped(tmp_path, monkeypatch, cache):
    out = tmp_path / "results"

    def second(b):  # Ctrl-C while the second item's runner loads: both are built, nothing measured
        return "res128" in str(b.path)

    result, builds, loads = _run(out, monkeypatch, interrupt_on=second)
    assert result["interrupted"].spec == "lite0,res=96" and len(builds) == 2 and len(loads) == 2
    first = out / "bundles" / "lite0-res96-cpu-fp32" / "bench" / "openvino-latency.json"
    assert not first.exists()
    result, builds, loads = _run(out, monkeypatch)
    assert builds == [] and len(loads) == 2  # not built again; both measured, together
    assert [i.spec for i in result["done"]] == list(SPECS) and first.is_file()
    result, builds, loads = _run(out, monkeypatch)
    assert builds == [] and loads == [] and len(result["skipped"]) == 2

    rec = json.loads(first.read_text())  # a measurement cut short by Ctrl-C is measured again
    first.write_text(json.dumps(rec | {"interrupted": True}))
    result, builds, loads = _run(out, monkeypatch)
    assert builds == [] and len(loads) == 1 and "res96" in loads[0]
    assert [i.spec for i in result["skipped"]] == ["lite0,res=128"]
    assert not json.loads(first.read_text())["interrupted"]

    result, builds, loads = _run(out, monkeypatch, settings=bench.Settings(iterations=4, seconds=0, warmup=0))
    assert builds == [] and len(loads) == 2  # other settings: measured again, not rebuilt


def test_records_carry_the_weights_and_other_weights_rebuild(tmp_path, monkeypatch, cache):
    builds = Counter(REAL_BUILD)
    monkeypatch.setattr(sweep, "build", builds)
    out = tmp_path / "results"
    record = out / "bundles" / "lite0-res96-cpu-fp32" / "bench" / "openvino-latency.json"
    for weights, random_init in (("random", True), ("random", True), ("pretrained", False)):
        sweep.run(sweep.plan(None, SPECS[:1], None, ["fp32"], weights), "cpu", out, ["latency"], [], QUICK)
        assert json.loads(record.read_text())["weights"]["random_init"] is random_init
    assert len(builds.calls) == 2  # random, (measured before), then pretrained: a bundle of other weights
    assert json.loads(record.read_text())["weights"]["source"].startswith("pretrained:efficientnet-lite0")


def test_a_failing_item_does_not_stop_the_sweep(tmp_path, monkeypatch, cache):
    def build(spec, **kw):
        if "128" in spec:
            raise UserError("simulated failure")
        return REAL_BUILD(spec, **kw)

    monkeypatch.setattr(sweep, "build", build)
    items = sweep.plan(None, SPECS, None, ["fp32"])
    result = sweep.run(items, "cpu", tmp_path, ["latency"], [], QUICK)
    assert [i.spec for i in result["done"]] == ["lite0,res=96"]
    assert [(i.spec, why) for i, why in result["failed"]] == [("lite0,res=128", "simulated failure")]


def test_bad_requests_fail_before_any_work(tmp_path):
    items = sweep.plan(None, SPECS, None, ["fp32"])
    for kw, msg in (
        (dict(target="npu"), "supports"),
        (dict(modes=["fast"]), "--mode"),
        (dict(modes=[]), "--mode"),
        (dict(baselines=["tf"]), "unknown baseline"),
    ):
        args = dict(target="cpu", modes=["latency"], baselines=[]) | kw
        with pytest.raises(UserError, match=msg):
            sweep.run(items, args["target"], tmp_path, args["modes"], args["baselines"], QUICK)
    assert not (tmp_path / "bundles").exists()


def test_cli_sweep_writes_the_report(tmp_path, cli):
    r = cli(
        "sweep", "--spec", SPECS[0], "-n", "3", "-s", "0", "--warmup", "0", "--mode", "latency", "-o", str(tmp_path)
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report.html").is_file() and (tmp_path / "latency_vs_flops.png").is_file()
    assert "lite0,res=96" in (tmp_path / "report.md").read_text()
    for args in (["--models", "b0-lite1"], ["--scaling", "b2:1"], ["--models", "b0", "--precision", "fp64"]):
        r = cli("sweep", *args, "-o", str(tmp_path / "bad"))
        assert r.returncode == 2 and r.stderr.startswith("edgeffnet: error:") and r.stderr.count("\n") == 1, r.stderr
