"""How bench records look on a terminal: a progress bar while measuring, a one-line summary, a table."""

from __future__ import annotations

from contextlib import contextmanager

from edgeffnet.measure.records import Record


@contextmanager
def progress_bar(console, label: str):
    """A rich bar on interactive terminals. It refreshes only when ticked (at most 5 Hz): rich's own
    refresh thread would compete with the timed loop for the interpreter."""
    if not console.is_terminal:  # a pipe or a log: no bar, but a line at least every 20 s (logs.heartbeat)
        from edgeffnet.core import logs

        with logs.heartbeat(label):
            yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        auto_refresh=False,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=1.0)

        def tick(fraction: float) -> None:
            bar.update(task, completed=fraction)
            bar.refresh()

        yield tick


def ms(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def summary(r: Record) -> str:
    st, pct = r.stats, r.fraction_of_peak
    line = (
        f"p50 {ms(st['p50_ms'])} ms  p90 {ms(st['p90_ms'])} ms  p99 {ms(st['p99_ms'])} ms  "
        f"{r.throughput_ips:.1f} img/s  {r.achieved_gflops:.1f} GFLOP/s"
    )
    line += f" ({pct:.1%} of peak)" if pct is not None else ""
    return line + (f"  [interrupted after {st['count']}]" if r.interrupted else "")


def table(records: list[Record]):
    """One column per runtime, one row per statistic: narrow enough for any terminal."""
    from rich.table import Table

    r0, m0 = records[0], records[0].model
    t = Table(
        title=f"{m0['spec']} ({m0['macs'] / 1e9:.3f} GMACs, {m0['params'] / 1e6:.2f} M params) on "
        f"{r0.device['name']} ({r0.device['kind']}), {r0.mode}, batch {r0.batch}"
    )
    t.add_column("")
    for r in records:
        t.add_column(f"{r.runtime} {r.precision}" + (" (interrupted)" if r.interrupted else ""), justify="right")
    for key in ("p50", "p90", "p99", "mean", "std", "min", "max"):
        t.add_row(f"{key} ms", *(ms(r.stats[f"{key}_ms"]) for r in records))
    t.add_row("iterations", *(str(r.stats["count"]) for r in records))
    t.add_row("images/s", *(f"{r.throughput_ips:.1f}" for r in records))
    t.add_row("GFLOP/s", *(f"{r.achieved_gflops:.1f}" for r in records))
    t.add_row(
        "of peak",
        *("" if r.fraction_of_peak is None else f"{r.fraction_of_peak:.1%} of {r.peak['gflops']:.0f}" for r in records),
    )
    return t


def profile_tables(p: dict, top: int = 15):
    """bench --profile on a terminal: the costliest layers, then time by role (with the mapping's quality)."""
    from rich.console import Group
    from rich.table import Table

    roof = p.get("roofline") or {}
    check = p.get("sum_check") or {}
    t = Table(
        title=f"{p['runtime']}: {top} costliest of {len(p['layers'])} rows ({p['iterations']} profiled "
        f"inferences, median per layer)"
    )
    for col in ("layer", "role", "ms", "share", "GOP/s", "ops/B", "bound", "kernel", "ran in"):
        t.add_column(col, justify="left" if col in ("layer", "role", "kernel", "bound") else "right")
    for r in p["layers"][:top]:
        t.add_row(
            r["name"] + (f" +{len(r['fused'])}" if r["fused"] else ""),
            r["role"],
            ms(r["time_ms"]),
            f"{r['share']:.1%}",
            "" if r.get("gops") is None else f"{r['gops']:.1f}",
            f"{r['intensity']:.1f}" if r["role"] != "overhead" else "",
            r.get("bound", ""),
            r["exec_type"],
            r["precision"],
        )
    total = sum(p["by_role"].values()) or 1.0
    cov = p.get("coverage") or {}
    roles = Table(
        title=f"time by role: {p['profiled_sum_ms']:.3f} ms profiled (median), unprofiled p50 "
        f"{(p['unprofiled_p50_ms'] or 0):.3f} ms ({'within' if check.get('holds') else 'OUTSIDE'} "
        f"{check.get('tolerance', 0):.0%}); nodes cover "
        f"{cov.get('median', 0):.0%} of each profiled inference; mapped {p['mapped_fraction']:.1%}, "
        f"in layers {p['layer_fraction']:.1%}"
    )
    for col in ("role", "ms", "share"):
        roles.add_column(col, justify="left" if col == "role" else "right")
    for role, v in sorted(p["by_role"].items(), key=lambda kv: -kv[1]):
        roles.add_row(role, ms(v), f"{v / total:.1%}")
    parts = [t, roles]
    if roof.get("time_memory_bound") is not None:
        bw = roof["bandwidth"]
        parts.append(
            f"roofline: compute {roof['compute_gops']:.0f} GOP/s, memory {roof['bandwidth_gbs']:.1f} GB/s "
            f"({bw['method']}, {bw['buffer_bytes'] >> 20} MiB buffers), ridge {roof['ridge_intensity']:.1f} "
            f"ops/B; layer time under the memory roof {roof['time_memory_bound']:.0%}, under the compute "
            f"roof {roof['time_compute_bound']:.0%}"
        )
    return Group(*parts)
