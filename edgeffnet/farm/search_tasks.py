"""What runs on the farm's nodes for `search/fit --cluster`: a build on a build worker, timings on a device.

`build_candidate` runs on a node that joined with `--build`: it builds the candidate through that node's
own stage cache into a temporary directory and returns the bundle as two tar archives (what a device
needs, and the rest, so the workstation keeps the whole bundle without sending anything twice).

`time_bundles` runs on a device of the target: it unpacks the bundles it was sent, makes each ready
(a pending engine built, any other artifact verified on this device) and times them in the order
asked, with the search's own timing function (`harness.time_bundle`: the same settings, the device
lock, the same record). A candidate and the paper's network timed in one task, seconds apart on the
same device, are the paired timing of the local search; confirm rounds are one task too.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from edgeffnet.farm import device


def node_name(node: dict) -> str:
    """How a node is called in the output: its Ray node id's start and its address (or the hostname)."""
    return (
        f"{node.get('node_id', '')[:8]}@{node.get('ip') or node['hostname']}"
        if node.get("node_id")
        else node["hostname"]
    )


def build_candidate(spec: str, target: str, precision: str) -> tuple[dict, bytes, bytes]:
    """(where and how long, the device's files as a tar, the other files as a tar)."""
    from edgeffnet import bundle
    from edgeffnet.pipeline import require_build_side
    from edgeffnet.search import harness

    require_build_side("a build worker (farm join --build)")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeffnet-build-") as tmp:
        path = harness.build_bundle(spec, target, precision, Path(tmp) / "bundle")
        shipped = device.shipped_files(path, bundle.read_manifest(path))
        rest = sorted(
            p.name for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in shipped
        )
        node = device.node_identity()
        info = {"node": node | {"name": node_name(node)}, "seconds": round(time.monotonic() - t0, 3)}
        return info, device.archive(path, shipped), device.archive(path, rest)


def time_bundles(names: list[str], order: list[int], settings: dict, *archives: bytes) -> dict:
    """ARCHIVES (one per name) timed in ORDER (indices, repeats allowed). Returns {"node", "timings": [{p50_ms,
    p90_ms, p99_ms, iterations, "record": the record as a dict}] in ORDER, "parity": per bundle, "seconds",
    "heavy_modules"}."""
    from edgeffnet.search import harness

    t0 = time.monotonic()
    how = harness.BenchSettings(**settings)
    with tempfile.TemporaryDirectory(prefix="edgeffnet-farm-") as tmp:
        paths, parity = [], []
        for i, (name, data) in enumerate(zip(names, archives)):
            path = Path(tmp) / str(i) / name
            path.parent.mkdir()
            path.mkdir()
            device.unpack(data, path)
            _, agreed, _ = device.ready(path)
            paths.append(path)
            parity.append(agreed)
        timings = []
        for k, i in enumerate(order):
            keep = Path(tmp) / "records" / f"{k}.json"
            m = harness.time_bundle(paths[i], how, keep=keep)
            timings.append(
                {key: m[key] for key in ("p50_ms", "p90_ms", "p99_ms", "iterations")}
                | {"record": json.loads(keep.read_text())}
            )
    node = device.node_identity()
    return {
        "node": node | {"name": node_name(node)},
        "timings": timings,
        "parity": parity,
        "seconds": round(time.monotonic() - t0, 3),
        "heavy_modules": sorted(m for m in device.HEAVY if m in sys.modules),
    }
