"""Collecting a device's model: build and time the designed set, each network against a reference.

Resumable: each network's measurement is appended to the device's data as soon as it is taken, and a
rerun skips every designed network already there with the same bench settings. Ctrl-C keeps what was
measured. Each network is timed in turns with the reference network, one call of each per round
(measure/timing.py interleaved_p50): on a shared CPU, load that comes and goes within a second falls on
both alike, which timing one for a second and then the other does not achieve (measured here under a
load average of 20 on 2 cores: ms per GMAC of the designed networks spread 10x with block-wise pairing).
store.paired_p50 then takes the drift between networks out. A network's bundle is removed once it is timed (the stage
cache keeps its artifacts), so a collection's disk use stays one bundle and the reference.

Profiles: where `edgeffnet.bench` takes `profile=True` (the profile record: docs/measuring.md), each
network also gets one profiled run and its per-layer times go into the data with it; elsewhere the model
is fitted on whole-network p50s alone.
"""

from __future__ import annotations

import inspect
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import edgeffnet
from edgeffnet.core.errors import UserError
from edgeffnet.latency import device, store
from edgeffnet.latency.design import DEFAULT_NETWORKS, design
from edgeffnet.search import harness
from edgeffnet.search.grid import network_key
from edgeffnet.specs.scaling import parse_spec

REFERENCE = "b0,phi=-1"  # mid-sized in the designed set: its time drifts with the machine, not the design
# Part of the settings a resumed collection must match: rows timed another way are measured again.
TIMING = {"timing": "interleaved with the reference, median of per-round ratios"}


def quick_settings() -> harness.BenchSettings:
    """Shorter than search's: a p50 settles within a second at these sizes, and collection must stay
    within half an hour for the default design on a 2-core CPU (each network timed with the reference)."""
    return harness.BenchSettings(iterations=30, seconds=1.0, warmup=0.3)


@dataclass
class Collection:
    target: str
    precision: str
    networks: int = DEFAULT_NETWORKS
    settings: harness.BenchSettings = field(default_factory=quick_settings)
    reference: str = REFERENCE
    profile: bool = True  # profile where bench can
    only: tuple[str, ...] = ()  # these specs instead of the design (tests, benchmarks)

    def specs(self) -> list[str]:
        return list(self.only) if self.only else design(self.networks)


def bench_profiles() -> bool:
    """Whether this edgeffnet's bench takes profile=True (the hook for the profiling work)."""
    return "profile" in inspect.signature(edgeffnet.bench).parameters


def profile_of(bundle: Path, settings: harness.BenchSettings) -> dict | None:
    """One profiled run's profile (docs/measuring.md), or None where bench cannot profile."""
    if not bench_profiles():
        return None
    r = harness.bench_locked(bundle, settings, save=False, profile=True)
    return r.to_dict().get("profile") or getattr(r, "profile", None)


def interleaved(bundle: Path, reference: Path, settings: harness.BenchSettings) -> tuple[float, float, float]:
    """(p50 ms of the network, of the reference, the median of their per-round ratios), timed in turns
    under the device lock: batch 1, synchronous, each on its bundle's own backend, for about
    `settings.seconds` each and at least `settings.iterations` rounds."""
    from edgeffnet.measure import bench
    from edgeffnet.measure.timing import interleaved_times, median_ratio

    calls = {}
    for name, path in (("network", bundle), ("reference", reference)):
        b = edgeffnet.Bundle.open(path)
        runner = bench.load_runner(b, b.target.backend, bench.Settings(threads=settings.threads), 1)
        calls[name] = runner.bound(bench.sample_input(b, 1))
    with harness.device_lock(edgeffnet.Bundle.open(bundle).target.name):
        t = interleaved_times(
            calls, seconds=settings.seconds, min_runs=settings.iterations, warmup=max(3, int(settings.warmup * 20))
        )
    p50 = {k: float(np.median(v)) for k, v in t.items()}
    return p50["network"], p50["reference"], median_ratio(t, "network", "reference")


def measure_one(spec: str, c: Collection, workdir: Path, reference_bundle: Path) -> dict:
    """Build, time in turns with the reference; the store row (the bundle removed after)."""
    dest = workdir / spec.replace(",", "_").replace("=", "")
    try:
        path = harness.build_bundle(spec, c.target, c.precision, dest)
        p50, ref, ratio = interleaved(path, reference_bundle, c.settings)
        prof = profile_of(path, c.settings) if c.profile else None
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return store.row(
        spec,
        network_key(parse_spec(spec)),
        c.precision,
        p50,
        "design",
        reference={"spec": c.reference, "p50_ms": ref, "ratio": ratio},
        settings=c.settings.to_dict() | TIMING,
        profile=prof,
    )


def run(c: Collection, echo=None, on_network=None, measure=measure_one) -> dict:
    """Measure every designed network not yet in the device's data. Returns {"measured", "skipped",
    "failed", "interrupted", "seconds", "data"}; `on_network(done, total, spec)` follows along."""
    echo = echo or (lambda m: None)
    ident = device.identity(c.target)
    data = device.data_path(ident, c.precision)
    have = {
        r["network"]
        for r in store.read(data)[0]
        if r.get("source") == "design" and r.get("settings") == c.settings.to_dict() | TIMING
    }
    specs = c.specs()
    todo = [s for s in specs if network_key(parse_spec(s)) not in have]
    result = {
        "measured": 0,
        "skipped": len(specs) - len(todo),
        "failed": [],
        "interrupted": False,
        "data": str(data),
        "seconds": 0.0,
    }
    started = time.perf_counter()
    workdir = device.folder(ident, c.precision) / "bundles"
    try:
        reference = harness.build_bundle(c.reference, c.target, c.precision, workdir / "reference") if todo else None
        for n, spec in enumerate(todo):
            if on_network:
                on_network(result["skipped"] + n, len(specs), spec)
            try:
                row = measure(spec, c, workdir, reference)
            except UserError as e:
                echo(f"{spec}: failed: {e}")
                result["failed"].append((spec, str(e)))
                continue
            store.append(data, [row])
            result["measured"] += 1
            echo(f"{spec}: p50 {row['p50_ms']:.3f} ms (reference {row['reference']['p50_ms']:.3f} ms)")
    except KeyboardInterrupt:
        result["interrupted"] = True
    if on_network and not result["interrupted"]:
        on_network(len(specs), len(specs), "")
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result
