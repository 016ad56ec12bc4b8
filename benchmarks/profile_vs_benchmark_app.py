"""Does `bench --profile` split the time by role as OpenVINO's own `benchmark_app -pc` does, on the same IR?

Claim (issue 24): per role, the time of edgeffnet's profile (OpenVINO's counters read through the runtime
model, mapped onto the bundle's layer table) is within 10% of benchmark_app's counters on the same IR
mapped the same way, for every role holding at least --min-share of the time, and for the total.

Apples to apples, both sides:
- the same statistic. OpenVINO's CPU counters are running means since compile, in whole microseconds
  (edgeffnet.backends.openvino.runner.profile_nodes), so benchmark_app's report is the mean over all the
  inferences of its one synchronous request, the first (cold) one included; `-report_type
  average_counters` averages those over requests (one here). edgeffnet's profile is the mean over its
  profiled inferences, its warm-up left out; with --iterations 200 benchmark_app's first inference
  weighs 1/201 (B0 at 128 px: its squeeze-excitation nodes take 9.2 ms cold against 1.8 ms warm, +2%).
- the same mapping. benchmark_app's CSV names the runtime nodes but not the ONNX layers each fused, so
  its own execution graph (`-exec_graph_path`: layerType, originalLayersNames, runtimePrecision per node)
  supplies them and `edgeffnet.measure.profile.analyse` maps both. Mapping benchmark_app's rows by node
  name alone put every INT8 squeeze-excitation product in "overhead": OpenVINO fuses the product and the
  quantization of its output into one Subgraph named after the DequantizeLinear
  (`.../se/Mul_output_0_DequantizeLinear`, originalLayersNames `.../se/Mul,...`).
- the same input: edgeffnet's (a photo through the bundle's recipe) given to benchmark_app as `-i .npy`;
  benchmark_app's own fills the input with uniform noise in 0..255, other activations than a photo's.
- the same load: the two run back to back in rounds, who goes first alternating, and each role's verdict
  is the median over rounds of the per-round ratio. The ratio of the role's share of its tool's total is
  printed too: it is immune to the load changing between the two halves of a round.

    python benchmarks/profile_vs_benchmark_app.py                       # B0 at 128 px, fp32 and int8
    python benchmarks/profile_vs_benchmark_app.py --spec b0 --spec lite0   # at 224 px
    python benchmarks/profile_vs_benchmark_app.py --bundle build/b0-cpu-fp32 --rounds 5

Exit status 0 when every judged role of every bundle is within tolerance, 1 when not.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

import edgeffnet
from edgeffnet.measure import bench, profile

QUICK_INT8 = dict(calib_size=16, fidelity_views=8)


def exec_graph(path: Path) -> dict[str, dict]:
    """Per runtime node of benchmark_app's execution graph: its layerType, fused ONNX names and precision."""
    nodes = {}
    for layer in ET.parse(path).getroot().iter("layer"):
        data = layer.find("data")
        attrs = data.attrib if data is not None else {}
        nodes[layer.get("name", "")] = {
            "type": layer.get("type", ""),
            "original_names": [n for n in attrs.get("originalLayersNames", "").split(",") if n],
            "precision": attrs.get("runtimePrecision", ""),
        }
    return nodes


def benchmark_app_rows(
    xml: Path, device: str, hint: str | None, iterations: int, exe: str, x: np.ndarray
) -> list[dict]:
    """benchmark_app's average counters of `iterations` synchronous inferences of `x`, as node rows."""
    with tempfile.TemporaryDirectory(prefix="bapp-") as out:
        np.save(Path(out) / "input.npy", x)
        cmd = [
            exe,
            "-m",
            str(xml),
            "-d",
            device,
            "-hint",
            "latency",
            "-api",
            "sync",
            "-niter",
            str(iterations),
            "-ip",
            "f32",
            "-i",
            str(Path(out) / "input.npy"),
            "-pc",
            "-report_type",
            "average_counters",
            "-report_folder",
            out,
            "-exec_graph_path",
            str(Path(out) / "exec.xml"),
        ]
        if hint:
            cmd += ["-infer_precision", hint]
        subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
        text = (Path(out) / "benchmark_average_counters_report.csv").read_text()
        graph = exec_graph(Path(out) / "exec.xml")
    rows = []
    for r in csv.DictReader(text.splitlines(), delimiter=";"):
        name = r.get("layerName") or ""
        if r.get("execStatus", "") != "Status.EXECUTED" or not name:
            continue
        node = graph.get(name, {"type": r["layerType"], "original_names": [], "precision": ""})
        rows.append({"node": name, "time_ms": float(r["realTime (ms)"]), "exec_type": r["execType"]} | node)
    if not rows:
        raise SystemExit("benchmark_app's average counters report has no executed nodes")
    return rows


