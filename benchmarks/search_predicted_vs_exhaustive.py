"""The predicted search against the exhaustive one on the cpu target (issue 25's search goal).

Each round runs `edgeffnet search` twice, exhaustive (--measure 0) and predicted (--measure K, with the
device's latency model), alternating which goes first from round to round so the machine's drift falls
on both; each run gets its own empty stage cache (nothing built by one is reused by the other) and the
same model file. Then the two chosen networks are timed in alternating rounds against each other.

Reports per round: networks built, wall time, the chosen split of each; overall: the predicted search's
share of the exhaustive one's networks and wall time, and whether the two choices are the same network
or within the measured noise of each other (the median ratio of their paired timings, and its spread).
Goal: at most a quarter of the networks, at most a fifth of the wall time, the same split or one within
the noise.

    python benchmarks/search_predicted_vs_exhaustive.py                       # phi=1, step 0.05, 2 rounds
    python benchmarks/search_predicted_vs_exhaustive.py --phi -3 --step 0.1 --measure 3 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def search(args, out: Path, measure: int, model: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "edgeffnet.cli",
        "search",
        args.base,
        "--target",
        args.target,
        "--precision",
        args.precision,
        "--phi",
        str(args.phi),
        "--step",
        str(args.step),
        "--measure",
        str(measure),
        "--latency-model",
        model,
        "--confirm-rounds",
        str(args.confirm_rounds),
        "-s",
        str(args.seconds),
        "-o",
        str(out),
        "--json",
    ]
    env = os.environ | {"EDGEFFNET_CACHE": str(out.parent / f"cache-{out.name}")}  # cold: no shared stages
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"search failed ({' '.join(cmd)}): {done.stderr.strip().splitlines()[-1:]}")
    s = json.loads((out / "search.json").read_text())
    networks = s["prediction"]["measured_networks"] if s.get("prediction") else s["grid"]["networks"]
    chosen = s["chosen"]
    return {
        "measure": measure,
        "wall_s": round(wall, 1),
        "networks_built": networks,
        "chosen_spec": s["chosen_spec"],
        "chosen_bundle": chosen["bundle"],
        "prediction_error": s.get("prediction_error"),
        "out": str(out),
    }


def compare(a: str, b: str, rounds: int, seconds: float) -> dict:
    """The two chosen bundles timed in turns (one call of each per round, as latency collection times a
    network against its reference), `rounds` times; per time the median of the per-round ratios b/a."""
    from edgeffnet.search import harness, latency_collect

    settings = harness.BenchSettings(iterations=100, seconds=seconds, warmup=0.5)
    ratios = []
    for i in range(rounds):
        first, second = (b, a) if i % 2 == 0 else (a, b)
        ratio = latency_collect.interleaved(Path(first), Path(second), settings)[2]
        ratios.append(ratio if first == b else 1 / ratio)
    return {
        "rounds": rounds,
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "spread": [min(ratios), max(ratios)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="b0")
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--phi", type=float, default=1.0)
    ap.add_argument("--step", type=float, default=0.05)
    ap.add_argument("--measure", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--confirm-rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--latency-model", help="Default: this device's, under the cache.")
    ap.add_argument("--out", type=Path, default=Path("search-vs-predicted"))
    args = ap.parse_args()
    from edgeffnet.latency import device

    model = args.latency_model or str(device.model_path(device.identity(args.target), args.precision))
    if not Path(model).is_file():
        sys.exit(f"no latency model at {model}: run edgeffnet latency fit --target {args.target} first")
    runs = []
    for r in range(args.rounds):
        order = [0, args.measure] if r % 2 == 0 else [args.measure, 0]
        for k in order:
            res = search(args, args.out / f"round{r + 1}-{'exhaustive' if k == 0 else f'measure{k}'}", k, model)
            res["round"] = r + 1
            runs.append(res)
            print(json.dumps({k2: v for k2, v in res.items() if k2 != "chosen_bundle"}), flush=True)
    ex = [x for x in runs if x["measure"] == 0]
    pr = [x for x in runs if x["measure"] != 0]
    summary = {
        "settings": vars(args) | {"out": str(args.out)},
        "runs": runs,
        "networks_share": statistics.median(p["networks_built"] / e["networks_built"] for p, e in zip(pr, ex)),
        "wall_share": statistics.median(p["wall_s"] / e["wall_s"] for p, e in zip(pr, ex)),
        "same_choice": [p["chosen_spec"] == e["chosen_spec"] for p, e in zip(pr, ex)],
    }
    if not all(summary["same_choice"]):
        e, p = ex[0], pr[0]
        summary["chosen_compared"] = compare(
            e["chosen_bundle"], p["chosen_bundle"], 2 * args.confirm_rounds + 2, args.seconds
        ) | {"exhaustive": e["chosen_spec"], "predicted": p["chosen_spec"]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"predicted search: {summary['networks_share']:.0%} of the exhaustive search's networks, "
        f"{summary['wall_share']:.0%} of its wall time; same choice in {sum(summary['same_choice'])} of "
        f"{len(pr)} rounds"
        + (
            f"; chosen networks' median ratio {summary['chosen_compared']['median_ratio']:.3f} "
            f"(rounds {summary['chosen_compared']['spread'][0]:.3f}..."
            f"{summary['chosen_compared']['spread'][1]:.3f})"
            if "chosen_compared" in summary
            else ""
        )
    )


if __name__ == "__main__":
    main()
