"""The latency model's accuracy on networks it never saw (issue 25's prediction goal).

Per precision: collect the designed set (`edgeffnet latency fit`'s, resumable, into this device's data),
fit the model on it, then build and time a second Latin-hypercube set of networks that are not in the
design (another seed: spread over phi, the depth/width/resolution split and resolution, both families),
each timed in turns with the reference network. The error of a test network is its predicted ratio to
the reference against its measured one (the median over rounds of the two timed in turns), so the
machine's drift, between collection and test or within a test, is not counted as model error.

Reports per precision: share of test networks within +-10%, RMSE %, max error, and the model's own
held-out (leave-one-out) figures. Goal: >= 90% within +-10% at fp32 and int8, on >= 30 networks.

    python benchmarks/latency_model_accuracy.py                          # fp32 and int8, 30 test networks
    python benchmarks/latency_model_accuracy.py --precision fp32 --test 20
    python benchmarks/latency_model_accuracy.py --no-collect             # fit on the design data already there
    python benchmarks/latency_model_accuracy.py --no-collect --report-only   # score what was measured so far

Test measurements are kept in OUT/test-PRECISION.jsonl (a rerun measures only what is missing); the
design measurements go to the device's data under the cache, as `edgeffnet latency fit` keeps them.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from edgeffnet.core.errors import UserError
from edgeffnet.latency import device, store
from edgeffnet.latency.design import DEFAULT_NETWORKS, SEED, design
from edgeffnet.latency.model import fit
from edgeffnet.search import latency_collect as collect
from edgeffnet.search.grid import network_key
from edgeffnet.specs.scaling import parse_spec


def test_specs(n: int, fitted: list[str]) -> list[str]:
    seen = {network_key(parse_spec(s)) for s in fitted}
    out = [s for s in design(3 * n, seed=SEED + 1000) if network_key(parse_spec(s)) not in seen]
    return out[:n]


def measure_tests(c: collect.Collection, specs: list[str], path: Path) -> float:
    """Each test network and the reference after it, into `path` (resumable); the seconds it took."""
    done = {r["spec"] for r in store.read(path)[0]}
    work = path.parent / "bundles"
    started = time.perf_counter()
    reference = collect.harness.build_bundle(c.reference, c.target, c.precision, work / "reference")
    for n, spec in enumerate(specs, 1):
        if spec in done:
            continue
        try:
            row = collect.measure_one(spec, c, work, reference)  # Ctrl-C: what was stored stays
        except UserError as e:
            print(f"{spec}: failed: {e}", flush=True)
            continue
        store.append(path, [row | {"source": "benchmark"}])
        print(
            f"test {n}/{len(specs)} {spec}: p50 {row['p50_ms']:.3f} ms, reference {row['reference']['p50_ms']:.3f} ms",
            flush=True,
        )
    return time.perf_counter() - started


def evaluate(precision: str, args, out: Path) -> dict:
    c = collect.Collection(target=args.target, precision=precision, networks=args.design)
    here = device.identity(args.target)
    collected = None
    if not args.no_collect:
        r = collect.run(c, echo=lambda m: print(m, flush=True))
        if r["interrupted"]:
            raise SystemExit(f"interrupted after {r['measured']} designed networks; run again to continue")
        collected = {k: r[k] for k in ("measured", "skipped", "seconds")} | {"failed": len(r["failed"])}
    fitted = c.specs()
    tests = test_specs(args.test, fitted)
    test_path = out / f"test-{precision}.jsonl"
    test_seconds = 0.0 if args.report_only else measure_tests(c, tests, test_path)
    design_nets = {network_key(parse_spec(s)) for s in fitted}
    rows = [
        r
        for r in store.read(device.data_path(here, precision))[0]  # the design, timed as collect times now
        if r.get("source") == "design"
        and r["network"] in design_nets
        and r.get("settings", {}).get("timing") == collect.TIMING["timing"]
    ]
    model = fit(rows, precision, here)
    model.save(out / f"model-{precision}.json")
    ref_pred = model.predict(c.reference)
    errors = []
    for r in store.read(test_path)[0]:
        if r["spec"] not in tests or r.get("settings", {}).get("timing") != collect.TIMING["timing"]:
            continue
        predicted_ratio = model.predict(r["spec"]) / ref_pred
        measured_ratio = store.ratio_to_reference(r)
        errors.append(
            {
                "spec": r["spec"],
                "predicted_ratio": predicted_ratio,
                "measured_ratio": measured_ratio,
                "error": predicted_ratio / measured_ratio - 1,
            }
        )
    e = np.array([x["error"] for x in errors])
    return {
        "precision": precision,
        "design_networks": model.data["networks"],
        "test_networks": len(e),
        "within_10pct": float(np.mean(np.abs(e) <= 0.10)) if len(e) else math.nan,
        "rmse_pct": float(np.sqrt(np.mean(e**2)) * 100) if len(e) else math.nan,
        "max_abs_pct": float(np.abs(e).max() * 100) if len(e) else math.nan,
        "model_held_out": model.errors["held_out"],
        "model_fit": model.errors["fit"],
        "collection": collected,
        "test_seconds": round(test_seconds, 1),
        "tests": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="cpu")
    ap.add_argument(
        "--precision",
        action="append",
        choices=["fp32", "fp16", "int8"],
        help="Repeat for several (default fp32 and int8).",
    )
    ap.add_argument("--design", type=int, default=DEFAULT_NETWORKS, help="Networks in the designed (fit) set.")
    ap.add_argument("--test", type=int, default=30, help="Networks never used in fitting.")
    ap.add_argument("--no-collect", action="store_true", help="Fit on the design rows already in the device's data.")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="Measure nothing: fit and score the test networks measured so far (a run cut short).",
    )
    ap.add_argument("--out", type=Path, default=Path("latency-accuracy"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for precision in args.precision or ["fp32", "int8"]:
        r = evaluate(precision, args, args.out)
        results.append(r)
        print(
            f"{precision}: {r['test_networks']} test networks never used in fitting (fitted on "
            f"{r['design_networks']}): {r['within_10pct']:.0%} within +-10%, RMSE {r['rmse_pct']:.1f}%, max "
            f"{r['max_abs_pct']:.1f}%; model held-out (leave-one-out) RMSE {r['model_held_out']['rmse_pct']:.1f}%, "
            f"{r['model_held_out']['within_10pct']:.0%} within +-10%",
            flush=True,
        )
    (args.out / "accuracy.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out / 'accuracy.json'}")


if __name__ == "__main__":
    main()
