"""Comparison of outputs, apart from the backends: every stage is checked against the PyTorch reference."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgeffnet.core.errors import UserError

FP32_MAX_ABS = 1e-4
FP16_MIN_COSINE = 0.999


class StageFailed(UserError):
    """A stage's artifact missed its tolerance: the build stops and prints the numbers."""

    exit_code = 1


@dataclass(frozen=True)
class Parity:
    views: int
    max_abs: float
    mean_abs: float
    cosine_min: float
    cosine_mean: float
    top1_agreement: float  # fraction of views whose top-1 class matches the reference
    top5_overlap: float  # mean |top5(ref) & top5(got)| / 5

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"max|d| {self.max_abs:.2e}, cosine min {self.cosine_min:.6f}, top-1 {self.top1_agreement:.1%}"
            f" over {self.views} views"
        )


def row_cosine(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """The cosine between each row (view) of two logit arrays, in float64."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    return np.sum(ref * got, axis=1) / np.maximum(norms, 1e-30)


def compare(ref: np.ndarray, got: np.ndarray) -> Parity:
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if ref.shape != got.shape:
        raise StageFailed(f"output shape {got.shape} differs from the reference {ref.shape}")
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf outputs: check() reports them
        diff = np.abs(ref - got)
        cos = row_cosine(ref, got)
    k = min(5, ref.shape[1])
    top_ref = np.argsort(-ref, axis=1)[:, :k]
    top_got = np.argsort(-got, axis=1)[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_got)])
    return Parity(
        views=int(ref.shape[0]),
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        cosine_min=float(cos.min()),
        cosine_mean=float(cos.mean()),
        top1_agreement=float(np.mean(top_ref[:, 0] == top_got[:, 0])),
        top5_overlap=float(overlap),
    )


def check(stage: str, parity: Parity, precision: str, trained: bool = True) -> None:
    """FP32: logits within 1e-4 of PyTorch. FP16: same top-1 everywhere and cosine >= 0.999.

    Random weights (`trained` False) are judged on cosine alone at FP16: their top classes sit on
    near-ties that FP16 rounding flips, so top-1 says nothing about the artifact (INT8 likewise makes no
    agreement claim for them). NaN or Inf anywhere fails at every precision: NaN compares false with
    every tolerance, so without this check it would pass them all."""
    if not all(math.isfinite(v) for v in (parity.max_abs, parity.mean_abs, parity.cosine_min, parity.cosine_mean)):
        raise StageFailed(
            f"{stage}: the outputs hold NaN or Inf on the verification views (max |logit difference| "
            f"{parity.max_abs}); check the weights for NaN/Inf values"
        )
    if precision == "fp32" and parity.max_abs > FP32_MAX_ABS:
        raise StageFailed(
            f"{stage}: max |logit difference| {parity.max_abs:.3e} exceeds the FP32 tolerance "
            f"{FP32_MAX_ABS:g} ({parity.summary()})"
        )
    if precision == "fp16" and (parity.cosine_min < FP16_MIN_COSINE or (trained and parity.top1_agreement < 1.0)):
        need = "the same top-1 on every view and " if trained else ""
        raise StageFailed(
            f"{stage}: FP16 needs {need}cosine >= {FP16_MIN_COSINE}; got top-1 "
            f"{parity.top1_agreement:.1%}, cosine min {parity.cosine_min:.6f}"
            + ("" if trained else " (random-init weights: top-1 not judged)")
        )


def run_batched(run, x: np.ndarray, batch: int | None) -> np.ndarray:
    """Feed `x` through a runner whose batch is fixed (`batch`) or free (None), padding the last chunk."""
    if not batch:
        return run(x)
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        outs.append(run(chunk)[:n])
    return np.concatenate(outs)


def verify(
    stage: str, run, x: np.ndarray, ref: np.ndarray, batch: int | None, precision: str, trained: bool = True
) -> dict:
    """Run an artifact on the reference views and stop when it misses its precision's tolerance.

    Shared by every build stage and by `edgeffnet compile` on the device: one way to verify."""
    parity = compare(ref, run_batched(run, x, batch))
    check(stage, parity, precision, trained=trained)
    return parity.as_dict()
