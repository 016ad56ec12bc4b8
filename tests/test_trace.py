"""--trace: one profiled inference as Chrome trace JSON (what chrome://tracing and Perfetto open)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from profile_bundles import build

from edgeffnet.measure import profile
from edgeffnet.specs import layer_table
from edgeffnet.specs.scaling import parse_spec

NODES = ["/stem/conv/Conv", "input_abcd_acdb", "/stages/stages.0/stages.0.0/dw/conv/Conv", "/head/conv/Conv"]


def _runs(times: list[list[float]], starts: bool):
    runs = []
    for k, run in enumerate(times):
        t0 = 100.0 * k
        rows = []
        for name, ms in zip(NODES, run):
            row = {
                "node": name,
                "type": "Reorder" if name == "input_abcd_acdb" else "Convolution",
                "time_ms": ms,
                "exec_type": "kernel",
                "precision": "f32",
                "original_names": [name],
            }
            if starts:
                row["start_ms"] = t0
            t0 += ms + (0.5 if starts else 0)
            rows.append(row)
        runs.append(rows)
    return runs


@pytest.mark.parametrize("starts", [False, True])
def test_the_trace_has_one_complete_event_per_node_of_the_median_inference(starts):
    times = [[1.0, 0.1, 2.0, 3.0], [9.0, 0.1, 9.0, 9.0], [1.5, 0.1, 2.5, 3.5]]
    runs = _runs(times, starts)
    table = layer_table.make(parse_spec("b0,res=64"), 1000, "fp32", [])
    rec = profile.analyse(table, runs, "fp32", "openvino", [6.0, 7.0])
    trace = json.loads(json.dumps(profile.trace(runs, rec)))
    events = trace["traceEvents"]
    assert [e["name"] for e in events] == NODES and all(e["ph"] == "X" for e in events)
    assert [e["dur"] for e in events] == [1500.0, 100.0, 2500.0, 3500.0]  # the median run, in microseconds
    assert events[0]["ts"] == 0 and all(b["ts"] >= a["ts"] + a["dur"] for a, b in zip(events, events[1:]))
    assert [e["args"]["layer"] for e in events] == ["stem", None, "stages.0.0.dw", "head"]
    assert [e["args"]["role"] for e in events] == ["stem", "overhead", "depthwise", "head"]
    assert all(e["args"]["precision"] == "f32" and e["args"]["exec_type"] == "kernel" for e in events)
    if starts:  # the runtime's own start times are kept: gaps between nodes stay visible
        assert events[1]["ts"] - (events[0]["ts"] + events[0]["dur"]) == pytest.approx(500.0)


def test_bench_cli_writes_the_trace_and_refuses_it_without_profile(tmp_path):
    bundle = build(tmp_path, "fp32")
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    cli = [sys.executable, "-m", "edgeffnet.cli", "bench", str(bundle), "-n", "5", "-s", "0", "--warmup", "0"]
    out = subprocess.run(
        cli + ["--trace", str(tmp_path / "t.json")], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode != 0 and "--profile" in out.stderr and not (tmp_path / "t.json").exists()
    out = subprocess.run(
        cli + ["--profile", "--profile-iterations", "5", "--trace", str(tmp_path / "t.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "time by role" in out.stdout and "costliest" in out.stdout
    saved = json.loads((bundle / "bench" / "openvino-latency.json").read_text())["profile"]
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    assert len(events) == saved["runtime_nodes"] and {e["ph"] for e in events} == {"X"}
    layers = {r["name"] for r in saved["layers"] if r["role"] != "overhead"}
    assert {e["args"]["layer"] for e in events if e["args"]["layer"]} <= layers
