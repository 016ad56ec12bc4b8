"""INT8 for every target: calibrate, choose the range method, keep sensitive layers in float, write Q/DQ.

The calibration statistics are cached by (graph hash, data hash); thresholds for each method derive from
them, so a rebuild never recalibrates and trying all three methods costs one calibration.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgeffnet.backends import onnxruntime as ort_backend
from edgeffnet.core.files import cache_root, digest_key
from edgeffnet.core.verify import compare
from edgeffnet.precision import qdq, ranges

METHODS = ranges.METHODS
VERSION = "qdq-6"  # part of the stage cache key: bump when the pass changes what it writes
RANK_VIEWS = 24  # views for ranking single-layer sensitivity (one network run per quantized layer)
MAX_FLOAT_LAYERS = 4
TARGET_COSINE = 0.998  # measured on pretrained Lite0: below it, top-1 agreement on photos falls under 99%


@dataclass
class Int8Result:
    model: onnx.ModelProto
    method: str
    method_scores: dict
    plan: qdq.Plan
    kept_float: list = field(default_factory=list)  # [{"node":..., "cosine_gain":...}]
    ranking: list = field(default_factory=list)  # [(node, cosine gain alone in float)], most damaging first
    tuning: dict = field(default_factory=dict)


def graph_digest(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def statistics(model: onnx.ModelProto, data: np.ndarray, data_sha: str, use_cache: bool = True) -> tuple[dict, bool]:
    """Calibration statistics for every quantizable activation, from the cache when it has them.

    Stored as plain arrays (.npz read without pickle): a file in the cache is data, and loading it must
    never run code, whoever put it there."""
    tensors = qdq.candidates(model)
    path = (
        cache_root()
        / "calibration"
        / f"{digest_key(graph_digest(model), data_sha, tensors, 'hist-v2', ranges.BINS)}.npz"
    )
    if use_cache and path.is_file():
        stats = _read_statistics(path, tensors)
        if stats is not None:
            return stats, True
    stats = ranges.collect(model, tensors, data)
    if use_cache:
        _write_statistics(path, stats)
    return stats, False


def _write_statistics(path: Path, stats: dict) -> None:
    arrays = {"tensors": np.array(stats["tensors"], dtype=str), "absmax": stats["absmax"], "hist": stats["hist"]}
    arrays.update({f"mean_{i}": stats["means"][t] for i, t in enumerate(stats["tensors"])})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # the cache is an optimisation


def _read_statistics(path: Path, tensors: list[str]) -> dict | None:
    """The stored statistics, or None when the file is damaged or is not for these tensors (then recompute)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            names = [str(t) for t in f["tensors"]]
            absmax, hist = np.asarray(f["absmax"], np.float64), np.asarray(f["hist"], np.float64)
            means = {t: np.asarray(f[f"mean_{i}"], np.float32) for i, t in enumerate(names)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = len(tensors)
    if (
        names != list(tensors)
        or absmax.shape != (n,)
        or hist.ndim != 2
        or hist.shape[:1] != (n,)
        or not (np.all(np.isfinite(absmax)) and np.all(np.isfinite(hist)))
    ):
        return None
    return {"tensors": names, "absmax": absmax, "hist": hist, "means": means}


class _Evaluator:
    """Quantize with a plan and a method, run in ONNX Runtime on tuning views, compare with FP32."""

    def __init__(self, model: onnx.ModelProto, stats: dict, x: np.ndarray, ref: np.ndarray | None = None):
        self.model, self.stats, self.x = model, stats, x
        self.ref = self._run(model, x) if ref is None else ref

    @staticmethod
    def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
        return ort_backend.run_all(model, x, literal=True)  # the graph as written (see fidelity row)

    def quantized(self, plan: qdq.Plan, method: str) -> onnx.ModelProto:
        return qdq.quantize(self.model, plan, ranges.thresholds(self.stats, method), self.stats["means"])

    def score(self, plan: qdq.Plan, method: str, views: int | None = None):
        n = views or len(self.x)
        return compare(self.ref[:n], self._run(self.quantized(plan, method), self.x[:n]))


def quantize_model(
    model: onnx.ModelProto,
    stats: dict,
    tuning_x: np.ndarray,
    method: str | None,
    sensitivity: bool,
    exclude: tuple[str, ...] = (),
    tuning_ref: np.ndarray | None = None,
) -> Int8Result:
    """Q/DQ graph for `model`.

    method None: each method is tried and the one whose logits follow FP32 best (mean cosine on the
    tuning views) is kept. sensitivity: while the tuning views' mean cosine is below TARGET_COSINE, the
    layer whose return to float helps most is kept in float (at most MAX_FLOAT_LAYERS). Top-1 agreement
    on calibration photos is no guide here: many of them (textures, microscopy) sit on near-ties that
    flip under any noise, so the pass steers by cosine and the fidelity report judges on verification photos.
    `tuning_ref`: FP32's logits on the tuning views where the caller has them (else computed here).
    """
    model = qdq.name_nodes(model)
    ev = _Evaluator(model, stats, tuning_x, tuning_ref)
    plan = qdq.plan(model, frozenset(exclude))

    compared = {m: ev.score(plan, m) for m in ([method] if method else METHODS)}
    scores = {m: {"cosine_mean": p.cosine_mean, "top1_agreement": p.top1_agreement} for m, p in compared.items()}
    chosen = method or max(scores, key=lambda m: scores[m]["cosine_mean"])

    kept: list[dict] = []
    gains: list[tuple[float, str]] = []
    current = compared[chosen]  # measured above: running the same graph again would give the same figures
    if sensitivity and current.cosine_mean < TARGET_COSINE:
        base = ev.score(plan, chosen, RANK_VIEWS).cosine_mean
        gains = sorted(
            (
                (ev.score(qdq.plan(model, frozenset([*exclude, name])), chosen, RANK_VIEWS).cosine_mean - base, name)
                for name in plan.nodes
            ),
            reverse=True,
        )
        excluded: set[str] = set(exclude)
        for gain, name in gains[:MAX_FLOAT_LAYERS]:
            if gain <= 0 or current.cosine_mean >= TARGET_COSINE:
                break
            excluded.add(name)
            plan = qdq.plan(model, frozenset(excluded))
            current = ev.score(plan, chosen)
            kept.append({"node": name, "rank_cosine_gain": round(gain, 6), "tuning_cosine_after": current.cosine_mean})
    return Int8Result(
        ev.quantized(plan, chosen),
        chosen,
        scores,
        plan,
        kept,
        [(n, g) for g, n in gains],
        {"views": len(tuning_x), "top1_agreement": current.top1_agreement, "cosine_mean": current.cosine_mean},
    )


def rank_layers(
    model: onnx.ModelProto,
    stats: dict,
    tuning_x: np.ndarray,
    method: str,
    exclude: tuple[str, ...] = (),
    views: int = RANK_VIEWS,
) -> list[tuple[str, float]]:
    """Quantized layers, most damaging first: each one's measured gain in mean cosine with FP32 on the
    tuning (calibration) views when it alone returns to float, the layers in `exclude` staying float."""
    model = qdq.name_nodes(model)
    ev = _Evaluator(model, stats, tuning_x[:views])
    plan = qdq.plan(model, frozenset(exclude))
    base = ev.score(plan, method).cosine_mean
    gains = [
        (name, ev.score(qdq.plan(model, frozenset([*exclude, name])), method).cosine_mean - base) for name in plan.nodes
    ]
    return sorted(gains, key=lambda g: -g[1])


def write(result: Int8Result, path: Path) -> dict:
    onnx.save(result.model, str(path))
    return qdq.summary(result.model)
