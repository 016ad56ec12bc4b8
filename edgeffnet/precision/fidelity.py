"""The fidelity report: how closely a reduced-precision artifact follows FP32 on verification photos.

Views come from the verification photos (calibration/photos.toml), which calibration never sees; the FP32
reference is the simplified ONNX graph in ONNX Runtime (itself verified within 1e-4 of PyTorch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backends import onnxruntime as ort_backend
from ..errors import UserError
from ..photos import to_input, verification_views
from ..verify import compare



class FidelityTooLow(UserError):
    exit_code = 1


def views(count: int, preprocess) -> np.ndarray:
    return to_input(verification_views(count, preprocess), preprocess)


def fp32_reference(graph: Path, x: np.ndarray) -> np.ndarray:
    return ort_backend.run_all(graph, x)


def report(ref: np.ndarray, got: np.ndarray, artifact: str) -> dict:
    p = compare(ref, got)
    return {"artifact": artifact, "views": p.views, "top1_agreement": p.top1_agreement, "top5_overlap": p.top5_overlap,
            "cosine_mean": p.cosine_mean, "cosine_min": p.cosine_min, "max_abs": p.max_abs}


def gate(rows: list[dict], trained: bool, min_agreement: float, allow_drop: bool) -> dict:
    """Trained weights must keep top-1 agreement >= min_agreement unless the user allows the drop.

    Random-init builds (latency studies) report the numbers and claim nothing: their predictions mean
    nothing, so neither does agreement on them.
    """
    worst = min(rows, key=lambda r: r["top1_agreement"])
    if not trained:
        return {"gated": False, "reason": "random-init weights: numbers reported, no agreement claim"}
    verdict = {"gated": True, "min_agreement": min_agreement, "worst": worst["artifact"],
               "top1_agreement": worst["top1_agreement"], "passed": worst["top1_agreement"] >= min_agreement}
    if not verdict["passed"] and not allow_drop:
        raise FidelityTooLow(
            f"INT8 top-1 agreement with FP32 is {worst['top1_agreement']:.1%} on {worst['views']} verification views "
            f"({worst['artifact']}; top-5 overlap {worst['top5_overlap']:.1%}, cosine {worst['cosine_mean']:.4f}), "
            f"below the {min_agreement * 100:g}% threshold; pass --allow-drop to accept it or --min-agreement to change it")
    return verdict


def table(rows: list[dict]) -> list[str]:
    lines = [f"{'artifact':34s} {'views':>5s} {'top-1':>7s} {'top-5':>7s} {'cos mean':>9s} {'max|d|':>8s}"]
    for r in rows:
        lines.append(f"{r['artifact'][:34]:34s} {r['views']:5d} {r['top1_agreement']:7.1%} {r['top5_overlap']:7.1%} "
                     f"{r['cosine_mean']:9.5f} {r['max_abs']:8.3f}")
    return lines
