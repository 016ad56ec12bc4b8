"""Measure several bundles in interleaved rounds, so drift between them cancels.

Measured one after another, a sweep's items see different machines: a neighbour's burst during B1 and not
during B0 bends the latency-versus-FLOPS curve (B0 fp32 at 21 ms and B1 at 23 ms on a shared host, B0 ~10 ms
when quiet). Here every runner of the group is loaded once, then each round measures each of them for a
slice (1/ROUNDS of the bench's iterations and seconds), odd rounds in reverse order
(timing.interleaved_rounds). A record pools its rounds' samples (its percentiles as bench computes them)
and keeps each round's p50 with an interval for the median across rounds (statistics.median_interval):
where two neighbouring models' intervals overlap, the spread is wider than the gap between them and the
report says so.

Memory: all runners of a group (a sweep's items, split only where they would not fit: sweep.groups_of) are
loaded at once, then released before the next group loads; each record says the group's peak and its own
runner's share.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeffnet.bundle import Bundle
from edgeffnet.core.errors import UserError
from edgeffnet.measure import bench, console, device_state, records
from edgeffnet.measure.statistics import median_interval, percentile
from edgeffnet.measure.timing import Limits, Measurement, interleaved_rounds, measure, measure_async

ROUNDS = 6  # the range of 6 per-round p50s covers their median with 96.9% confidence (5: 93.8%)
ORDER = "forward in even rounds, reversed in odd rounds"


@dataclass
class Entry:
    """One runtime of one bundle, loaded and ready to be measured a slice at a time."""

    label: str
    bundle: Bundle
    runtime: str
    batch: int
    runner: object
    load_ms: float
    first_inference_ms: float
    runner_mib: float | None  # resident memory its load and first inference added
    queue: object = None

    def slice(self, x: np.ndarray, mode: str):
        if mode == "throughput":
            self.queue = self.runner.queue(x)
        if self.queue is not None:
            return lambda lim: measure_async(self.queue, lim)
        call = self.runner.bound(x)
        return lambda lim: measure(call, lim)


def per_round(s: bench.Settings, rounds: int) -> Limits:
    """One round's share of the bench's minimums: over all rounds each item gets at least what bench gives."""
    return Limits(math.ceil(s.iterations / rounds), s.seconds / rounds, 0.0)


def rounds_of(measured: list[Measurement], rounds: int) -> dict:
    """Each round's p50 and the interval for the median across rounds (what a record's `rounds` holds)."""
    p50s = [round(percentile(sorted(m.samples_ms), 50), 5) for m in measured]
    return {
        "planned": rounds,
        "count": len(p50s),
        "p50_ms": p50s,
        **median_interval(p50s),
        "order": ORDER,
        "interval": "k-th smallest to k-th largest per-round p50 (order statistics; distribution-free)",
    }


def pooled(measured: list[Measurement]) -> Measurement:
    samples = [x for m in measured for x in m.samples_ms]
    return Measurement(
        samples, sum(m.seconds for m in measured), sum(m.count for m in measured), any(m.interrupted for m in measured)
    )


def load(
    items: list[tuple[str, Path]], s: bench.Settings, baselines: list[str], memory: device_state.Memory, say
) -> tuple[list[Entry], dict, list[tuple[str, str]]]:
    """Every runtime of every bundle, loaded once: (entries, their inputs by bundle path, failures)."""
    entries, inputs, failed = [], {}, []
    for label, dest in items:
        mine = []
        try:
            b = Bundle.open(dest)
            batch = bench.batch_for(b.manifest.to_dict(), s)
            x = bench.sample_input(b, batch)
            for runtime in bench.runtimes(b.target.backend, baselines):
                before = memory.rss_mib()
                runner, load_ms, first_ms = bench.cold_start(b, runtime, s, batch, x)
                after = memory.rss_mib()
                mine.append(
                    Entry(
                        f"{label} {runtime}",
                        b,
                        runtime,
                        batch,
                        runner,
                        load_ms,
                        first_ms,
                        round(after - before, 1) if before is not None and after is not None else None,
                    )
                )
                say(f"  {label} {runtime}: loaded in {load_ms:.0f} ms, first inference {first_ms:.1f} ms")
        except UserError as e:
            say(f"  {label}: failed: {e}")
            failed.append((label, str(e)))
            continue  # its runners loaded so far are dropped with `mine`
        inputs[str(b.path)] = x
        entries += mine
    return entries, inputs, failed


def measure_group(
    items: list[tuple[str, Path]],
    s: bench.Settings,
    baselines: list[str],
    say,
    rounds: int = ROUNDS,
    progress=None,
    save_records: bool = True,
) -> dict:
    """Load every runtime of the bundles `items` ((label, bundle dir)) once, measure them in `rounds`
    interleaved rounds, save one record per bundle and runtime. Returns {"records", "failed" [(label, why)],
    "interrupted", "peak_mib"}. After Ctrl-C the rounds measured so far are saved, marked interrupted."""
    state, memory = device_state.Window(), device_state.Memory()
    entries, inputs, failed = load(items, s, baselines, memory, say)
    if not entries:
        return {"records": [], "failed": failed, "interrupted": False, "peak_mib": None}
    slices = {e.label: e.slice(inputs[str(e.bundle.path)], s.mode) for e in entries}

    with progress(f"{len(entries)} runners, {rounds} rounds") if progress else nullcontext() as tick:

        def on_round(r: int, order: list, measured: dict) -> None:
            say(
                f"  round {r + 1}/{rounds} ({'reversed' if r % 2 else 'forward'}): "
                + ", ".join(
                    f"{k} {percentile(sorted(measured[k][-1].samples_ms), 50):.3f} ms" for k in order if measured[k]
                )
            )
            if tick:
                tick((r + 1) / rounds)

        measured, interrupted = interleaved_rounds(slices, rounds, per_round(s, rounds), s.warmup, on_round)
    peak = memory.peak()
    window = state.close()
    out = []
    for e in entries:
        ms = measured[e.label]
        if not ms:
            continue
        m = pooled(ms)
        m.interrupted = m.interrupted or len(ms) < rounds
        rec = bench.make_record(
            e.bundle, e.runtime, s, e.batch, m, e.runner.describe(), e.queue.requests if e.queue is not None else None
        )
        bench.add_start_and_state(
            rec,
            e.bundle,
            e.load_ms,
            e.first_inference_ms,
            peak
            | {
                "runner_mib": e.runner_mib,
                "runners_loaded": len(entries),
                "scope": "the runners of an interleaved group, loaded together",
            },
            window,
        )
        rec.rounds = rounds_of(ms, rounds)
        rec.settings["rounds"] = rounds
        rec.settings["timing"] += f"; {rounds} interleaved rounds with {len(entries) - 1} other runners"
        rec.saved_to = records.save(e.bundle.path, rec) if save_records else None
        lo, hi = rec.rounds["interval_ms"]
        say(
            f"  {e.label} {s.mode}: {console.summary(rec)}  p50 across {len(ms)} rounds "
            f"[{console.ms(lo)}, {console.ms(hi)}] ms"
        )
        out.append(rec)
    for e in entries:  # release the group before the next one loads
        e.runner = e.queue = None
    say(
        f"  peak resident memory {peak['peak_mib']:.0f} MiB with {len(entries)} runners loaded "
        f"(from {peak['baseline_mib']:.0f} MiB; {peak['method']})"
    )
    return {"records": out, "failed": failed, "interrupted": interrupted, "peak_mib": peak["peak_mib"]}
