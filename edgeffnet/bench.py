"""`edgeffnet bench`: how fast a bundle's artifact really runs on its device, as a record.

Latency mode follows MLPerf single-stream: batch 1, one synchronous inference at a time, a warm-up, then
at least N iterations *and* at least S seconds, reported as nearest-rank percentiles (each one an
observed latency, as MLPerf's loadgen and OpenVINO's benchmark_app report them). Throughput mode keeps
the device busy the way its backend does best (OpenVINO: THROUGHPUT hint and its optimal number of
asynchronous requests) and counts images per second.

A measurement is a record, not a print: device, tool versions, settings, statistics, the model's MACs
and the achieved GFLOP/s against the profile's peak; it is saved in the bundle under bench/.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import __version__, bundle, host, targets
from .backends import get as backend
from .errors import UserError

RECORD = "edgeffnet-bench"
RECORD_FORMAT = 1
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
        if self.iterations < 1 or self.seconds < 0 or self.warmup < 0:
            raise UserError("--iterations must be at least 1 and --seconds/--warmup at least 0")
        for name in ("threads", "streams", "batch"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserError(f"--{name} must be at least 1, got {v}")


# -- statistics -----------------------------------------------------------------------------------

def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank: the smallest observation with at least p% of the sample at or below it."""
    return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]


def statistics(samples_ms: list[float]) -> dict:
    if not samples_ms:
        raise ValueError("no samples")
    s = sorted(samples_ms)
    a = np.asarray(s, dtype=np.float64)
    return {"count": len(s), "p50_ms": percentile(s, 50), "p90_ms": percentile(s, 90), "p99_ms": percentile(s, 99),
            "mean_ms": float(a.mean()), "std_ms": float(a.std(ddof=1)) if len(s) > 1 else 0.0,
            "min_ms": s[0], "max_ms": s[-1]}


# -- the loops -------------------------------------------------------------------------------------

@dataclass
class Measurement:
    samples_ms: list[float]
    seconds: float  # wall time of the timed phase
    count: int  # inferences completed in it
    interrupted: bool = False


def _done(count: int, elapsed_ns: int, s: Settings) -> float:
    """Progress in [0, 1]: both the iteration and the duration minimum must be met."""
    return min(1.0, count / s.iterations, elapsed_ns / (s.seconds * 1e9) if s.seconds else 1.0)


def measure(fn, s: Settings, tick=None, clock=time.perf_counter_ns) -> Measurement:
    """Time `fn()` one call at a time. Ctrl-C ends the run early and keeps what was measured."""
    samples: list[int] = []
    start = clock()
    gc_was = gc.isenabled()
    gc.disable()  # a collection inside the timed loop would show up as a tail latency of Python's, not the model's
    try:
        t = clock()
        while True:  # warm-up: at least one call, then until `warmup` seconds have passed
            fn()
            if clock() - t >= s.warmup * 1e9:
                break
        start = next_tick = clock()
        while True:
            t0 = clock()
            fn()
            t1 = clock()
            samples.append(t1 - t0)
            if len(samples) >= s.iterations and t1 - start >= s.seconds * 1e9:
                break
            if tick and t1 >= next_tick:
                tick(_done(len(samples), t1 - start, s))
                next_tick = t1 + 200_000_000
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if gc_was:
            gc.enable()
    end = clock()
    return Measurement([x / 1e6 for x in samples], (end - start) / 1e9, len(samples), interrupted)


def measure_async(start_one, wait_all, latencies_ms: list, s: Settings, tick=None) -> Measurement:
    """Keep an asynchronous queue full; throughput counts from the first submission to the last completion.
    Per-request latencies are the runtime's own (queueing included), as benchmark_app reports them."""
    clock = time.perf_counter_ns
    begin, count, interrupted = None, 0, False
    try:
        t = clock()
        while True:
            start_one()
            if clock() - t >= s.warmup * 1e9:
                break
        wait_all()
        latencies_ms.clear()
        begin = next_tick = clock()
        while True:
            start_one()  # blocks while every request is busy
            count += 1
            now = clock()
            if count >= s.iterations and now - begin >= s.seconds * 1e9:
                break
            if tick and now >= next_tick:
                tick(_done(count, now - begin, s))
                next_tick = now + 200_000_000
    except KeyboardInterrupt:
        interrupted = True
    wait_all()  # what was started finishes either way, and its time belongs to the run
    if begin is None:
        return Measurement([], 0.0, 0, True)
    return Measurement([float(x) for x in latencies_ms], (clock() - begin) / 1e9, len(latencies_ms), interrupted)


# -- peaks -----------------------------------------------------------------------------------------

