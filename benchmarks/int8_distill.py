"""What self-distillation of the Q/DQ graph (precision/distill.py) buys, and what it costs (issue 11).

Builds each spec at INT8 for the CPU target twice, with the precision stage's self-distillation and
without it (each in its own cache, so neither reuses the other's precision stage), and prints, on the
verification views: top-1 agreement with FP32 on all views and on the confident ones, and mean cosine,
for the Q/DQ graph in ONNX Runtime (as written) and for the OpenVINO artifact; plus the held-out scores
the build chose by, and the precision stage's time.

    python benchmarks/int8_distill.py                       # lite0 and lite1, pretrained
    python benchmarks/int8_distill.py --specs lite0 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import edgeffnet


def build(spec: str, weights: str, work: Path, tuned: bool) -> dict:
    name = "tuned" if tuned else "untuned"
    os.environ["EDGEFFNET_CACHE"] = str(work / f"cache-{name}")
    bundle = edgeffnet.build(
        spec, weights=weights, precision="int8", output=work / f"{spec}-{name}", allow_drop=True, distill=tuned
    )
    stages = bundle.manifest.stages
    return {
        "variant": name,
        "precision_seconds": stages["precision"]["seconds"],
        "self_distillation": stages["precision"]["self_distillation"],
        "rows": [stages["precision"]["fidelity"], stages["compile"]["fidelity"]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", default="lite0,lite1")
    ap.add_argument("--weights", default="pretrained")
    ap.add_argument("--json", default=None, help="Also write the results here.")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="int8-distill-"))
    results = []
    for spec in args.specs.split(","):
        for tuned in (False, True):
            r = {"spec": spec, **build(spec, args.weights, work, tuned)}
            results.append(r)
            d = r["self_distillation"]
            held = (
                f"held-out cosine {d['untuned']['cosine_mean']:.5f} -> {d['tuned']['cosine_mean']:.5f}, kept {d['kept']}"
                if "tuned" in d
                else d["reason"]
            )
            print(f"{spec} {r['variant']}: precision stage {r['precision_seconds']:.0f}s; {held}")
            for row in r["rows"]:
                print(
                    f"  {row['artifact'][:28]:28s} top-1 {row['top1_agreement']:6.1%}  confident "
                    f"{row['confident_top1_agreement']:6.1%} of {row['confident_views']}  cosine {row['cosine_mean']:.5f}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
