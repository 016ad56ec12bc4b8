"""The latency- and throughput-against-FLOPs plots: log-log, a tick at each model's FLOPs, 1-2-5 y ticks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from edgeffnet.measure.report.series import colours


def _steps(lo: float, hi: float) -> list[float]:
    """1-2-5 values from the largest at or below `lo` to the smallest at or above `hi` (at least two):
    y ticks that enclose every point."""
    first = math.floor(math.log10(lo))
    values = [m * 10.0**d for d in range(first, math.floor(math.log10(hi)) + 2) for m in (1, 2, 5)]
    start = max(i for i, v in enumerate(values) if v <= lo * (1 + 1e-9))
    end = min(i for i, v in enumerate(values) if v >= hi * (1 - 1e-9))
    return values[start : max(end, start + 1) + 1]


# Two models whose FLOPs are closer than this ratio share one x tick (B0 0.772 and Lite0 0.770 GFLOPs would
# print on top of each other, "0.7772"): the points keep their own positions and name labels.
TICK_MERGE_RATIO = 1.08


def merged_ticks(values: list[float], ratio: float = TICK_MERGE_RATIO) -> list[float]:
    """The x ticks: each model's FLOPs, except one that sits within `ratio` of the tick before it."""
    ticks: list[float] = []
    for v in sorted({float(f"{v:.3g}") for v in values}):
        if not ticks or v / ticks[-1] >= ratio:
            ticks.append(v)
    return ticks


def figure(series_fits: list[dict], y: str, ylabel: str, title: str, palette: dict[str, str] | None = None):
    """The log-log plot of one mode's series: points, fitted lines, a labelled x tick at each model's
    FLOPs (merged where two nearly coincide; the smallest model is the first tick, nothing sits outside
    the ticks) and 1-2-5 y ticks. `palette`: colour per series name (colours())."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    xs_all, ys_all = [], []
    palette = palette or colours(f["series"] for f in series_fits)
    for f in series_fits:
        if not f["points"]:
            continue
        color = palette[f["series"]]
        gx = np.array(f["flops"]) / 1e9
        xs_all += list(gx)
        ys_all += list(f[y])
        label = f["series"] + (f" (slope {f['slope']:.2f})" if f["slope"] is not None else "")
        ax.loglog(gx, f[y], "o", color=color, label=label)
        if f["slope"] is not None:
            xs = np.geomspace(gx.min(), gx.max(), 20)
            ax.loglog(xs, 10 ** (f["slope"] * np.log10(xs * 1e9) + f["intercept"]), "--", color=color, lw=1)
        for xv, yv, name in zip(gx, f[y], f["models"]):
            ax.annotate(name, (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    if xs_all:
        ticks = merged_ticks(xs_all)  # 3 digits: equal-FLOPs variants share a tick, near-equal ones too
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_xlim(min(xs_all) / 1.15, max(xs_all) * 1.15)
        plt.setp(
            ax.get_xticklabels(),
            rotation=60 if len(ticks) > 6 else 0,
            ha="right" if len(ticks) > 6 else "center",
            fontsize=8,
        )
        steps = _steps(min(ys_all), max(ys_all))
        ax.yaxis.set_major_locator(FixedLocator(steps))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylim(steps[0], steps[-1])
    ax.set_xlabel("FLOPs per image (G, = 2 x MACs; a tick at each model)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot(
    series_fits: list[dict], y: str, ylabel: str, title: str, path: Path, palette: dict[str, str] | None = None
) -> None:
    import matplotlib.pyplot as plt

    # Names are text, not mathtext: a '$' in a spec or series would otherwise be parsed (and can raise).
    with plt.rc_context({"text.parse_math": False}):
        fig = figure(series_fits, y, ylabel, title, palette)
        # The series travel in the PNG's text chunk: a reader (or a test) can tell what the picture shows.
        meta = [{k: f[k] for k in ("series", "points", "slope", "models")} for f in series_fits]
        fig.savefig(path, metadata={"Title": title, "Description": json.dumps(meta)})
    plt.close(fig)
