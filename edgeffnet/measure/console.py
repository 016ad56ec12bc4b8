"""How bench records look on a terminal: a progress bar while measuring, a one-line summary, a table."""

from __future__ import annotations

from contextlib import contextmanager

from .records import Record


@contextmanager
def progress_bar(console, label: str):
    """A rich bar on interactive terminals. It refreshes only when ticked (at most 5 Hz): rich's own
    refresh thread would compete with the timed loop for the interpreter."""
    if not console.is_terminal:  # a pipe or a log: no bar, but a line at least every 20 s (logs.heartbeat)
        from .. import logs

        with logs.heartbeat(label):
            yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
                  auto_refresh=False, transient=True) as bar:
        task = bar.add_task(label, total=1.0)

        def tick(fraction: float) -> None:
            bar.update(task, completed=fraction)
            bar.refresh()

        yield tick


def ms(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def summary(r: Record) -> str:
    st, pct = r.stats, r.fraction_of_peak
    line = (f"p50 {ms(st['p50_ms'])} ms  p90 {ms(st['p90_ms'])} ms  p99 {ms(st['p99_ms'])} ms  "
            f"{r.throughput_ips:.1f} img/s  {r.achieved_gflops:.1f} GFLOP/s")
    line += f" ({pct:.1%} of peak)" if pct is not None else ""
    return line + (f"  [interrupted after {st['count']}]" if r.interrupted else "")


def table(records: list[Record]):
    """One column per runtime, one row per statistic: narrow enough for any terminal."""
    from rich.table import Table

    r0, m0 = records[0], records[0].model
    t = Table(title=f"{m0['spec']} ({m0['macs'] / 1e9:.3f} GMACs, {m0['params'] / 1e6:.2f} M params) on "
                    f"{r0.device['name']} ({r0.device['kind']}), {r0.mode}, batch {r0.batch}")
    t.add_column("")
    for r in records:
        t.add_column(f"{r.runtime} {r.precision}" + (" (interrupted)" if r.interrupted else ""), justify="right")
    for key in ("p50", "p90", "p99", "mean", "std", "min", "max"):
        t.add_row(f"{key} ms", *(ms(r.stats[f"{key}_ms"]) for r in records))
    t.add_row("iterations", *(str(r.stats["count"]) for r in records))
    t.add_row("images/s", *(f"{r.throughput_ips:.1f}" for r in records))
    t.add_row("GFLOP/s", *(f"{r.achieved_gflops:.1f}" for r in records))
    t.add_row("of peak", *("" if r.fraction_of_peak is None else
                           f"{r.fraction_of_peak:.1%} of {r.peak['gflops']:.0f}" for r in records))
    return t
