"""The latency model: recovers a known per-group device from its p50s and profiles, predicts networks it
never saw, keeps its errors, and refuses model files from another device or damaged ones in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from latency_truth import Truth

from edgeffnet.core.errors import UserError
from edgeffnet.core.untrusted import UntrustedFileError
from edgeffnet.latency import device, store
from edgeffnet.latency import model as lm
from edgeffnet.latency.design import design

REPO = Path(__file__).resolve().parents[1]
FIT = design(40)
UNSEEN = [s for s in design(60, seed=7) if s not in FIT][:30]
HERE = {
    "cpu": "Pretend CPU",
    "logical_cpus": 2,
    "usable_cpus": 2,
    "runtime": "openvino",
    "runtime_version": "1",
    "target": "cpu",
    "target_hash": "abc",
}


def _relative(m: lm.LatencyModel, truth: Truth, specs: list[str]) -> np.ndarray:
    return np.array([m.predict(s) / truth.ms(s) - 1 for s in specs])


def test_whole_network_p50s_predict_networks_never_seen():
    truth = Truth(seed=1)
    m = lm.fit(truth.rows(FIT, noise=0.02), "fp32", HERE)
    rel = _relative(m, truth, UNSEEN)
    # 2% measurement noise: the unseen networks land within 6% each, 3% RMSE (the form is the truth's)
    assert np.abs(rel).max() < 0.06 and np.sqrt(np.mean(rel**2)) < 0.03
    held = m.errors["held_out"]
    assert held["networks"] == len(FIT) and 0 < held["rmse_pct"] < 5 and held["within_10pct"] == 1.0
    assert m.errors["fit"]["rmse_pct"] <= held["rmse_pct"]  # fitted on them: no worse than held out
    lo, hi = m.interval(10.0)
    assert lo < 10.0 < hi and hi - lo < 2.0  # the 90% band of held-out residuals around a prediction
    assert all(v >= 0 for c in m.groups.values() for v in c.values()) and m.constant_ms >= 0


def _per_role(by_group: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for g, t in by_group.items():
        out[g.split(".")[0]] = out.get(g.split(".")[0], 0.0) + t
    return out


@pytest.mark.parametrize("kind", ["layers", "by_role"])
def test_profiles_say_where_the_time_goes(kind):
    """With profiles (docs/measuring.md, profiler overhead included) the model splits a network's time by
    group as the device does; from p50s alone it cannot know the split."""
    truth = Truth(seed=3)
    m = lm.fit(truth.rows(FIT, noise=0.02, profile=kind), "fp32", HERE)
    assert m.data["profiled_networks"] == len(FIT) and m.data["profile_rows"] > len(FIT)
    spec = UNSEEN[0]
    # per role (a by_role profile times roles, not the depthwise kernels within them); roles with >5% of the time
    got, want = _per_role(m.by_group(spec)), _per_role(truth.by_group(spec))
    for role in (r for r, t in want.items() if t > 0.05 * sum(want.values())):
        assert got[role] == pytest.approx(want[role], rel=0.15), role
    rel = _relative(m, truth, UNSEEN)
    assert np.sqrt(np.mean(rel**2)) < 0.03


def test_paired_timing_takes_the_drift_out():
    truth = Truth(seed=2)
    rows = truth.rows(FIT[:12], noise=0.0)
    for i, r in enumerate(rows):  # the machine slows down 3x over the run; the reference slows alike
        slow = 1 + 2 * i / len(rows)
        r["p50_ms"] *= slow
        r["reference"] = {"spec": "b0,phi=-1", "p50_ms": 5.0 * slow}
    paired = store.paired_p50(rows)
    median_slow = np.median([1 + 2 * i / len(rows) for i in range(len(rows))])
    for r, p in zip(rows, paired):
        assert p == pytest.approx(truth.ms(r["spec"]) * median_slow)


def test_a_burst_within_a_pairing_is_taken_out_by_per_round_ratios():
    """A neighbour's burst that slows 40% of the rounds, over the longer call's samples more than the
    shorter's (it is exposed longer): the ratio of the two medians moves, the median of the per-round
    ratios does not, and the store uses that ratio where a row has it."""
    from edgeffnet.measure.timing import median_ratio

    slow_network = set(range(20))  # a 30% slowdown over rounds 0-19 hits both calls of those rounds ...
    slow_reference = set(range(26))  # ... and the longer call's samples a little longer
    times = {
        "network": [4.0 * (1.3 if i in slow_network else 1.0) for i in range(50)],
        "reference": [10.0 * (1.3 if i in slow_reference else 1.0) for i in range(50)],
    }
    ratio_of_medians = np.median(times["network"]) / np.median(times["reference"])
    assert median_ratio(times, "network", "reference") == pytest.approx(0.4)
    assert abs(ratio_of_medians / 0.4 - 1) > 0.1  # what pairing by medians alone would have measured
    row = {
        "spec": "b0,phi=-2",
        "network": "n",
        "p50_ms": 5.2,
        "reference": {"spec": "b0,phi=-1", "p50_ms": 13.0, "ratio": 0.4},
    }
    assert store.ratio_to_reference(row) == 0.4
    assert store.paired_p50([row, {**row, "reference": {"spec": "b0,phi=-1", "p50_ms": 9.0}}])[0] == pytest.approx(
        0.4 * 11.0
    )


def test_new_measurements_far_off_the_model_ask_for_a_refit():
    truth = Truth(seed=4)
    rows = truth.rows(FIT[:20], noise=0.01)
    m = lm.fit(rows, "fp32", HERE)
    same = truth.rows(UNSEEN[:5], noise=0.01)
    for r in same:
        r["measured"] = "9999-12-31T00:00:00Z"
    assert not lm.needs_refit(m, rows + same)[0]
    slower = Truth(seed=4, scale=1.6)  # e.g. a new runtime version made everything 60% slower
    slower.coef = truth.coef
    moved = slower.rows(UNSEEN[:5], noise=0.01)
    for r in moved:
        r["measured"] = "9999-12-31T00:00:00Z"
    refit, why = lm.needs_refit(m, rows + moved)
    assert refit and "5 networks measured since the fit" in why
    assert not lm.needs_refit(m, rows + moved[:2])[0]  # too few to judge


def _saved(tmp_path, **edit) -> Path:
    truth = Truth(seed=5)
    m = lm.fit(truth.rows(FIT[:12]), "fp32", HERE, held_out=False)
    path = m.save(tmp_path / "model.json")
    if edit:
        d = json.loads(path.read_text())
        for k, v in edit.items():
            d[k] = v
        path.write_text(json.dumps(d))
    return path


def test_model_file_round_trip_and_refusal_for_another_device(tmp_path):
    path = _saved(tmp_path)
    back = lm.LatencyModel.load(path, here=HERE, precision="fp32")
    assert back.predict(UNSEEN[0]) == pytest.approx(lm.LatencyModel.load(path).predict(UNSEEN[0]))
    for k, v in (("cpu", "Another CPU"), ("logical_cpus", 64), ("runtime_version", "2"), ("target_hash", "zzz")):
        with pytest.raises(UserError) as e:
            lm.LatencyModel.load(path, here=HERE | {k: v}, precision="fp32")
        assert "another device" in str(e.value) and k in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="is for fp32, not int8"):
        lm.LatencyModel.load(path, here=HERE, precision="int8")


@pytest.mark.parametrize(
    "damage, says",
    [
        ({"constant_ms": "0.5"}, "constant_ms"),
        ({"groups": {"expand": {"ms_per_gmac": 1.0, "ms_per_mb": "x", "ms_per_layer": 0.1}}}, "ms_per_mb"),
        ({"groups": {"expand": {"ms_per_gmac": -1.0, "ms_per_mb": 0.1, "ms_per_layer": 0.1}}}, "negative"),
        ({"groups": []}, "groups"),
        ({"groups": {}}, "no layer groups"),
        ({"format": "nn-meter/2"}, "format"),
        ({"device": "cpu"}, "device"),
        ({"errors": {"held_out": {"residual_q05": True}}}, "residual_q05"),
    ],
)
def test_damaged_model_files_are_refused_in_one_line(tmp_path, damage, says):
    path = _saved(tmp_path, **damage)
    with pytest.raises(UntrustedFileError) as e:
        lm.LatencyModel.load(path, here=HERE)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_nan_and_non_files_are_refused(tmp_path):
    path = _saved(tmp_path)
    path.write_text(path.read_text().replace('"constant_ms": ', '"constant_ms": NaN, "was": ', 1))
    with pytest.raises(UntrustedFileError, match="NaN"):
        lm.LatencyModel.load(path)
    with pytest.raises(UntrustedFileError, match="is a directory, not a file"):
        lm.LatencyModel.load(tmp_path)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UntrustedFileError, match="list"):
        lm.LatencyModel.load(tmp_path / "list.json")


def test_store_skips_damaged_lines_and_stays_bounded(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    truth = Truth(seed=6)
    store.append(path, truth.rows(FIT[:3]))
    with open(path, "a") as f:
        f.write(
            '{"spec": "b0", "network": "x", "p50_ms": NaN}\n{"cut short\n{"spec": "b0", "network": "x", "p50_ms": -1}\n'
        )
    rows, skipped = store.read(path)
    assert len(rows) == 3 and skipped == 3
    monkeypatch.setattr(store, "MAX_ROWS", 4)
    store.append(path, truth.rows(FIT[3:6]))
    rows, _ = store.read(path)
    assert [r["spec"] for r in rows] == FIT[2:6]  # the newest kept


def _cli(*args, cache: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO), "EDGEFFNET_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "edgeffnet.cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


def test_cli_predict_and_info_for_never_built_networks(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFFNET_CACHE", str(tmp_path / "cache"))
    here = device.identity("cpu")
    truth = Truth(seed=7)
    rows = truth.rows(FIT[:16])
    store.append(device.data_path(here, "fp32"), rows)
    m = lm.fit(rows, "fp32", here)
    m.save(device.model_path(here, "fp32"))
    spec = UNSEEN[1]
    done = _cli("latency", "predict", spec, "lite0,phi=-2", "--target", "cpu", "--json", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)["predictions"]
    assert got[0]["predicted_p50_ms"] == pytest.approx(m.predict(spec), rel=1e-9)
    assert got[0]["low_ms"] <= got[0]["predicted_p50_ms"] <= got[0]["high_ms"] and len(got) == 2
    done = _cli("info", spec, "--target", "cpu", cache=tmp_path / "cache")
    assert done.returncode == 0 and "predicted p50 on cpu (fp32)" in done.stdout, done.stderr

    other = json.loads(device.model_path(here, "fp32").read_text())
    other["device"]["cpu"] = "Another CPU"
    (tmp_path / "other.json").write_text(json.dumps(other))
    for args in (
        ("latency", "predict", spec, "--latency-model", str(tmp_path / "other.json")),
        ("info", spec, "--target", "cpu", "--latency-model", str(tmp_path / "other.json")),
    ):
        done = _cli(*args, cache=tmp_path / "cache")
        assert done.returncode == 2 and "another device" in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    done = _cli("latency", "predict", spec, "--precision", "int8", cache=tmp_path / "cache")
    assert done.returncode == 2 and "no latency model" in done.stderr and "latency fit" in done.stderr
