"""Does `bench --profile` split the time by role as OpenVINO's own `benchmark_app -pc` does, on the same IR?

Claim (issue 24): the per-role totals of edgeffnet's profile (OpenVINO's counters read through the runtime
model, mapped onto the bundle's layer table) agree within 10% with the same mapping applied to
benchmark_app's detailed counters (`-pc -report_type detailed_counters`: one row per executed runtime
node) for every role holding at least --min-share of the time, and for the total. The two run in
alternating rounds, so load from other processes hits both alike; per role the verdict is the median over
the rounds of the per-round ratio (each pair ran back to back). The ratio of each role's share of its
tool's total is printed too: it is immune to the load changing between the two halves of a round.

benchmark_app's CSV gives node names, types and kernels but not the ONNX layers a node fused, so its rows
map by name alone (layer_table.layer_of): a difference in the split would show a node our mapping puts
elsewhere.

    python benchmarks/profile_vs_benchmark_app.py                  # B0, 224 px, fp32, built through the cache
    python benchmarks/profile_vs_benchmark_app.py --bundle build/b0-cpu-fp32 --rounds 5

Exit status 0 when every role is within tolerance, 1 when not.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import edgeffnet
from edgeffnet.measure import profile


def benchmark_app_rows(xml: Path, device: str, hint: str | None, iterations: int, exe: str) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bapp-") as out:
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
            "-pc",
            "-report_type",
            "detailed_counters",
            "-report_folder",
            out,
        ]
        if hint:
            cmd += ["-infer_precision", hint]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        text = (Path(out) / "benchmark_detailed_counters_report.csv").read_text()
    rows = []
    for r in csv.DictReader(text.splitlines(), delimiter=";"):
        if r.get("execStatus", "").endswith("EXECUTED") and r.get("layerName"):
            rows.append(
                {
                    "node": r["layerName"],
                    "type": r["layerType"],
                    "time_ms": float(r["realTime (ms)"]),
                    "exec_type": r["execType"],
                    "precision": "",
                    "original_names": [r["layerName"]],
                }
            )
    if not rows:
        raise SystemExit("benchmark_app's detailed counters report has no executed nodes")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="b0")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--bundle", help="Use this bundle instead of building SPEC.")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=100, help="Profiled inferences per round, each tool.")
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--min-share", type=float, default=0.05, help="Roles below this share are listed, not judged.")
    args = ap.parse_args()

    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        raise SystemExit("benchmark_app not found (it ships with the openvino wheel as a console script)")
    b = (
        edgeffnet.Bundle.open(args.bundle)
        if args.bundle
        else edgeffnet.build(
            args.spec,
            precision=args.precision,
            views=2,
            output=Path(tempfile.mkdtemp(prefix="profile-vs-app-")) / "bundle",
        )
    )
    t = b.target
    if t.backend != "openvino":
        raise SystemExit(f"{b.path} is a {t.backend} bundle; benchmark_app measures OpenVINO IR")
    hint = t.options.get("inference_precision", {}).get(b.precision)
    table = b.layer_table()
    ours: list[dict] = []
    theirs: list[dict] = []
    print(
        f"{b.manifest.spec['spec']} {b.precision} on {t.device} (inference precision {hint}), "
        f"{args.iterations} profiled inferences x {args.rounds} rounds each"
    )
    for i in range(args.rounds):
        rec = edgeffnet.bench(b, iterations=20, seconds=0, warmup=0.5, save=False, profile=args.iterations)
        ours.append(rec.profile["by_role"])
        app = profile.analyse(
            table,
            [benchmark_app_rows(b.path / "model.xml", t.device, hint, args.iterations, exe)],
            b.precision,
            "openvino",
            [],
        )
        theirs.append(app["by_role"])
        print(
            f"  round {i + 1}: edgeffnet {sum(ours[-1].values()):.3f} ms, benchmark_app {sum(theirs[-1].values()):.3f} ms"
        )
    roles = list(dict.fromkeys([*ours[0], *theirs[0]]))
    for r in ours + theirs:
        r["total"] = sum(v for k, v in r.items() if k != "total")
    ok = True
    print(
        f"{'role':12s} {'edgeffnet ms':>13s} {'benchmark_app':>14s} {'paired ratio':>13s} {'share ratio':>12s}  share"
    )
    for role in roles + ["total"]:
        a = statistics.median(r.get(role, 0.0) for r in ours)
        c = statistics.median(r.get(role, 0.0) for r in theirs)
        # each round's pair ran back to back under the same load: the ratio per round, then its median
        paired = statistics.median(x.get(role, 0.0) / y[role] for x, y in zip(ours, theirs) if y.get(role))
        shares = statistics.median(
            (x.get(role, 0.0) / x["total"]) / (y[role] / y["total"]) for x, y in zip(ours, theirs) if y.get(role)
        )
        share = a / statistics.median(r["total"] for r in ours)
        judged = role == "total" or share >= args.min_share
        within = abs(paired - 1) <= args.tolerance
        ok &= within or not judged
        print(
            f"{role:12s} {a:13.3f} {c:14.3f} {paired:13.3f} {shares:12.3f}  {share:5.1%}"
            + ("" if not judged else "  ok" if within else "  OUTSIDE")
        )
    print(
        f"verdict: {'every judged role within' if ok else 'some role OUTSIDE'} {args.tolerance:.0%}; "
        f"device {rec.device['name']}, openvino {rec.tools.get('openvino')}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
