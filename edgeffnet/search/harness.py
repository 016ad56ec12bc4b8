"""Build and time one spec on a target: the one place this package calls edgeffnet's Python API
(`edgeffnet.build`, `edgeffnet.bench`, `edgeffnet.Bundle`).

Every timed run holds an exclusive lock on the target (a host-wide file), so two searches, fits, or a
search and its own confirmation never time on one device at the same time: two timed runs sharing cores
would each measure the other.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import edgeffnet
from edgeffnet.bundle import is_bundle
from edgeffnet.core import files, logs
from edgeffnet.core.errors import UserError
from edgeffnet.measure.bench import SHORT, Settings
from edgeffnet.measure.records import Record
from edgeffnet.specs import targets

METRICS = ("p50", "p90", "p99")


@dataclass(frozen=True)
class BenchSettings:
    """Shorter than `edgeffnet bench`'s defaults (a search times dozens of models): measure/bench.py's SHORT."""

    iterations: int = SHORT.iterations
    seconds: float = SHORT.seconds
    warmup: float = SHORT.warmup
    threads: int | None = None

    def check(self) -> None:
        Settings(
            mode="latency", iterations=self.iterations, seconds=self.seconds, warmup=self.warmup, threads=self.threads
        ).check()

    def to_dict(self) -> dict:
        return asdict(self)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Whole or not at all (a resumed search never reads half a file), into a folder made if missing."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return files.atomic_write_bytes(path, data)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise UserError(f"--metric takes {', '.join(METRICS)}, not '{metric}'")
    return metric


def check_target(target: str, precision: str | None) -> tuple[str, str]:
    """(profile name, precision), refused before any work."""
    profile = targets.load(target)
    return profile.name, profile.check_precision(precision)


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


@contextmanager
def _builds_off_the_console():
    """A search builds dozens of bundles: their stage lines stay in each bundle's build.log, not on the
    console (the file handler is not a plain StreamHandler and keeps logging)."""
    log = logs.logger()
    console = [h for h in log.handlers if type(h) is logging.StreamHandler]
    for h in console:
        log.removeHandler(h)
    try:
        yield
    finally:
        for h in console:
            log.addHandler(h)


def build_bundle(spec: str, target: str, precision: str, dest: Path) -> Path:
    """The verified bundle for `spec` at `dest`, built through the stage cache unless it is there already."""
    if is_bundle(dest):
        b = edgeffnet.Bundle.open(dest)
        if (b.manifest.spec["spec"], b.target.name, b.precision) == (spec, target, precision):
            return dest
    with _builds_off_the_console():
        return edgeffnet.build(spec, target=target, precision=precision, output=dest).path


def bench_locked(bundle_dir: Path, settings: BenchSettings, save: bool = True, profile: bool = False) -> Record:
    """`edgeffnet.bench`'s record of one latency run (batch 1, synchronous) under the device lock; with
    `profile`, also its per-layer profile. Ctrl-C: KeyboardInterrupt, after bench has saved its partial
    record marked interrupted (when `save`)."""
    b = edgeffnet.Bundle.open(bundle_dir)
    with device_lock(b.target.name):
        return edgeffnet.bench(
            b,
            mode="latency",
            iterations=settings.iterations,
            seconds=settings.seconds,
            warmup=settings.warmup,
            threads=settings.threads,
            save=save,
            profile=profile,
        )


def time_bundle(bundle_dir: Path, settings: BenchSettings, keep: Path | None = None) -> dict:
    """One latency measurement (bench_locked, its record saved; an interrupted one is never used as a
    result here).

    The bundle keeps only its newest record, and a search times a bundle several times (paired timing,
    confirmation), so the record a result came from is also written to `keep`."""
    r = bench_locked(bundle_dir, settings)
    if keep is not None:
        atomic_write_text(keep, json.dumps(r.to_dict(), indent=1, default=str) + "\n")
    return {
        "p50_ms": r.p50_ms,
        "p90_ms": r.p90_ms,
        "p99_ms": r.p99_ms,
        "iterations": r.stats["count"],
        "record": str(keep or getattr(r, "saved_to", None) or ""),
        "measured": r.created,
    }


def describe_bundle(bundle_dir: Path) -> dict:
    m = edgeffnet.Bundle.open(bundle_dir).manifest
    return {"macs": m.macs, "params": m.params, "resolution": m.spec["resolution"], "bundle": str(bundle_dir)}


def build_and_measure(
    spec: str, target: str, precision: str, dest: Path, settings: BenchSettings, keep: Path | None = None
) -> dict:
    """Build (cached), verify and time `spec`: its latency percentiles, MACs, params and bundle path."""
    path = build_bundle(spec, target, precision, dest)
    return {"spec": spec, **describe_bundle(path), **time_bundle(path, settings, keep)}
