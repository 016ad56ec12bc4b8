"""`edgeffnet bench`: how fast a bundle's artifact really runs on its device, as a record.

Latency mode follows MLPerf single-stream: batch 1, one synchronous inference at a time, a warm-up, then
at least N iterations *and* at least S seconds, reported as nearest-rank percentiles (each one an
observed latency, as MLPerf's loadgen and OpenVINO's benchmark_app report them). Throughput mode keeps
the device busy the way its backend does best (OpenVINO: THROUGHPUT hint and its optimal number of
asynchronous requests) and counts images per second.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeffnet.backends import RunSettings, get
from edgeffnet.bundle import Bundle, check_input
from edgeffnet.core import host, logs
from edgeffnet.core.errors import UserError
from edgeffnet.core.files import utc_now
from edgeffnet.core.version import __version__
from edgeffnet.measure import device_state, records
from edgeffnet.measure.peak import peak
from edgeffnet.measure.records import Record
from edgeffnet.measure.statistics import statistics
from edgeffnet.measure.timing import Limits, Measurement, measure, measure_async

BASELINES = ("pytorch", "onnxruntime")
PROFILE_ITERATIONS = 50  # profiled inferences of --profile: a median per layer that one slow run cannot move
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
    profile: int = 0  # after the timed run, this many inferences with the runtime's profiler (0: off)

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise UserError(f"--iterations must be a whole number of at least 1, got {self.iterations!r}")
        for name in ("seconds", "warmup"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 86400:
                raise UserError(f"--{name} must be a number of seconds between 0 and 86400, got {v!r}")
        if not isinstance(self.profile, int) or isinstance(self.profile, bool) or self.profile < 0:
            raise UserError(f"--profile-iterations must be a whole number of at least 1, got {self.profile!r}")
        for name in ("threads", "streams", "batch"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise UserError(f"--{name} must be at least 1, got {v}")

    @property
    def limits(self) -> Limits:
        return Limits(self.iterations, self.seconds, self.warmup)

    def run_settings(self, batch: int | None) -> RunSettings:
        return RunSettings(hint=self.mode.upper(), threads=self.threads, streams=self.streams, batch=batch)


# Runs of many models (sweep, search, fit) time each one for less than a lone `edgeffnet bench` does, so
# that dozens of models finish in minutes.
SHORT = Settings(iterations=200, seconds=3.0, warmup=1.0)


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
            raise UserError(
                f"latency mode runs batch 1; this bundle has a static batch of {fixed}: use --mode "
                f"throughput, or build with --batch 1 or --dynamic-batch"
            )
        return 1
    if fixed is not None and s.batch not in (None, fixed):
        raise UserError(f"this bundle has a static batch of {fixed}; --batch {s.batch} needs a --dynamic-batch build")
    return fixed or s.batch or 1


def load_runner(b: Bundle, runtime: str, s: Settings, batch: int):
    """The runner for `runtime`: the bundle's own backend (on its device, never a fallback) or a baseline
    (fp32, on this host's CPU)."""
    dynamic = b.manifest.input["dynamic_batch"]
    precision = b.precision if runtime == b.target.backend else "fp32"
    runner = get(runtime).load(b.path, b.target, precision, s.run_settings(batch if dynamic else None))
    check_input(runner, b.manifest.input["shape"], f"{b.path}'s {runtime} artifact")
    return runner


def sample_input(b: Bundle, batch: int) -> np.ndarray:
    """A real photo view through the bundle's recipe: realistic activations (no all-zero shortcuts)."""
    try:
        x = b.reference()[0][:1]
    except UserError:
        x = np.random.default_rng(0).standard_normal((1, *b.manifest.input["shape"][1:]), dtype=np.float32)
    return np.ascontiguousarray(np.repeat(x, batch, axis=0), dtype=np.float32)


def make_record(
    b: Bundle, runtime: str, s: Settings, batch: int, m: Measurement, described: dict, requests: int | None = None
) -> Record:
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
        created=utc_now(),
        edgeffnet=__version__,
        bundle=str(b.path.resolve()),
        bundle_created=manifest.get("created"),
        model={
            "spec": sp["spec"],
            "family": sp["family"],
            "phi": sp["phi"],
            "only": sp["only"],
            "resolution": sp["resolution"],
            "params": manifest["params"],
            "macs": macs,
            "flops": manifest["flops"],
            "scaling_check": manifest.get("scaling_check"),
        },
        target=manifest["target"]["name"],
        runtime=runtime,
        baseline=baseline,
        precision=precision,
        bundle_precision=b.precision,
        mode=s.mode,
        batch=batch,
        device={
            "name": device_name,
            "kind": "CPU" if baseline else described.get("device", manifest["target"]["device"]),
            "runner": described,
            "cpu": host.cpu(),
        },
        settings=asdict(s)
        | {
            "batch": batch,
            "requests": requests or 1,
            "timing": "host perf_counter around each synchronous call"
            if requests is None
            else f"{requests} asynchronous requests; the runtime's per-request latency",
        },
        tools=host.tools(),
        host=host.describe(),
        stats=stats,
        seconds=round(m.seconds, 4),
        throughput_ips=ips,
        achieved_gflops=achieved,
        peak=pk,
        fraction_of_peak=achieved / pk["gflops"] if achieved and pk else None,
        interrupted=m.interrupted,
        samples_ms=[round(x, 5) for x in m.samples_ms],
        weights=records.weights_of(manifest),
        fidelity=None if baseline else records.worst_fidelity(manifest),
    )


