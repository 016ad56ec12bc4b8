"""Latency statistics as benchmark_app and MLPerf's loadgen report them: nearest-rank percentiles."""

from __future__ import annotations

import math

import numpy as np


def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank: the smallest observation with at least p% of the sample at or below it."""
    return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]


def statistics(samples_ms: list[float]) -> dict:
    if not samples_ms:
        raise ValueError("no samples")
    s = sorted(samples_ms)
    a = np.asarray(s, dtype=np.float64)
    return {"count": len(s), "p50_ms": percentile(s, 50), "p90_ms": percentile(s, 90), "p99_ms": percentile(s, 99),
            "mean_ms": float(a.mean()), "std_ms": float(a.std(ddof=1)) if len(s) > 1 else 0.0,
            "min_ms": s[0], "max_ms": s[-1]}
