"""A measurement is a record: device, tool versions, settings, statistics, every sample.

Saved as BUNDLE/bench/RUNTIME-MODE.json (the newest replaces the previous one). Format 2 adds the start-up
(load time, first inference), the process's peak memory, the artifact's size, the device's state around
the measurement and, from an interleaved sweep, the spread across rounds; format 1 records (without them)
are still read. `Record.from_dict` reads a record back, and a file of another format is one line saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING as _MISSING
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edgeffnet.core import formats
from edgeffnet.core.errors import UserError
from edgeffnet.core.files import atomic_write_json
from edgeffnet.core.layout import BENCH
from edgeffnet.core.untrusted import check_fields, read_json

RECORD = "edgeffnet-bench"
RECORD_FORMAT = 2
READABLE_FORMATS = (1, 2)
BENCH_RECORD = formats.Format(
    "bench record",
    "record",
    READABLE_FORMATS,
    "measure again with edgeffnet bench",
    tag=RECORD,
    version_key="format",
    noun="bench record format",
)


@dataclass
class Record:
    created: str
    edgeffnet: str
    bundle: str  # the measured bundle's path
    bundle_created: str | None
    model: dict  # spec, family, phi, only, resolution, params, macs, flops, scaling_check
    target: str
    runtime: str
    baseline: bool
    precision: str  # what ran (baselines: fp32)
    bundle_precision: str
    mode: str  # latency | throughput
    batch: int
    device: dict  # name, kind, the runner's own description, the host CPU
    settings: dict
    tools: dict
    host: dict
    stats: dict  # count, p50/p90/p99/mean/std/min/max in ms
    seconds: float
    throughput_ips: float | None
    achieved_gflops: float | None
    peak: dict | None
    fraction_of_peak: float | None
    interrupted: bool
    samples_ms: list = field(repr=False)
    # What the measured bundle computes, so a report can say it beside the speed (older records lack them):
    weights: dict = field(default_factory=dict)  # source, random_init
    fidelity: dict | None = None  # the manifest's fidelity row that agrees least with FP32 (FP16/INT8)
    # Format 2: how the measurement started and what surrounded it (None in format 1 records):
    load_ms: float | None = None  # reading and compiling the artifact: the backend's load, timed
    first_inference_ms: float | None = None  # the first inference after loading (cold), before any warm-up
    memory: dict | None = None  # device_state.Memory.peak(): baseline, peak and increase in MiB, and how
    artifact: dict | None = None  # files: {name: bytes} the runtime loads from the bundle, bytes: their sum
    device_state: dict | None = None  # device_state.Window.close(): before, after, others' CPU share, busy
    rounds: dict | None = None  # an interleaved sweep's per-round p50s and the interval for the median
    record: str = RECORD
    format: int = RECORD_FORMAT
    extra: dict = field(default_factory=dict)  # keys others add (a farm's node, ...), kept as they were

    # -- the figures people ask for ------------------------------------------------------------------
    @property
    def p50_ms(self) -> float:
        return float(self.stats["p50_ms"])

    @property
    def p90_ms(self) -> float:
        return float(self.stats["p90_ms"])

    @property
    def p99_ms(self) -> float:
        return float(self.stats["p99_ms"])

    @property
    def images_per_s(self) -> float | None:
        return self.throughput_ips

    @property
    def profile(self) -> dict | None:
        """Where the time went (bench --profile): layers, by_role, mapped_fraction, roofline; else None."""
        profile = self.extra.get("profile")
        return profile if isinstance(profile, dict) else None

    # -- JSON ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        extra: dict = d.pop("extra")
        head = {"record": d.pop("record"), "format": d.pop("format")}
        return head | d | extra

    @classmethod
    def from_dict(cls, d: dict, where: str = "record") -> Record:
        if not BENCH_RECORD.is_tagged(d):
            raise UserError(f"{where} is not an edgeffnet bench record")
        names = {f.name for f in fields(cls)} - {"extra"}
        required = [f.name for f in fields(cls) if f.name != "extra" and f.default is f.default_factory is _MISSING]
        formats.load(BENCH_RECORD, d, where, required)
        _check_entries(d, where)
        check_fields(cls, d, where)
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})


# What a report reads inside a record, and which of it are numbers: a record edited by hand or cut short
# is refused with what it lacks, not met as a KeyError in the middle of a table.
_ENTRIES = {
    "model": (("spec", "family", "resolution"), ("macs", "params", "flops")),
    "device": (("name", "kind", "cpu"), ()),
    "stats": ((), ("count", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms")),
    "settings": ((), ()),
    "tools": ((), ()),
    "host": ((), ()),
}


def _check_entries(d: dict, where: str) -> None:
    def damaged(why: str) -> UserError:
        return UserError(f"{where}: {why}; measure again with edgeffnet bench")

    for entry, (keys, numbers) in _ENTRIES.items():
        value = d[entry]
        if not isinstance(value, dict):
            raise damaged(f"its '{entry}' entry is not an object")
        missing = [k for k in keys + numbers if k not in value]
        if missing:
            raise damaged(f"its '{entry}' entry lacks {', '.join(missing)}")
        bad = [k for k in numbers if isinstance(value[k], bool) or not isinstance(value[k], (int, float))]
        if bad:
            raise damaged(f"its '{entry}' entry has a {bad[0]} that is not a number")
    for entry in ("bundle", "runtime", "mode", "precision", "created", "target"):
        if not isinstance(d[entry], str):
            raise damaged(f"its '{entry}' entry is not text")
    # What a report writes as text and sorts by: a number or a list there would fail the whole report.
    for entry, keys in (("model", ("spec", "family")), ("device", ("name", "kind"))):
        bad = [k for k in keys if not isinstance(d[entry][k], str)]
        if bad:
            raise damaged(f"its '{entry}' entry has a {bad[0]} that is not text")
    if not isinstance(d["model"]["resolution"], int) or isinstance(d["model"]["resolution"], bool):
        raise damaged("its 'model' entry has a resolution that is not a whole number")
    if d["mode"] not in ("latency", "throughput"):
        raise damaged(f"its mode {d['mode'][:20]!r} is neither latency nor throughput")
    stats = d["stats"]
    if any(stats[k] < 0 for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "count")):
        raise damaged("its 'stats' entry has a negative number")
    cpu = d["device"]["cpu"]
    if not isinstance(cpu, dict) or not isinstance(cpu.get("isa", []), list):
        raise damaged("its 'device' entry has a cpu that is not an object")
    _check_format2(d, damaged)


def _check_format2(d: dict, damaged: Callable[[str], UserError]) -> None:
    """Format 2's entries are optional (None: not measured), but of their type where present."""
    for entry in ("load_ms", "first_inference_ms"):
        v = d.get(entry)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise damaged(f"its '{entry}' entry is not a number")
    for entry in ("memory", "artifact", "device_state", "rounds"):
        if d.get(entry) is not None and not isinstance(d[entry], dict):
            raise damaged(f"its '{entry}' entry is not an object")
    interval = (d.get("rounds") or {}).get("interval_ms")
    if interval is not None and not (
        isinstance(interval, list)
        and len(interval) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval)
    ):
        raise damaged("its 'rounds' entry has an interval that is not two numbers")


