"""Per series (family x precision x runtime x device): the log-log fit against FLOPs, and its colour."""

from __future__ import annotations

from typing import Literal

import numpy as np

from edgeffnet.measure.report.row import ReportRow


def fits(table: list[ReportRow], y: Literal["p50", "throughput_ips"] = "p50", mode: str = "latency") -> list[dict]:
    """Per series, least squares of log10(y) on log10(FLOPs) over the rows of one bench mode: y ~ FLOPs^slope."""
    table = [r for r in table if r["mode"] == mode]
    out = []
    for name in dict.fromkeys(r["series"] for r in table):
        pts = [(r["flops"], got, r["model"]) for r in table if r["series"] == name and (got := r[y])]
        fit = {
            "series": name,
            "mode": mode,
            "points": len(pts),
            "slope": None,
            "intercept": None,
            "r2": None,
            "models": [p[2] for p in pts],
            "flops": [p[0] for p in pts],
            y: [p[1] for p in pts],
        }
        if len({p[0] for p in pts}) >= 2:
            x, v = np.log10([p[0] for p in pts]), np.log10([p[1] for p in pts])
            slope, intercept = np.polyfit(x, v, 1)
            resid = v - (slope * x + intercept)
            ss = float(np.sum((v - v.mean()) ** 2))
            fit.update(
                slope=float(slope), intercept=float(intercept), r2=1 - float(np.sum(resid**2)) / ss if ss > 0 else 1.0
            )
        out.append(fit)
    return out


def colours(names) -> dict[str, str]:
    """One colour per series name, the same in every plot of a report (latency and throughput list
    different series, so a colour by position would change between them)."""
    return {name: f"C{i % 10}" for i, name in enumerate(sorted(set(names)))}