CPUINFO_CLOCK = "/proc/cpuinfo cpu MHz (no cpufreq)"


def _max_clock_ghz() -> tuple[float | None, str]:
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        return khz / 1e6, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        mhz = host.cpu()["mhz"]
        # Without cpufreq (VMs, containers) /proc/cpuinfo's clock is all the OS says; see host_peak.
        return (mhz / 1e3 if mhz else None), CPUINFO_CLOCK


@lru_cache(maxsize=1)
def _sgemm_gflops(n: int = 1536, seconds: float = 1.0) -> float:
    """float32 matrix-product rate of this host through numpy's BLAS, best of repeated runs."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a  # threads up, caches warm
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ a
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def _amd_zen4() -> bool:
    info = host._cpuinfo()
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", info, re.M)
    family = re.search(r"^cpu family\s*:\s*(\d+)", info, re.M)
    # Family 19h with AVX-512 is Zen 4, which executes a 512-bit FMA as two 256-bit halves.
    return bool(vendor and family and vendor.group(1) == "AuthenticAMD" and int(family.group(1)) == 0x19)


def host_peak(precision: str, compute: str | None = "f32") -> dict | None:
    """Compute peak of this CPU in G(FL)OP/s: usable physical cores x max clock x FLOP/cycle/core.

    FLOP/cycle/core for fp32 is 2 FMA pipes x lanes x 2 (multiply and add): AVX-512 64 (32 on AMD Zen 4,
    whose pipes are 256 bits wide), AVX2+FMA 32, Arm NEON 16, else SSE's 8. INT8 counts 4x with
    VNNI/AMX (a 4-way dot product per lane), else 2x (pairwise vpmaddubsw). A reduced float type (bf16 or
    f16, as `compute`) counts 2x where the CPU has native instructions for it, else it runs at the fp32 rate.
    """
    c = host.cpu()
    ghz, clock_source = _max_clock_ghz()
    if not ghz:
        return None
    isa = set(c["isa"])
    cores = min(c["physical_cores"], c["usable_cpus"])
    if "avx512f" in isa:
        per_cycle, why = ((32, "AVX-512 on AMD Zen 4 (2x256-bit FMA)") if _amd_zen4()
                          else (64, "AVX-512 (2 FMA x 16 lanes x 2)"))
    elif {"avx2", "fma"} <= isa:
        per_cycle, why = 32, "AVX2 (2 FMA x 8 lanes x 2)"
    elif "asimd" in isa:
        per_cycle, why = 16, "NEON (2 FMA x 4 lanes x 2)"
    else:
        per_cycle, why = 8, "SSE (4 lanes x add + multiply)"
    if clock_source == CPUINFO_CLOCK:
        # A VM's /proc/cpuinfo shows the nominal clock, not the boost one (measured here: 2.596 GHz, with a
        # float32 matrix product at 205 GFLOP/s, which 2 cores x 32 FLOP/cycle only reach above 3.2 GHz).
        # A BLAS product never beats the FMA peak, so its rate gives a lower bound on the real clock.
        measured = _sgemm_gflops()
        implied = measured / (cores * per_cycle)
        if implied > ghz:
            clock_source = (f"a measured float32 matrix product ({measured:.0f} GFLOP/s), which needs at least "
                            f"{implied:.3f} GHz where /proc/cpuinfo says {ghz:.3f} GHz (no cpufreq: the boost "
                            f"clock is hidden)")
            ghz = implied
    factor = 1
    if precision == "int8":
        factor = 4 if isa & {"avx512_vnni", "avx_vnni", "amx_int8"} else 2
        why += f", int8 x{factor}"
    elif compute in ("f16", "bf16") and isa & {"avx512_fp16", "avx512_bf16", "amx_bf16"}:
        factor = 2
        why += f", {compute} x2"
    return {"gflops": round(cores * ghz * per_cycle * factor, 1),
            "detail": f"{cores} cores x {ghz:.3f} GHz x {per_cycle * factor} FLOP/cycle ({why})",
            "source": f"computed from this host: clock from {clock_source}; see edgeffnet/bench.py host_peak"}


def peak(manifest: dict, precision: str, baseline: bool) -> dict | None:
    """The profile's peak for what ran: a number (GOP/s) from its file, or 'host' computed here.

    Baselines run in fp32 on this host's CPU whatever the bundle's target is."""
    if baseline:
        return host_peak("fp32")
    t = manifest["target"]
    value = t.get("peak", {}).get(precision)
    if value == "host":
        return host_peak(precision, t.get("options", {}).get("inference_precision", {}).get(precision, "f32"))
    if isinstance(value, (int, float)):
        return {"gflops": float(value), "detail": f"{t['name']} profile, {precision}",
                "source": t["peak"].get("source", "")}
    return None


# -- runners ---------------------------------------------------------------------------------------

class TorchRunner:
    """PyTorch eager on the CPU: the model the bundle was built from, rebuilt from its spec and weights."""

    def __init__(self, manifest: dict, threads: int | None):
        import torch

        from . import weights as _weights
        from .graph import make_model
        from .scaling import parse_spec, with_resolution

        if threads:
            torch.set_num_threads(threads)
        spec = with_resolution(parse_spec(manifest["spec"]["spec"]), manifest["spec"]["resolution"])
        w = manifest["weights"]
        if w.get("random_init"):
            resolved = None
        else:
            source = "pretrained" if str(w["source"]).startswith("pretrained:") else w["source"]
            if source != "pretrained" and not Path(source).is_file():
                raise UserError(f"--baseline pytorch needs the bundle's weights, which are no longer at '{source}'")
            resolved = _weights.resolve(source, spec)
        self.model = make_model(spec, resolved, manifest["num_classes"], w.get("seed", 0))
        self.torch, self.device = torch, "CPU"

    def bound(self, x: np.ndarray):
        t, model, torch = self.torch.from_numpy(np.ascontiguousarray(x)), self.model, self.torch

        def run():
            with torch.inference_mode():
                return model(t)

        return run

    def describe(self) -> dict:
        return {"runtime": "pytorch", "version": self.torch.__version__, "mode": "eager, inference_mode",
                "threads": self.torch.get_num_threads()}


def load(path: Path, manifest: dict, runtime: str, s: Settings, batch: int):
    """The runner for `runtime`: the bundle's own backend (on its device, never a fallback) or a baseline."""
    if runtime == "pytorch":
        return TorchRunner(manifest, s.threads)
    if runtime == "onnxruntime":
        from .backends import onnxruntime as ort_backend

        return ort_backend.Runner(path / "model.sim.onnx", s.threads)
    t = manifest["target"]
    settings = {}
    if t["backend"] == "openvino":
        settings = {"hint": s.mode.upper(), "threads": s.threads, "streams": s.streams,
                    "batch": batch if manifest["input"]["dynamic_batch"] else None}
    return backend(t["backend"]).load(path, targets.of_bundle(manifest), manifest["precision"], fallback=False, **settings)


