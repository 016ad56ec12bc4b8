"""Where an INT8 build's time goes: wall and CPU seconds of each stage and of the INT8 steps inside them.

    PYTHONPATH=. python benchmarks/int8_stage_times.py b3 [--json out.json]

Runs `edgeffnet.build(SPEC, precision="int8")` in this process against an empty temporary stage cache,
with the stages and the INT8 steps (calibration statistics, method choice and sensitivity pass, the fidelity
rows, OpenVINO's routes: NNCF, route fidelity, route latency) wrapped in timers. CPU seconds (this process,
every thread) say what the work costs on a shared or loaded machine, where wall seconds mostly say how busy
it was. Steps a version of the code lacks are left out, so the same script times an older checkout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

# (module, attribute, label): the stages as the pipeline calls them, then the INT8 steps inside them.
STEPS = [
    ("edgeffnet.pipeline.stages", "reference", "stage reference"),
    ("edgeffnet.pipeline.stages", "export", "stage export"),
    ("edgeffnet.pipeline.stages", "simplify", "stage simplify"),
    ("edgeffnet.pipeline.stages", "precision", "stage precision"),
    ("edgeffnet.pipeline.stages", "compile", "stage compile"),
    ("edgeffnet.pipeline.stages", "fidelity_verdict", "stage fidelity verdict"),
    ("edgeffnet.precision.int8", "statistics", "  calibration statistics"),
    ("edgeffnet.precision.int8", "quantize_model", "  method choice + sensitivity pass"),
    ("edgeffnet.precision.fidelity", "report", "  fidelity rows (comparison only)"),
    ("edgeffnet.precision.fidelity", "fp32_reference", "  fidelity FP32 reference"),
    ("edgeffnet.pipeline.int8_routes", "route_graphs", "  routes: graphs"),
    ("edgeffnet.pipeline.int8_routes", "_nncf_ir", "  routes: NNCF quantization"),
    ("edgeffnet.pipeline.int8_routes", "run_batched", "  routes: fidelity on tuning views (+ final)"),
    ("edgeffnet.pipeline.int8_routes", "interleaved_p50", "  routes: latency race"),
]


def wrap(module, name: str, label: str, spent: dict) -> None:
    fn = getattr(module, name)

    def timed(*args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            got = spent.setdefault(label, [0.0, 0.0, 0])
            got[0] += time.perf_counter() - w
            got[1] += time.process_time() - c
            got[2] += 1

    setattr(module, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--json", help="Also write the timings here.")
    a = ap.parse_args()
    import os

    spent: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="edgeffnet-stage-times-") as tmp:
        os.environ["EDGEFFNET_CACHE"] = str(Path(tmp) / "cache")  # empty: every stage runs
        import edgeffnet

        for module_name, name, label in STEPS:
            module = importlib.import_module(module_name)
            if hasattr(module, name):
                wrap(module, name, label, spent)
        w, c = time.perf_counter(), time.process_time()
        edgeffnet.build(a.spec, precision="int8", output=Path(tmp) / "bundle")
        total = [time.perf_counter() - w, time.process_time() - c, 1]
    print(f"{'step':45s} {'wall s':>8s} {'CPU s':>8s} {'calls':>5s}")
    for label in [s[2] for s in STEPS if s[2] in spent] + ["build"]:
        wall, cpu, calls = total if label == "build" else spent[label]
        print(f"{label:45s} {wall:8.1f} {cpu:8.1f} {calls:5d}")
    if a.json:
        Path(a.json).write_text(json.dumps({"spec": a.spec, "steps": spent, "build": total}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
