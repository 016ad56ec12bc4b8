"""OpenVINO's CPU counters are running means since compile: the profile is the mean over the profiled
inferences, the warm-up left out (edgeffnet.backends.openvino.runner.window_mean)."""

from __future__ import annotations

import pytest

from edgeffnet.backends.openvino.runner import window_mean
from edgeffnet.measure import profile
from edgeffnet.specs import layer_table
from edgeffnet.specs.scaling import parse_spec

SE = "/stages/stages.1/stages.1.0/se/reduce/Conv/WithoutBiases"
DW = "/stages/stages.1/stages.1.0/dw/conv/Conv/WithoutBiases"


def _readings(per_inference_us: dict[str, list[int]]) -> list[list[dict]]:
    """What the CPU plugin reports after each inference: per node floor(total / count), whole microseconds."""
    out = []
    n = len(next(iter(per_inference_us.values())))
    for i in range(1, n + 1):
        out.append(
            [
                {"node": node, "type": "Convolution", "time_ms": (sum(t[:i]) // i) / 1e3, "original_names": [node]}
                for node, t in per_inference_us.items()
            ]
        )
    return out


def test_the_window_mean_leaves_the_cold_inference_out():
    # a cold first inference (weights repacked) 9x the warm ones, then 4 us and 200 us nodes, noisy
    times = {SE: [900] + [4, 5, 4, 4, 6, 4, 5, 4] * 25, DW: [2500] + [200, 210, 190, 205] * 50}
    warmup = 3
    readings = _readings(times)
    mean = {r["node"]: r["time_ms"] * 1e3 for r in window_mean(readings[warmup - 1], readings[-1], warmup, 201)}
    for node, t in times.items():
        exact = sum(t[warmup:]) / len(t[warmup:])
        # each reading is floored to a microsecond: the mean is within (warmup + n) / (n - warmup) of it
        assert exact - 1.1 <= mean[node] <= exact + 0.1, (node, mean[node], exact)
    # what the median of the readings after each inference gave: the cold inference kept in every one
    running = sorted(r[0]["time_ms"] * 1e3 for r in readings[warmup:])
    assert running[len(running) // 2] > 1.3 * mean[SE]


def test_a_mean_profile_says_so_and_checks_against_the_mean_latency():
    rows = [
        {"node": SE, "type": "Convolution", "time_ms": 0.004, "exec_type": "k", "precision": "f32"},
        {"node": DW, "type": "Convolution", "time_ms": 0.2, "exec_type": "k", "precision": "f32"},
    ]
    table = layer_table.make(parse_spec("b0,res=64"), 1000, "fp32", [])
    wall = [0.25, 0.22, 0.3, 0.23]
    p = profile.analyse(table, [rows], "fp32", "openvino", [0.2, 0.21, 0.4], None, wall, "mean", 4)
    assert p["iterations"] == 4 and "mean" in p["statistic"]
    assert p["by_role"] == {"depthwise": 0.2, "se": 0.004}
    assert p["profiled_min_ms"] is None  # a mean has no per-inference minimum
    assert p["coverage"]["median"] == pytest.approx(0.204 / (sum(wall) / 4))
    assert p["sum_check"]["ratio_median"] == pytest.approx(0.204 / (0.81 / 3))
    assert p["sum_check"]["ratio_min"] == pytest.approx(0.204 / 0.2)
    with pytest.raises(ValueError):
        profile.analyse(table, [rows, rows], "fp32", "openvino", [], statistic="mean")
