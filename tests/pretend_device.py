"""A pretend device for search and fit tests: `harness.build_and_measure` and `harness.time_bundle`
stand-ins whose latency is a function of the spec, so a search's logic runs without a build or a timing.

Also the quick bench settings those tests use, and the same settings as command-line options.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeffnet.search import harness
from edgeffnet.specs.scaling import ModelSpec, parse_spec

QUICK = harness.BenchSettings(iterations=10, seconds=0.05, warmup=0.02)
QUICK_OPTIONS = ("-n", str(QUICK.iterations), "-s", str(QUICK.seconds), "--warmup", str(QUICK.warmup))
# phi=-4 on a coarse grid: 4 candidates, 4 networks (the search that the CLI and farm tests build for real)
SMALL_GRID_OPTIONS = ("--phi", "-4", "--step", "0.25", "--tol", "0.1")


def shape_macs(s: ModelSpec) -> int:
    """MACs that scale as the network's do (depth x width^2 x resolution^2), without counting them."""
    return int(4e8 * s.depth * s.width**2 * s.r**2)


class PretendDevice:
    """Latency from `latency(spec)`; what was built and timed is counted. With `interrupt_at`, Ctrl-C
    arrives while that many networks have been built and the next one is."""

    def __init__(
        self,
        latency: Callable[[str], float],
        macs: Callable[[ModelSpec], int] = shape_macs,
        interrupt_at: int | None = None,
    ):
        self.latency, self.macs, self.interrupt_at = latency, macs, interrupt_at
        self.built: list[str] = []
        self.timed: list[str] = []

    def install(self, monkeypatch) -> PretendDevice:
        """Stand in for the harness's build and timing for the rest of the test."""
        monkeypatch.setattr(harness, "build_and_measure", self.build_and_measure)
        monkeypatch.setattr(harness, "time_bundle", self.time_bundle)
        return self

    def _timing(self, spec: str) -> dict:
        ms = self.latency(spec)
        return {"p50_ms": ms, "p90_ms": ms * 1.1, "p99_ms": ms * 1.2, "record": "", "measured": "now"}

    def build_and_measure(self, spec, target, precision, dest, settings, keep=None) -> dict:
        if self.interrupt_at is not None and len(self.built) == self.interrupt_at:
            raise KeyboardInterrupt
        self.built.append(spec)
        s = parse_spec(spec)
        about = {"macs": self.macs(s), "params": 1000, "resolution": s.resolution, "bundle": f"bundle::{spec}"}
        return {"spec": spec, **about, **self._timing(spec)}

    def time_bundle(self, bundle_dir, settings, keep=None) -> dict:
        self.timed.append(str(bundle_dir))
        return self._timing(str(bundle_dir).split("::")[1])
