"""`edgeffnet bench`: how fast a bundle's artifact really runs on its device, as a record.

Latency mode follows MLPerf single-stream: batch 1, one synchronous inference at a time, a warm-up, then
at least N iterations *and* at least S seconds, reported as nearest-rank percentiles (each one an
observed latency, as MLPerf's loadgen and OpenVINO's benchmark_app report them). Throughput mode keeps
the device busy the way its backend does best (OpenVINO: THROUGHPUT hint and its optimal number of
asynchronous requests) and counts images per second.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import __version__, host, logs
from ..backends import RunSettings, get
from ..bundle import Bundle
from ..errors import UserError
from ..files import utc_now
from . import records
from .peak import peak
from .records import Record
from .statistics import statistics
from .timing import Limits, Measurement, measure, measure_async

BASELINES = ("pytorch", "onnxruntime")
MODES = ("latency", "throughput")


@dataclass(frozen=True)
class Settings:
    """What a measurement promises. The defaults take MLPerf single-stream's minimum query count (1024);
    its minimum duration (minutes) is shortened to what someone at a terminal waits for."""

    mode: str = "latency"
    iterations: int = 1024
    seconds: float = 10.0
    warmup: float = 2.0  # seconds of untimed runs first: caches, thread pools and lazy kernels settle
    threads: int | None = None
    streams: int | None = None
    batch: int | None = None  # throughput mode on a dynamic-batch bundle; latency mode is always 1

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise UserError(f"--iterations must be a whole number of at least 1, got {self.iterations!r}")
        for name in ("seconds", "warmup"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 86400:
                raise UserError(f"--{name} must be a number of seconds between 0 and 86400, got {v!r}")
        for name in ("threads", "streams", "batch"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise UserError(f"--{name} must be at least 1, got {v}")

    @property
    def limits(self) -> Limits:
        return Limits(self.iterations, self.seconds, self.warmup)

    def run_settings(self, batch: int | None) -> RunSettings:
        return RunSettings(hint=self.mode.upper(), threads=self.threads, streams=self.streams, batch=batch)


def runtimes(backend_name: str, baselines: list[str]) -> list[str]:
    """What a bench runs: the bundle's own backend, then the baselines asked for."""
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise UserError(f"unknown baseline '{bad[0]}'; known: {', '.join(BASELINES)}")
    return [backend_name] + [b for b in BASELINES if b in baselines]


def batch_for(manifest: dict, s: Settings) -> int:
    fixed = manifest["input"]["batch"]
    if s.mode == "latency":
        if fixed not in (None, 1) or (s.batch or 1) != 1:
            raise UserError(f"latency mode runs batch 1; this bundle has a static batch of {fixed}: use --mode "
                            f"throughput, or build with --batch 1 or --dynamic-batch")
        return 1
    if fixed is not None and s.batch not in (None, fixed):
        raise UserError(f"this bundle has a static batch of {fixed}; --batch {s.batch} needs a --dynamic-batch build")
    return fixed or s.batch or 1


def load_runner(b: Bundle, runtime: str, s: Settings, batch: int):
    """The runner for `runtime`: the bundle's own backend (on its device, never a fallback) or a baseline
    (fp32, on this host's CPU)."""
    dynamic = b.manifest.input["dynamic_batch"]
    precision = b.precision if runtime == b.target.backend else "fp32"
    return get(runtime).load(b.path, b.target, precision, s.run_settings(batch if dynamic else None))


def sample_input(b: Bundle, batch: int) -> np.ndarray:
    """A real photo view through the bundle's recipe: realistic activations (no all-zero shortcuts)."""
    try:
        x = b.reference()[0][:1]
    except UserError:
        x = np.random.default_rng(0).standard_normal((1, *b.manifest.input["shape"][1:]), dtype=np.float32)
    return np.ascontiguousarray(np.repeat(x, batch, axis=0), dtype=np.float32)


