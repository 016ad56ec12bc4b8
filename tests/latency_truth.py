"""A pretend device whose latency follows a known per-group layer model, for tests of the latency model:
it writes whole-network p50s and profiles (docs/measuring.md) the way a real device's data look."""

from __future__ import annotations

import numpy as np

from edgeffnet.latency import features, store
from edgeffnet.search.grid import network_key
from edgeffnet.specs.scaling import parse_spec

OVERHEAD_MS = 0.4


class Truth:
    def __init__(self, seed: int = 1, scale: float = 1.0):
        self.rng = np.random.default_rng(seed)
        self.coef: dict[str, tuple[float, float, float]] = {}
        self.scale = scale

    def group(self, g: str) -> tuple[float, float, float]:
        if g not in self.coef:  # ms per GMAC, per MB, per layer: a CPU's range of values
            r = self.rng
            self.coef[g] = (r.uniform(5, 30), r.uniform(0.01, 0.2), r.uniform(0.002, 0.03))
        return self.coef[g]

    def layer_ms(self, layer, precision: str = "fp32") -> float:
        a, b, k = self.group(features.group_of(layer))
        m, mb, n = features.layer_terms(layer, precision)
        return self.scale * (a * m + b * mb + k * n)

    def by_group(self, spec: str, precision: str = "fp32") -> dict[str, float]:
        out: dict[str, float] = {}
        for layer in features.network_layers(spec):
            g = features.group_of(layer)
            out[g] = out.get(g, 0.0) + self.layer_ms(layer, precision)
        return out

    def ms(self, spec: str, precision: str = "fp32") -> float:
        return self.scale * OVERHEAD_MS + sum(self.by_group(spec, precision).values())

    def profile(self, spec: str, kind: str, precision: str = "fp32") -> dict:
        """A profile as `bench --profile` writes it: per layer (with an overhead row) or per role only."""
        layers = [
            {
                "name": x.name,
                "role": x.role,
                "time_ms": self.layer_ms(x, precision),
                "fused": [],
                "share": 0.0,
                "macs": x.macs,
                "bytes": x.bytes_moved(precision),
                "intensity": 0.0,
                "gops": 0.0,
                "exec_type": "jit_avx2",
                "precision": "f32",
                "nodes": [x.name],
            }
            for x in features.network_layers(spec)
        ]
        layers.append({"name": "Reorder_1", "role": "overhead", "time_ms": self.scale * OVERHEAD_MS, "fused": []})
        by_role: dict[str, float] = {}
        for r in layers:
            by_role[r["role"]] = by_role.get(r["role"], 0.0) + r["time_ms"]
        total = sum(by_role.values())
        # the profiler's own overhead: profiled times run 20% long; the model must take it out
        prof = {
            "format": "edgeffnet-profile/1",
            "runtime": "openvino",
            "iterations": 50,
            "mapped_fraction": 1.0,
            "profiled_sum_ms": 1.2 * total,
            "unprofiled_p50_ms": total,
            "profiler_overhead": 0.2,
            "by_role": {k: 1.2 * v for k, v in by_role.items()},
        }
        if kind == "layers":
            prof["layers"] = [r | {"time_ms": 1.2 * r["time_ms"]} for r in layers]
        return prof

    def rows(
        self,
        specs: list[str],
        noise: float = 0.02,
        profile: str | None = None,
        source: str = "design",
        precision: str = "fp32",
    ) -> list[dict]:
        out = []
        for s in specs:
            p50 = self.ms(s, precision) * (1 + self.rng.normal(0, noise))
            out.append(
                store.row(
                    s,
                    network_key(parse_spec(s)),
                    precision,
                    p50,
                    source,
                    profile=self.profile(s, profile, precision) if profile else None,
                )
            )
        return out