def compare(b, args, exe: str) -> bool:
    t = b.target
    if t.backend != "openvino":
        raise SystemExit(f"{b.path} is a {t.backend} bundle; benchmark_app measures OpenVINO IR")
    hint = t.options.get("inference_precision", {}).get(b.precision)
    table = b.layer_table()
    ours: list[dict] = []
    theirs: list[dict] = []
    print(
        f"\n{b.manifest.spec['spec']} {b.precision} on {t.device} (inference precision {hint}): "
        f"{args.iterations} profiled inferences per tool x {args.rounds} rounds"
    )
    x = bench.sample_input(b, 1)  # edgeffnet's input, given to benchmark_app too (its default: uniform 0..255)
    rec = None
    for i in range(args.rounds):
        # who goes first alternates (ABBA): a drift of the machine's speed within a round tilts the odd
        # rounds' ratios one way and the even rounds' the other, and the median over rounds sits between
        for tool in ("edgeffnet", "benchmark_app") if i % 2 == 0 else ("benchmark_app", "edgeffnet"):
            if tool == "edgeffnet":
                rec = edgeffnet.bench(b, iterations=20, seconds=0, warmup=0.5, save=False, profile=args.iterations)
                ours.append(dict(rec.profile["by_role"]))
            else:
                rows = benchmark_app_rows(b.path / "model.xml", t.device, hint, args.iterations, exe, x)
                app = profile.analyse(
                    table, [rows], b.precision, "openvino", [], statistic="mean", iterations=args.iterations
                )
                theirs.append(dict(app["by_role"]))
        assert rec is not None
        print(
            f"  round {i + 1}: edgeffnet {sum(ours[-1].values()):.3f} ms, benchmark_app {sum(theirs[-1].values()):.3f} ms"
            f" (mapped {rec.profile['mapped_fraction']:.1%} / {app['mapped_fraction']:.1%})"
        )
    roles = list(dict.fromkeys([*ours[0], *theirs[0]]))
    for r in ours + theirs:
        r["total"] = sum(r.values())
    ok = True
    print(
        f"  {'role':11s} {'edgeffnet ms':>12s} {'bench_app ms':>12s} {'ratio':>7s} {'share ratio':>11s} {'share':>6s}"
    )
    for role in sorted(roles, key=lambda k: -statistics.median(r.get(k, 0.0) for r in ours)) + ["total"]:
        a = statistics.median(r.get(role, 0.0) for r in ours)
        c = statistics.median(r.get(role, 0.0) for r in theirs)
        # each round's pair ran back to back under the same load: the ratio per round, then its median
        paired = [x.get(role, 0.0) / y[role] for x, y in zip(ours, theirs) if y.get(role)]
        shares = [(x.get(role, 0.0) / x["total"]) / (y[role] / y["total"]) for x, y in zip(ours, theirs) if y.get(role)]
        ratio = statistics.median(paired) if paired else float("inf")
        share = a / statistics.median(r["total"] for r in ours)
        judged = role == "total" or share >= args.min_share
        within = abs(ratio - 1) <= args.tolerance
        ok &= within or not judged
        verdict = ("PASS" if within else "FAIL") if judged else f"(under {args.min_share:.0%}: not judged)"
        print(
            f"  {role:11s} {a:12.3f} {c:12.3f} {ratio:7.3f} {statistics.median(shares) if shares else 0:11.3f}"
            f" {share:6.1%}  {verdict}"
        )
    assert rec is not None
    print(f"  device {rec.device['name']}, openvino {rec.tools.get('openvino')}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", action="append", help="Model spec to build (repeatable; default b0,res=128).")
    ap.add_argument("--precision", default="fp32,int8", help="Precisions to build each spec at.")
    ap.add_argument("--bundle", action="append", help="Use this bundle instead of building (repeatable).")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=200, help="Profiled inferences per round, each tool.")
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--min-share", type=float, default=0.05, help="Roles below this share are listed, not judged.")
    args = ap.parse_args()
    if args.rounds < 1 or args.iterations < 1:
        raise SystemExit("--rounds and --iterations must be at least 1")

    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        raise SystemExit("benchmark_app not found (it ships with the openvino wheel as a console script)")
    if args.bundle:
        bundles = [edgeffnet.Bundle.open(p) for p in args.bundle]
    else:
        out = Path(tempfile.mkdtemp(prefix="profile-vs-app-"))
        bundles = [
            edgeffnet.build(
                spec,
                precision=p,
                views=2,
                output=out / f"{i}-{p}",
                **(QUICK_INT8 if p == "int8" else {}),
            )
            for i, spec in enumerate(args.spec or ["b0,res=128"])
            for p in args.precision.split(",")
        ]
    results = [compare(b, args, exe) for b in bundles]
    ok = all(results)
    print(f"\nverdict: {'every judged role within' if ok else 'some role OUTSIDE'} {args.tolerance:.0%}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