def attach_profile(b: Bundle, runner, x: np.ndarray, rec: Record, iterations: int, trace: Path | None = None) -> None:
    """record["profile"]: the runtime's per-node profile mapped onto the bundle's layer table, checked
    against the record's own unprofiled inferences (timed just before, by the same runner), with the
    device's roofline; `trace`: one inference as Chrome trace JSON.

    The unprofiled inferences are not interleaved with the profiled ones: the profiled model is a second
    compiled model, and alternating two models on a busy CPU slowed the unprofiled one 2-3x (its threads
    and caches cold after the other's turn: min 11 ms against 4 ms back to back, Lite0 at 64 px here)."""
    from edgeffnet.backends import Profiling
    from edgeffnet.core.files import atomic_write_json
    from edgeffnet.measure import profile
    from edgeffnet.measure.bandwidth import sustained

    if not isinstance(runner, Profiling):
        raise UserError(f"{rec.runtime} has no profiler edgeffnet reads; bench without --profile")
    table = b.layer_table()
    profiled = runner.profile(x, iterations)
    ceilings = {p: (peak(b.manifest.to_dict(), p, False) or {}).get("gflops") for p in b.target.precisions}
    roof = {
        "compute_gops": (rec.peak or {}).get("gflops"),
        "compute_source": (rec.peak or {}).get("detail"),
        "ceilings_gops": ceilings,
        "bandwidth": sustained(),
    }
    roof["bandwidth_gbs"] = roof["bandwidth"]["gbs"]
    rec.extra["profile"] = profile.analyse(
        table,
        profiled.runs,
        b.precision,
        rec.runtime,
        rec.samples_ms,
        roof,
        profiled.wall_ms,
        statistic=profiled.statistic,
        iterations=profiled.iterations,
    )
    if trace is not None:
        try:
            atomic_write_json(trace, profile.trace(profiled.runs, rec.extra["profile"]), indent=None)
        except OSError as e:
            raise UserError(f"cannot write --trace {trace}: {e.strerror or e}") from None


def cold_start(b: Bundle, runtime: str, s: Settings, batch: int, x: np.ndarray):
    """(runner, load ms, first inference ms): what a device pays before its first answer. Loading reads and
    compiles the artifact; the first inference, before any warm-up, meets cold caches and lazy kernels."""
    t0 = time.perf_counter_ns()
    runner = load_runner(b, runtime, s, batch)
    t1 = time.perf_counter_ns()
    infer = runner.bound(x)  # binding the input is not inference: outside the timed call
    t2 = time.perf_counter_ns()
    infer()
    t3 = time.perf_counter_ns()
    return runner, round((t1 - t0) / 1e6, 3), round((t3 - t2) / 1e6, 3)


# A compile stage writes notes for people beside its artifact (an engine's facts, a README): not loaded.
NOTES = (".json", ".md", ".txt", ".log")


