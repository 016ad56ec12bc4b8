"""The search's and the fit's pictures (matplotlib, headless)."""

from __future__ import annotations

import io
from pathlib import Path

from edgeffnet.search.harness import atomic_write_bytes


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, plt, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def search_plot(rows: list[dict], summary: dict, path: Path) -> Path:
    """Latency against MACs, one dot per candidate coloured by objective (or, without accuracy, by the
    depth share of the FLOPS budget); the paper's point and the chosen one marked."""
    plt = _figure()
    key = "latency_ms"
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    accuracy = summary["accuracy_measured"]
    colour = [r["objective"] if accuracy else r["depth_share"] for r in rows]
    dots = ax.scatter([r["macs"] / 1e6 for r in rows], [r[key] for r in rows], c=colour, cmap="viridis", s=28)
    fig.colorbar(
        dots,
        ax=ax,
        label="ACC x (LAT/T)^w" if accuracy else "share of the FLOPS budget spent on depth (no accuracy measured)",
    )
    front = summary["pareto_front"]
    ax.plot([r["macs"] / 1e6 for r in front], [r[key] for r in front], color="0.5", lw=1, label="Pareto front")
    for label, r, style in (
        ("paper (1.2, 1.1, 1.15)", summary["paper"], dict(marker="*", s=260, color="red")),
        (
            f"chosen ({r_coeffs(summary['chosen'])})",
            summary["chosen"],
            dict(marker="D", s=90, facecolors="none", edgecolors="black", linewidths=1.5),
        ),
    ):
        ax.scatter([r["macs"] / 1e6], [r[key]], label=label, zorder=3, **style)
    ax.set_xlabel("MACs (millions, counted)")
    ax.set_ylabel(f"{summary['metric']} latency (ms, measured; paired with the paper's)")
    ax.set_title(
        f"{summary['base']} at phi={summary['phi']:g}: {summary['grid']['measured']} splits of the "
        f"FLOPS budget on {summary['target']} ({summary['precision']})",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def r_coeffs(r: dict) -> str:
    return f"{r['alpha']:g}, {r['beta']:g}, {r['gamma']:g}"


def fit_plot(results: list[dict], tried: list[dict], metric: str, title: str, path: Path) -> Path:
    """Every measured phi (latency against phi) with each budget's line and its answer."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    key = f"{metric}_ms"
    pts = sorted(tried, key=lambda t: t["phi"])
    ax.plot([t["phi"] for t in pts], [t[key] for t in pts], "o", color="0.6", ms=4, label="measured")
    for n, r in enumerate(results):
        colour = plt.get_cmap("tab10")(n % 10)
        ax.axhline(r["budget_ms"], lw=0.8, ls="--", color=colour)
        ax.plot(
            [r["phi"]],
            [r[key]],
            "o",
            ms=9,
            color=colour,
            label=f"{r['budget_ms']:g} ms: phi={r['phi']:g} ({r[key]:.2f} ms)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("phi")
    ax.set_ylabel(f"{metric} latency (ms, measured)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, plt, path)
