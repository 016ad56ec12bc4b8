"""Ranking candidates: the MnasNet objective with measured latency, the Pareto front, the equal-FLOPS rule."""

from __future__ import annotations

import math

DEFAULT_WEIGHT = -0.07  # MnasNet's soft latency constraint, as the EfficientNet paper used it on FLOPS


def objective(accuracy: float, latency_ms: float, target_ms: float, weight: float = DEFAULT_WEIGHT) -> float:
    """ACC(m) x [LAT(m)/T]^w: with w < 0, a model twice as slow as T must be 2^-w (~5% at w=-0.07) more
    accurate to tie."""
    if not (latency_ms > 0 and target_ms > 0):
        raise ValueError("latencies must be positive")
    return accuracy * (latency_ms / target_ms) ** weight


def pareto_front(rows: list[dict], gain: str, cost: str) -> list[dict]:
    """Rows that no other row beats on both counts (more `gain`, less `cost`), cheapest first."""
    front, best = [], -math.inf
    for r in sorted(rows, key=lambda r: (r[cost], -r[gain])):
        if r[gain] > best:
            front.append(r)
            best = r[gain]
    return front


def equal_flops(rows: list[dict], reference: dict, tolerance: float) -> list[dict]:
    """Rows that spend at least the reference's counted MACs, less `tolerance` (a fraction): a split that
    is faster only because rounding left it fewer MACs does not win."""
    return [r for r in rows if r["macs"] >= reference["macs"] * (1 - tolerance)]


def rank(rows: list[dict], paper: dict, key: str, tolerance: float, metric: str = "p50") -> tuple[list[dict], str]:
    """(eligible rows, best first; the rule). With accuracy: by objective. Without: by latency among the
    splits at equal FLOPS."""
    scored = [r for r in rows if r.get("objective") is not None]
    if scored:
        return sorted(scored, key=lambda r: -r["objective"]), "the highest ACC x (LAT/T)^w"
    pool = equal_flops(rows, paper, tolerance)
    return (
        sorted(pool, key=lambda r: r[key]),
        f"the least {metric} latency among splits with at least the paper's MACs (-{tolerance:.0%}); "
        f"no accuracy was measured",
    )