def artifact_of(b: Bundle, runtime: str, described: dict) -> dict | None:
    """The files `runtime` loads from the bundle, with their sizes on disk: for the bundle's own backend the
    compile stage's files less its notes (an IR's .xml and .bin, an engine) or the graph it runs as it is;
    for a baseline the graph its runner names. None: it loads no file of the bundle (PyTorch builds its
    module from the spec and weights)."""
    manifest = b.manifest.to_dict()
    compiled = (manifest.get("stages") or {}).get("compile") or {}
    if runtime == manifest["target"]["backend"]:
        names = [n for n in compiled.get("files") or [] if not str(n).endswith(NOTES)] or [compiled.get("runs")]
    else:
        names = [described.get("graph")]
    sizes = {}
    for name in names:
        if not isinstance(name, str) or not name or Path(name).name != name:
            continue  # a bare file name of the bundle's, nothing else
        path = Path(b.path) / name
        if path.is_file():
            sizes[name] = path.stat().st_size
    return {"files": sizes, "bytes": sum(sizes.values())} if sizes else None


def add_start_and_state(rec: Record, b: Bundle, load_ms: float, first_ms: float, memory: dict, state: dict) -> None:
    """Record format 2's fields: start-up, peak memory, the artifact's size, the device's state around it."""
    rec.load_ms, rec.first_inference_ms, rec.memory, rec.device_state = load_ms, first_ms, memory, state
    rec.artifact = artifact_of(b, rec.runtime, rec.device.get("runner") or {})


def run(
    bundle: Bundle | str | Path,
    s: Settings,
    baselines: list[str] = (),
    progress=None,
    save_records: bool = True,
    trace: Path | None = None,
) -> tuple[list[Record], bool]:
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
        state, memory = device_state.Window(), device_state.Memory()
        with logs.heartbeat(f"{runtime}: loading"):  # compiling for the device can take a while
            runner, load_ms, first_ms = cold_start(b, runtime, s, batch, x)
        label = f"{b.manifest.spec['spec']} {runtime} {s.mode}"
        with progress(label) if progress else nullcontext() as tick:
            queue = runner.queue(x) if s.mode == "throughput" else None
            if queue is not None:
                m = measure_async(queue, s.limits, tick)
            else:
                m = measure(runner.bound(x), s.limits, tick)
        if not m.samples_ms:  # interrupted during warm-up: nothing to keep
            return out, True
        rec = make_record(b, runtime, s, batch, m, runner.describe(), queue.requests if queue else None)
        # The device's state and peak memory are the timed run's: the profiler compiles a second model after it.
        add_start_and_state(rec, b, load_ms, first_ms, memory.peak(), state.close())
        if s.profile and runtime == b.target.backend and not m.interrupted:
            attach_profile(b, runner, x, rec, s.profile, trace)
        runner = queue = None  # the next runtime's memory is its own
        rec.saved_to = records.save(b.path, rec) if save_records else None
        out.append(rec)
        if m.interrupted:
            return out, True
    return out, False


def bench(
    bundle: Bundle | str | Path,
    mode: str = "latency",
    iterations: int | None = None,
    seconds: float | None = None,
    warmup: float | None = None,
    threads: int | None = None,
    streams: int | None = None,
    batch: int | None = None,
    save: bool = True,
    profile: bool | int = False,
    trace: str | Path | None = None,
) -> Record:
    """Measure a bundle's artifact on its device (the Python API of `edgeffnet bench`); None: the default.

    Ctrl-C raises KeyboardInterrupt after saving the partial record."""
    given = {
        k: v
        for k, v in dict(
            iterations=iterations, seconds=seconds, warmup=warmup, threads=threads, streams=streams, batch=batch
        ).items()
        if v is not None
    }
    if profile or trace:  # True: the default count of profiled inferences
        given["profile"] = PROFILE_ITERATIONS if profile is True or not profile else int(profile)
    recs, interrupted = run(
        bundle, Settings(mode=mode, **given), save_records=save, trace=Path(trace) if trace else None
    )
    if interrupted:
        raise KeyboardInterrupt
    return recs[0]
