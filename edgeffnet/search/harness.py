"""Build and time one spec on a target: the one place this package calls edgeffnet's build and bench.

Every timed run holds an exclusive lock on the target (a file under the edgeffnet cache), so two
searches, fits or a search and its own confirmation never time on one device at the same time: two
timed runs sharing cores would each measure the other.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import bench, bundle, targets
from ..build import BuildRequest, build
from ..errors import UserError

METRICS = ("p50", "p90", "p99")


@dataclass(frozen=True)
class BenchSettings:
    """Shorter than `edgeffnet bench`'s defaults (a search times dozens of models); the same as sweep's."""

    iterations: int = 200
    seconds: float = 3.0
    warmup: float = 1.0
    threads: int | None = None

    def as_bench(self) -> bench.Settings:
        s = bench.Settings(mode="latency", iterations=self.iterations, seconds=self.seconds, warmup=self.warmup,
                           threads=self.threads)
        s.check()
        return s

    def to_dict(self) -> dict:
        return asdict(self)


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise UserError(f"--metric takes {', '.join(METRICS)}, not '{metric}'")
    return metric


def check_target(target: str, precision: str | None) -> tuple[str, str]:
    """(profile name, precision), refused before any work."""
    profile = targets.load(target)
    return profile.name, profile.check_precision(precision)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Whole or not at all: a reader (or a resumed search) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make results private to whoever searched
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def device_lock(target: str):
    """Exclusive while held, across processes; the kernel drops it when a holder dies. The lock file is
    host-wide (the system's temporary directory), not per cache: two runs with different caches still
    share the one device."""
    path = Path(tempfile.gettempdir()) / "edgeffnet-locks" / f"{Path(target).stem}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(path.parent, 0o1777)  # every user's runs take the same lock
    except OSError:
        pass
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def build_bundle(spec: str, target: str, precision: str, dest: Path, echo=None) -> Path:
    """The verified bundle for `spec` at `dest`, built through the stage cache unless it is there already."""
    if bundle.is_bundle(dest):
        m = bundle.read_manifest(dest)
        if (m["spec"]["spec"], m["target"]["name"], m["precision"]) == (spec, target, precision):
            return dest
    return Path(build(BuildRequest(spec=spec, target=target, precision=precision, output=str(dest)),
                      echo=echo or (lambda m: None)))


def time_bundle(bundle_dir: Path, settings: BenchSettings, progress=None) -> dict:
    """One latency measurement (batch 1, synchronous) under the device lock. Ctrl-C: KeyboardInterrupt,
    after bench has saved its partial record marked interrupted (never used as a result here)."""
    manifest = bundle.read_manifest(bundle_dir)
    with device_lock(manifest["target"]["name"]):
        records, interrupted = bench.run(bundle_dir, settings.as_bench(), [], progress=progress)
    if interrupted or not records:
        raise KeyboardInterrupt
    r = records[0]
    return {"p50_ms": r["stats"]["p50_ms"], "p90_ms": r["stats"]["p90_ms"], "p99_ms": r["stats"]["p99_ms"],
            "iterations": r["stats"]["count"], "record": r.get("saved") or "", "measured": r["created"]}


def describe_bundle(bundle_dir: Path) -> dict:
    m = bundle.read_manifest(bundle_dir)
    return {"macs": m["macs"], "params": m["params"], "resolution": m["spec"]["resolution"],
            "bundle": str(bundle_dir)}


def build_and_measure(spec: str, target: str, precision: str, dest: Path, settings: BenchSettings, echo=None,
                      progress=None) -> dict:
    """Build (cached), verify and time `spec`: its latency percentiles, MACs, params and bundle path."""
    path = build_bundle(spec, target, precision, dest, echo)
    return {"spec": spec, **describe_bundle(path), **time_bundle(path, settings, progress)}
