"""What search and fit print: a progress bar over candidates, the tables, the one-line answers."""

from __future__ import annotations

from contextlib import contextmanager

from rich.table import Table

from edgeffnet.search.plots import r_coeffs


@contextmanager
def candidate_progress(console, total_label: str):
    """(on_candidate, echo): a bar over candidates on a terminal, lines above it; plain lines otherwise."""
    if not console.is_terminal:
        yield (lambda done, total, label: None), (lambda m: console.print(m, markup=False))
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(total_label, total=None)

        def on_candidate(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{total_label} {label}")

        yield on_candidate, (lambda m: bar.console.print(m, markup=False))


def search_table(summary: dict) -> Table:
    key = "latency_ms"
    acc = summary["accuracy_measured"]
    t = Table(
        title=f"search: {summary['base']} phi={summary['phi']:g} on {summary['target']} ({summary['precision']}),"
        f" {summary['grid']['measured']} candidates, {summary['grid']['networks']} distinct networks"
    )
    for col in ("", "alpha, beta, gamma", "budget split d/w/r", "res", "MACs", f"{summary['metric']} ms") + (
        ("accuracy", "objective") if acc else ()
    ):
        t.add_column(col, justify="left" if col in ("", "alpha, beta, gamma") else "right")
    seen = set()
    rows = [("chosen", summary["chosen"]), ("paper", summary["paper"])] + [
        ("Pareto", r) for r in summary["pareto_front"]
    ]
    for label, r in rows:
        if (label == "Pareto" and r["spec"] in seen) or r is None:
            continue
        seen.add(r["spec"])
        cells = [
            label,
            r_coeffs(r),
            f"{r['depth_share']:.0%}/{r['width_share']:.0%}/{r['resolution_share']:.0%}",
            str(r["resolution"]),
            f"{r['macs'] / 1e6:.0f} M",
            f"{r[key]:.3f}",
        ]
        if acc:
            cells += [f"{r['accuracy']:.4f}", f"{r['objective']:.4f}"]
        t.add_row(*cells)
    return t


def prediction_lines(summary: dict) -> list[str]:
    """Which splits were predicted and which measured, and how far the predictor was off on the measured."""
    p, e = summary.get("prediction"), summary.get("prediction_error")
    if not p:
        return []
    measured = sorted({c["spec"] for c in p["candidates"] if c["measured"]})
    lines = [
        f"predicted: {len(p['candidates'])} splits ranked by predicted latency (latency model {p['model']}, held-out "
        f"RMSE {p['held_out_rmse_pct']:.1f}%); measured: the best {p['k']} distinct networks and the paper's "
        f"({p['measured_networks']} networks): " + "; ".join(measured)
    ]
    if e:
        lines.append(
            f"predictor on the {e['networks']} measured splits (as a ratio to the paper's network): RMSE "
            f"{e['rmse_pct']:.1f}%, max {e['max_abs_pct']:.1f}%, {e['within_10pct']:.0%} within +-10%; the machine "
            f"now runs at {e['machine_now']:.2f}x the model's time scale"
        )
    return lines


def search_lines(summary: dict, comparison: dict | None) -> list[str]:
    lines = prediction_lines(summary) + [f"chosen: {summary['chosen_spec']}  ({summary['chosen_because']})"]
    if summary["note"]:
        lines.append(summary["note"].replace("no accuracy", "NO ACCURACY", 1))
    if comparison and not comparison["same_network"]:
        c = comparison
        verdict = "saves" if c["saved"] > 0 else "loses"
        lines.append(
            f"against the paper's (1.2, 1.1, 1.15) at phi={summary['phi']:g}: {c['chosen_median_ms']:.3f} vs "
            f"{c['paper_median_ms']:.3f} ms {c['metric']} ({c['rounds']} alternating rounds with "
            f"{len(c['finalists']) - 1} finalists), median ratio {c['ratio']:.3f}: {verdict} "
            f"{abs(c['saved']):.1%} latency at {c['mac_ratio']:.3f}x the MACs"
        )
    elif comparison:
        lines.append(
            "timed again against the finalists, the paper's own network comes out best here: keep (1.2, 1.1, 1.15)"
            if comparison["rounds"]
            else "the chosen coefficients round to the paper's network at this phi: nothing saved or lost"
        )
    lines.append(
        f"fit it to a budget: edgeffnet fit --spec '{summary['chosen_spec']}' --target {summary['target']} "
        f"--latency-ms X"
    )
    return lines


def fit_table(results: list[dict], metric: str) -> Table:
    key = f"{metric}_ms"
    t = Table(title="fit: the largest phi within each budget (measured)")
    for col in (
        "budget ms",
        "phi",
        "spec",
        "res",
        "MACs",
        "params",
        f"{metric} ms",
        "next phi",
        f"next {metric} ms",
        "measured",
    ):
        t.add_column(col, justify="left" if col == "spec" else "right")
    for r in results:
        t.add_row(
            f"{r['budget_ms']:g}",
            f"{r['phi']:g}",
            r["spec"],
            str(r["resolution"]),
            f"{r['macs'] / 1e6:.0f} M",
            f"{r['params'] / 1e6:.2f} M",
            f"{r[key]:.3f}",
            "" if r["next_phi"] is None else f"{r['next_phi']:g}",
            "" if r["next_ms"] is None else f"{r['next_ms']:.3f}",
            str(r["measurements"]),
        )
    return t


def fit_lines(r: dict, metric: str) -> list[str]:
    key = f"{metric}_ms"
    lines = [
        f"{r['budget_ms']:g} ms -> {r['spec']}: {metric} {r[key]:.3f} ms"
        + (" (confirmed by a second measurement)" if r["confirmed"] else "")
        + ", "
        f"{r['macs'] / 1e6:.0f} M MACs, {r['params'] / 1e6:.2f} M params, bundle {r['bundle']}"
    ]
    if r["capped_at_phi_max"]:
        lines.append("  the budget allows more than --phi-max; raise it to go further")
    lines.append(
        "  tried: "
        + ", ".join(f"phi={t['phi']:g} {t[key]:.3f} ms{'' if t['within_budget'] else ' (over)'}" for t in r["tried"])
    )
    return lines