def sample_input(path: Path, manifest: dict, batch: int) -> np.ndarray:
    """A real photo view through the bundle's recipe: realistic activations (no all-zero shortcuts)."""
    from .photos import to_input
    from .preprocess import Preprocess

    shape = manifest["input"]["shape"]
    try:
        views = np.load(path / "reference.npz")["views"][:1]
        x = to_input(views, Preprocess.from_dict(manifest["preprocess"]))
    except (OSError, KeyError, ValueError):
        x = np.random.default_rng(0).standard_normal((1, *shape[1:]), dtype=np.float32)
    return np.ascontiguousarray(np.repeat(x, batch, axis=0), dtype=np.float32)


# -- the record ------------------------------------------------------------------------------------

def make_record(path: Path, manifest: dict, runtime: str, s: Settings, batch: int, m: Measurement,
                described: dict, requests: int | None = None) -> dict:
    baseline = runtime in BASELINES
    precision = "fp32" if baseline else manifest["precision"]
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
    return {
        "record": RECORD, "format": RECORD_FORMAT, "edgeffnet": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(path.resolve()), "bundle_created": manifest.get("created"),
        "model": {"spec": sp["spec"], "family": sp["family"], "phi": sp["phi"], "only": sp["only"],
                  "resolution": sp["resolution"], "params": manifest["params"], "macs": macs,
                  "flops": manifest["flops"], "scaling_check": manifest.get("scaling_check")},
        "target": manifest["target"]["name"], "runtime": runtime, "baseline": baseline,
        "precision": precision, "bundle_precision": manifest["precision"], "mode": s.mode, "batch": batch,
        "device": {"name": device_name,
                   "kind": "CPU" if baseline else described.get("device", manifest["target"]["device"]),
                   "runner": described, "cpu": host.cpu()},
        "settings": asdict(s) | {"batch": batch, "requests": requests or 1,
                                 "timing": "host perf_counter around each synchronous call" if requests is None
                                 else f"{requests} asynchronous requests; the runtime's per-request latency"},
        "tools": host.tools(), "host": host.describe(),
        "stats": stats, "seconds": round(m.seconds, 4), "throughput_ips": ips,
        "achieved_gflops": achieved, "peak": pk,
        "fraction_of_peak": achieved / pk["gflops"] if achieved and pk else None,
        "interrupted": m.interrupted,
        "samples_ms": [round(x, 5) for x in m.samples_ms],
    }