def make_record(b: Bundle, runtime: str, s: Settings, batch: int, m: Measurement, described: dict,
                requests: int | None = None) -> Record:
    manifest = b.manifest.to_dict()
    baseline = runtime in BASELINES
    precision = "fp32" if baseline else b.precision
    stats = statistics(m.samples_ms)
    macs = manifest["macs"]
    ips = m.count * batch / m.seconds if m.seconds > 0 else None
    if s.mode == "latency":
        achieved = 2 * macs * batch / (stats["p50_ms"] / 1e3) / 1e9  # at the median: robust to the tail
    else:
        achieved = 2 * macs * ips / 1e9 if ips else None
    pk = peak(manifest, precision, baseline)
    device_name = described.get("device_name") or described.get("gpu") or host.cpu()["model"]
    sp = manifest["spec"]
    return Record(
        created=utc_now(), edgeffnet=__version__, bundle=str(b.path.resolve()), bundle_created=manifest.get("created"),
        model={"spec": sp["spec"], "family": sp["family"], "phi": sp["phi"], "only": sp["only"],
               "resolution": sp["resolution"], "params": manifest["params"], "macs": macs,
               "flops": manifest["flops"], "scaling_check": manifest.get("scaling_check")},
        target=manifest["target"]["name"], runtime=runtime, baseline=baseline, precision=precision,
        bundle_precision=b.precision, mode=s.mode, batch=batch,
        device={"name": device_name, "kind": "CPU" if baseline else described.get("device", manifest["target"]["device"]),
                "runner": described, "cpu": host.cpu()},
        settings=asdict(s) | {"batch": batch, "requests": requests or 1,
                              "timing": "host perf_counter around each synchronous call" if requests is None
                              else f"{requests} asynchronous requests; the runtime's per-request latency"},
        tools=host.tools(), host=host.describe(), stats=stats, seconds=round(m.seconds, 4), throughput_ips=ips,
        achieved_gflops=achieved, peak=pk, fraction_of_peak=achieved / pk["gflops"] if achieved and pk else None,
        interrupted=m.interrupted, samples_ms=[round(x, 5) for x in m.samples_ms],
        weights=records.weights_of(manifest), fidelity=None if baseline else records.worst_fidelity(manifest))


def run(bundle: Bundle | str | Path, s: Settings, baselines: list[str] = (), progress=None,
        save_records: bool = True) -> tuple[list[Record], bool]:
    """Measure the bundle's artifact (then each baseline); save and return (records, interrupted).

    `progress(label)` is a context manager yielding a tick(fraction) callable. After Ctrl-C the partial
    record is saved (marked interrupted) and the remaining runtimes are skipped. Each record's
    `saved_to` says where it was written (None: not saved)."""
    s.check()
    b = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    names = runtimes(b.target.backend, list(baselines))
    batch = batch_for(b.manifest.to_dict(), s)
    x = sample_input(b, batch)
    out: list[Record] = []
    for runtime in names:
        logs.logger().info(f"{runtime}: loading")
        with logs.heartbeat(f"{runtime}: loading"):  # compiling for the device can take a while
            runner = load_runner(b, runtime, s, batch)
        label = f"{b.manifest.spec['spec']} {runtime} {s.mode}"
        with (progress(label) if progress else nullcontext()) as tick:
            queue = runner.queue(x) if s.mode == "throughput" else None
            if queue is not None:
                m = measure_async(queue, s.limits, tick)
            else:
                m = measure(runner.bound(x), s.limits, tick)
        if not m.samples_ms:  # interrupted during warm-up: nothing to keep
            return out, True
        rec = make_record(b, runtime, s, batch, m, runner.describe(), queue.requests if queue else None)
        rec.saved_to = records.save(b.path, rec) if save_records else None
        out.append(rec)
        if m.interrupted:
            return out, True
    return out, False


def bench(bundle: Bundle | str | Path, mode: str = "latency", iterations: int | None = None,
          seconds: float | None = None, warmup: float | None = None, threads: int | None = None,
          streams: int | None = None, batch: int | None = None, save: bool = True) -> Record:
    """Measure a bundle's artifact on its device (the Python API of `edgeffnet bench`); None: the default.

    Ctrl-C raises KeyboardInterrupt after saving the partial record."""
    given = {k: v for k, v in dict(iterations=iterations, seconds=seconds, warmup=warmup, threads=threads,
                                   streams=streams, batch=batch).items() if v is not None}
    recs, interrupted = run(bundle, Settings(mode=mode, **given), save_records=save)
    if interrupted:
        raise KeyboardInterrupt
    return recs[0]