def weights_of(manifest: dict) -> dict:
    w = manifest.get("weights") or {}
    return {"source": w.get("source", "unknown"), "random_init": bool(w.get("random_init"))}


def worst_fidelity(manifest: dict) -> dict | None:
    """The fidelity row (precision graph or compiled artifact) that agrees least with FP32; None for FP32."""
    rows = (manifest.get("fidelity") or {}).get("rows") or []
    numbers = ("top1_agreement", "cosine_mean")
    rows = [
        r
        for r in rows
        if isinstance(r, dict)
        and all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for k in numbers)
    ]
    if not rows:
        return None
    worst = min(rows, key=lambda r: (r["top1_agreement"], r["cosine_mean"]))
    return {
        k: worst[k]
        for k in (
            "artifact",
            "views",
            "top1_agreement",
            "top5_overlap",
            "cosine_mean",
            "confident_views",
            "confident_top1_agreement",
        )
        if k in worst
    }


def record_path(bundle_dir: Path, runtime: str, mode: str) -> Path:
    return Path(bundle_dir) / BENCH / f"{runtime}-{mode}.json"


def save(bundle_dir: Path, record: Record) -> Path | None:
    """bench/RUNTIME-MODE.json, replaced whole (a rebuild of the bundle removes it with the old artifact)."""
    dest = record_path(bundle_dir, record.runtime, record.mode)
    try:
        dest.parent.mkdir(exist_ok=True)
        atomic_write_json(dest, record.to_dict())
    except OSError:
        return None  # a read-only bundle still gets measured; the caller says it was not saved
    return dest


def read(path: Path) -> Record | None:
    """The record in `path`; None for a JSON file that is no bench record (a manifest, an eval result); a
    UserError for a record that is damaged, or a file that cannot be read as JSON (read by untrusted's
    rules: a regular file, capped, bounded nesting)."""
    d = read_json(path, BENCH_RECORD.cap, BENCH_RECORD.what, kind=None)
    if not BENCH_RECORD.is_tagged(d):
        return None
    return Record.from_dict(d, f"'{path}'")


def load(path: Path) -> Record | None:
    """The record in `path`, or None for a file that is not a readable record of this format."""
    try:
        return read(path)
    except UserError:
        return None