def record_path(bundle_dir: Path, runtime: str, mode: str) -> Path:
    return bundle_dir / "bench" / f"{runtime}-{mode}.json"


def save(bundle_dir: Path, record: dict) -> Path | None:
    """bench/RUNTIME-MODE.json, replaced whole (a rebuild of the bundle removes it with the old artifact)."""
    dest = record_path(bundle_dir, record["runtime"], record["mode"])
    try:
        dest.parent.mkdir(exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
        tmp.replace(dest)
    except OSError:
        return None  # a read-only bundle still gets measured; the caller says it was not saved
    return dest


def load_record(path: Path) -> dict | None:
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return r if isinstance(r, dict) and r.get("record") == RECORD else None


# -- the command -----------------------------------------------------------------------------------

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


def run(bundle_dir: str | Path, s: Settings, baselines: list[str] = (), progress=None, echo=None,
        save_records: bool = True) -> tuple[list[dict], bool]:
    """Measure the bundle's artifact (then each baseline); save and return (records, interrupted).

    `progress(label)` is a context manager yielding a tick(fraction) callable. After Ctrl-C the partial
    record is saved (marked interrupted) and the remaining runtimes are skipped."""
    s.check()
    path = Path(bundle_dir)
    if not path.exists():
        raise UserError(f"bundle '{path}' does not exist; build one with edgeffnet build")
    manifest = bundle.read_manifest(path)
    names = runtimes(manifest["target"]["backend"], list(baselines))
    batch = batch_for(manifest, s)
    x = sample_input(path, manifest, batch)
    records = []
    for runtime in names:
        if echo:
            echo(f"{runtime}: loading")
        runner = load(path, manifest, runtime, s, batch)
        label = f"{manifest['spec']['spec']} {runtime} {s.mode}"
        with (progress(label) if progress else _no_progress()) as tick:
            if s.mode == "throughput" and hasattr(runner, "queue"):
                start_one, wait_all, done, requests = runner.queue(x)
                m = measure_async(start_one, wait_all, done, s, tick)
            else:
                m = measure(runner.bound(x), s, tick)
                requests = None
        if not m.samples_ms:  # interrupted during warm-up: nothing to keep
            return records, True
        rec = make_record(path, manifest, runtime, s, batch, m, runner.describe(), requests)
        rec["saved"] = str(save(path, rec) or "") if save_records else ""
        records.append(rec)
        if m.interrupted:
            return records, True
    return records, False


@contextmanager
def _no_progress():
    yield None


@contextmanager
def progress_bar(console, label: str):
    """A rich bar on interactive terminals. It refreshes only when ticked (at most 5 Hz): rich's own
    refresh thread would compete with the timed loop for the interpreter."""
    if not console.is_terminal:
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


# -- presentation ----------------------------------------------------------------------------------

def ms(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def summary(r: dict) -> str:
    st, pct = r["stats"], r["fraction_of_peak"]
    line = (f"p50 {ms(st['p50_ms'])} ms  p90 {ms(st['p90_ms'])} ms  p99 {ms(st['p99_ms'])} ms  "
            f"{r['throughput_ips']:.1f} img/s  {r['achieved_gflops']:.1f} GFLOP/s")
    line += f" ({pct:.1%} of peak)" if pct is not None else ""
    return line + (f"  [interrupted after {st['count']}]" if r["interrupted"] else "")


def table(records: list[dict]):
    """One column per runtime, one row per statistic: narrow enough for any terminal."""
    from rich.table import Table

    r0, m0 = records[0], records[0]["model"]
    t = Table(title=f"{m0['spec']} ({m0['macs'] / 1e9:.3f} GMACs, {m0['params'] / 1e6:.2f} M params) on "
                    f"{r0['device']['name']} ({r0['device']['kind']}), {r0['mode']}, batch {r0['batch']}")
    t.add_column("")
    for r in records:
        t.add_column(f"{r['runtime']} {r['precision']}" + (" (interrupted)" if r["interrupted"] else ""),
                     justify="right")
    for key in ("p50", "p90", "p99", "mean", "std", "min", "max"):
        t.add_row(f"{key} ms", *(ms(r["stats"][f"{key}_ms"]) for r in records))
    t.add_row("iterations", *(str(r["stats"]["count"]) for r in records))
    t.add_row("images/s", *(f"{r['throughput_ips']:.1f}" for r in records))
    t.add_row("GFLOP/s", *(f"{r['achieved_gflops']:.1f}" for r in records))
    t.add_row("of peak", *("" if r["fraction_of_peak"] is None else
                           f"{r['fraction_of_peak']:.1%} of {r['peak']['gflops']:.0f}" for r in records))
    return t
