"""Where INT8 top-1 agreement of pretrained Lite0 is lost, and how high it can go (issue 4).

Top-1 agreement on photo views is decided by near-ties: a view flips when the quantization noise on
(logit of FP32's top class - logit of its runner-up) exceeds FP32's own margin between them. This
script splits the noise of the bundle's Q/DQ graph into its weight part and its activation part (each
quantized alone, simulated exactly in ONNX Runtime with no fused kernels), measures the spread sigma of
that top-2 difference, and turns sigma and the FP32 margins of the verification views into the expected
number of flips (Gaussian noise model), next to the agreement actually observed.

    python benchmarks/int8_fidelity_floor.py            # lite0, pretrained, 200 verification views

Both encodings are measured: the Q/DQ graph as TensorRT reads it (int8 activations) and as OpenVINO
reads it (non-negative activations as uint8). If the activations alone, with the layers the sensitivity
pass keeps in float, already expect more flips than the target allows in either encoding, no choice of weight rounding or range method reaches the target: only more
layers in float (slower) or quantization-aware training would.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from scipy.special import ndtr

import edgeffnet
from edgeffnet.backends import onnxruntime as ort_backend
from edgeffnet.backends.openvino.encoding import unsigned_where_nonnegative
from edgeffnet.core.preprocess import Preprocess
from edgeffnet.core.verify import compare
from edgeffnet.pipeline.options import FIDELITY_VIEWS_TRAINED, BuildOptions
from edgeffnet.precision import calibration, fidelity, int8, qdq, ranges


def simulate(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The graph's own arithmetic: with fusions on, ONNX Runtime swaps a DQ->Conv with float weights for
    its own per-tensor int8 weights, which is not what the graph says."""
    return ort_backend.run_all(model, x, literal=True)


def noise_row(ref: np.ndarray, got: np.ndarray) -> dict:
    rows = np.arange(len(ref))
    order = ref.argsort(axis=1)
    first, second = order[:, -1], order[:, -2]
    margin = ref[rows, first] - ref[rows, second]
    d = got - ref
    sigma = float((d[rows, first] - d[rows, second]).std())
    p = compare(ref, got)
    return {
        "one_minus_cosine": 1 - p.cosine_mean,
        "sigma": sigma,
        "expected_flips": float(ndtr(-margin / sigma).sum()),
        "observed_flips": int((got.argmax(1) != first).sum()),
        "top1": p.top1_agreement,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="lite0")
    ap.add_argument("--weights", default="pretrained")
    ap.add_argument("--views", type=int, default=FIDELITY_VIEWS_TRAINED)
    ap.add_argument("--target-agreement", type=float, default=0.99)
    ap.add_argument("--out", default=None, help="Keep the bundle here (default: a temporary directory).")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="int8-floor-")) / f"{args.spec}-int8"
    bundle = edgeffnet.build(args.spec, weights=args.weights, precision="int8", output=out, allow_drop=True)
    precision = bundle.manifest.stages["precision"]
    recipe = Preprocess.from_dict(bundle.manifest.preprocess)
    model = qdq.name_nodes(onnx.load(str(bundle.path / "model.sim.onnx")))
    cal = calibration.load(None, BuildOptions().calib_size, recipe)
    stats, _ = int8.statistics(model, cal.data, cal.sha256)
    thresholds = ranges.thresholds(stats, precision["method"])
    x = fidelity.views(args.views, recipe)
    ref = simulate(model, x)
    allowed = (1 - args.target_agreement) * len(x)
    kept = frozenset(k["node"] for k in precision["kept_float"])

    print(
        f"{args.spec} ({args.weights}), {precision['method']} ranges, {len(x)} verification views; "
        f"{args.target_agreement:.0%} agreement allows {allowed:.0f} flips"
    )
    print(
        f"{'layers in float':22s} {'encoding':9s} {'quantized':13s} {'1-cos':>9s} {'sigma':>6s} {'expected':>8s} "
        f"{'observed':>8s}"
    )
    floor = None
    for label, exclude, encoding in (
        ("none", frozenset(), "int8"),
        (f"the bundle's {len(kept)}", kept, "int8"),
        (f"the bundle's {len(kept)}", kept, "uint8"),
    ):
        p = qdq.plan(model, exclude)
        for part, plan in (
            ("weights+acts", p),
            ("weights only", qdq.Plan(p.nodes, (), ())),
            ("acts only", qdq.Plan((), p.nodes + p.others, p.activations)),
        ):
            graph = qdq.quantize(model, plan, thresholds, stats["means"])
            if encoding == "uint8":  # OpenVINO's encoding: non-negative activations at twice the resolution
                graph = unsigned_where_nonnegative(graph)[0]
            r = noise_row(ref, simulate(graph, x))
            print(
                f"{label:22s} {encoding:9s} {part:13s} {r['one_minus_cosine']:9.2e} {r['sigma']:6.3f} "
                f"{r['expected_flips']:8.2f} {r['observed_flips']:8d}"
            )
            if part == "acts only" and (floor is None or r["expected_flips"] < floor["expected_flips"]):
                floor = r
    print(f"kept in float by the bundle: {sorted(kept) or 'none'}")
    reachable = floor["expected_flips"] <= allowed
    print(
        f"at best, activation quantization alone expects {floor['expected_flips']:.2f} flips "
        f"({1 - floor['expected_flips'] / len(x):.1%} agreement): the target is "
        f"{'within reach of better weight rounding' if reachable else 'out of reach of post-training weight changes'}"
    )
    return 0 if reachable else 1


if __name__ == "__main__":
    sys.exit(main())
