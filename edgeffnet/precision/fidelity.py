"""The fidelity report: how closely a reduced-precision artifact follows FP32 on verification photos.

Views come from the verification photos (calibration/photos.toml), which calibration never sees; the FP32
reference is the simplified ONNX graph in ONNX Runtime (itself verified within 1e-4 of PyTorch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeffnet.backends import onnxruntime as ort_backend
from edgeffnet.core.errors import FidelityTooLow
from edgeffnet.core.verify import compare
from edgeffnet.network.photos import to_input, verification_views

# The unlabelled gate judges two things, because each alone misleads:
# - top-1 agreement on the views where FP32 is confident (its top-1 probability >= CONFIDENT_PROB). On a
#   view whose FP32 top two are near-tied (a microscopy crop, a texture, a scene with no ImageNet class)
#   any rounding noise flips the label, so agreement over all views measures the photos' ambiguity as
#   much as the quantizer. At 0.3 the top class holds at least 30% of the mass, which on a 1000-class
#   head is a clear preference, and about two thirds of the default verification views qualify (69 of
#   the first 100 for pretrained Lite0), enough to judge at 98%.
# - mean cosine of the logits with FP32 (>= MIN_COSINE): the whole output, not just its argmax, so an
#   artifact that damages every view a little fails even where labels survive. Measured on pretrained
#   Lite0 (100 views): OpenVINO IRs whose int16 sums overflow on a CPU without VNNI 0.80-0.92, sound INT8
#   0.988 (7-bit weights) to 0.998 (ONNX Runtime); 0.98 sits between them.
# Too few confident views to judge (fewer than MIN_CONFIDENT_VIEWS): the gate falls back to agreement
# over all views, the stricter statistic, and says so.
CONFIDENT_PROB = 0.3
MIN_COSINE = 0.98
MIN_CONFIDENT_VIEWS = 30


def views(count: int, preprocess) -> np.ndarray:
    return to_input(verification_views(count, preprocess), preprocess)


def fp32_reference(graph: Path, x: np.ndarray) -> np.ndarray:
    return ort_backend.run_all(graph, x)


def confident(ref: np.ndarray, threshold: float = CONFIDENT_PROB) -> np.ndarray:
    """Mask of the views whose FP32 top-1 probability (softmax of the logits) is at least `threshold`."""
    z = ref - ref.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p.max(axis=1) / p.sum(axis=1)) >= threshold


def report(ref: np.ndarray, got: np.ndarray, artifact: str) -> dict:
    p = compare(ref, got)
    sure = confident(ref)
    same = ref.argmax(axis=1) == got.argmax(axis=1)
    return {
        "artifact": artifact,
        "views": p.views,
        "top1_agreement": p.top1_agreement,
        "top5_overlap": p.top5_overlap,
        "cosine_mean": p.cosine_mean,
        "cosine_min": p.cosine_min,
        "max_abs": p.max_abs,
        "confident_prob": CONFIDENT_PROB,
        "confident_views": int(sure.sum()),
        "confident_top1_agreement": float(same[sure].mean()) if sure.any() else None,
    }


def judged_agreement(row: dict) -> tuple[float, str]:
    """The agreement the gate judges for one row, and on which views."""
    n = row.get("confident_views", 0)
    if row.get("confident_top1_agreement") is None or n < MIN_CONFIDENT_VIEWS:
        return row["top1_agreement"], f"all {row['views']} views (only {n} confident)"
    return row["confident_top1_agreement"], f"{n} of {row['views']} views where FP32 top-1 >= {row['confident_prob']:g}"


def passes(row: dict, min_agreement: float, min_cosine: float = MIN_COSINE) -> bool:
    return judged_agreement(row)[0] >= min_agreement and row["cosine_mean"] >= min_cosine


def gate(
    rows: list[dict], trained: bool, min_agreement: float, allow_drop: bool, min_cosine: float = MIN_COSINE
) -> dict:
    """Trained weights must keep, on every row, top-1 agreement >= min_agreement on the views where FP32 is
    confident and mean cosine >= min_cosine, unless the user allows the drop.

    Random-init builds (latency studies) report the numbers and claim nothing: their predictions mean
    nothing, so neither does agreement on them.
    """
    if not trained:
        return {"gated": False, "reason": "random-init weights: numbers reported, no agreement claim"}
    worst = min(rows, key=lambda r: (passes(r, min_agreement, min_cosine), judged_agreement(r)[0], r["cosine_mean"]))
    agreement, on = judged_agreement(worst)
    verdict = {
        "gated": True,
        "statistic": "top-1 agreement on confident views and mean cosine",
        "min_agreement": min_agreement,
        "min_cosine": min_cosine,
        "confident_prob": CONFIDENT_PROB,
        "worst": worst["artifact"],
        "judged_agreement": agreement,
        "judged_on": on,
        "top1_agreement": worst["top1_agreement"],
        "confident_top1_agreement": worst.get("confident_top1_agreement"),
        "cosine_mean": worst["cosine_mean"],
        "passed": all(passes(r, min_agreement, min_cosine) for r in rows),
    }
    if not verdict["passed"] and not allow_drop:
        raise FidelityTooLow(
            f"INT8 of {worst['artifact']} misses the gate: top-1 agreement with FP32 {agreement:.1%} on {on} "
            f"(needs {min_agreement * 100:g}%; {worst['top1_agreement']:.1%} over all {worst['views']} views), "
            f"mean cosine {worst['cosine_mean']:.4f} (needs {min_cosine:g}); pass --allow-drop to accept it "
            f"or --min-agreement to change it"
        )
    return verdict


def table(rows: list[dict]) -> list[str]:
    lines = [
        f"{'artifact':34s} {'views':>5s} {'top-1':>7s} {'confident':>15s} {'top-5':>7s} {'cos mean':>9s} {'max|d|':>8s}"
    ]
    for r in rows:
        sure = (
            f"{r['confident_top1_agreement']:6.1%} of {r['confident_views']:3d}"
            if r.get("confident_top1_agreement") is not None
            else "-"
        )
        lines.append(
            f"{r['artifact'][:34]:34s} {r['views']:5d} {r['top1_agreement']:7.1%} {sure:>15s} "
            f"{r['top5_overlap']:7.1%} {r['cosine_mean']:9.5f} {r['max_abs']:8.3f}"
        )
    return lines
