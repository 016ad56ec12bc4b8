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
    return {
        "count": len(s),
        "p50_ms": percentile(s, 50),
        "p90_ms": percentile(s, 90),
        "p99_ms": percentile(s, 99),
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std(ddof=1)) if len(s) > 1 else 0.0,
        "min_ms": s[0],
        "max_ms": s[-1],
    }


def median_interval(values: list[float], coverage: float = 0.95) -> dict:
    """A distribution-free interval for the median of what `values` sample (an interleaved sweep's per-round
    p50s): the k-th smallest and the k-th largest value, with the largest k whose coverage
    1 - 2 * P(Binomial(n, 1/2) < k) is still at least `coverage`. Below 6 values no k reaches 95% and the
    interval is the range, whose coverage 1 - 2^(1-n) is said (5 rounds: 93.75%)."""
    if not values:
        raise ValueError("no values")
    s, n = sorted(values), len(values)

    def covered(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2.0**n

    k = 1
    while k + 1 <= (n + 1) // 2 and covered(k + 1) >= coverage:
        k += 1
    return {"interval_ms": [s[k - 1], s[n - k]], "coverage": round(covered(k), 4), "order_statistic": k}
