"""Where the time goes: a runtime's per-node profile mapped onto the bundle's layer table.

A runner's `profile(x, iterations)` gives, per profiled inference, the nodes the runtime executed
(`{node, type, time_ms, exec_type, precision, original_names}`, optionally `start_ms`). Each node is mapped
through the ONNX names it came from to the layers of layers.json (layer_table.layer_of and the table's
own node lists): a fused node is the row of the layer that holds its heaviest work (most MACs; the one it
is named after first), and lists the others in "fused". Reorders, converts, Q/DQ and other work the
runtime or the precision pass inserted are "overhead" rows, one per runtime node.

`mapped_fraction` is the share of profiled time the mapping explains: time in layer rows plus overhead
rows that are known conversions (a Q/DQ/Cast node of the table's graph, or a node of a conversion type);
`layer_fraction` is the share in layer rows alone. Time per row is the median over profiled inferences
of its per-inference sum, or, where the runtime's counters are running means (OpenVINO's CPU plugin: the
runner gives one run, the nodes' mean over the profiled inferences, and `statistic` "mean"), that mean.
The profiled sum is compared with the unprofiled latency of the same run (its p50, or its mean).
"""

from __future__ import annotations

import os
import statistics as _st
from dataclasses import dataclass

from edgeffnet.specs.layer_table import is_qdq, layer_of

FORMAT = "edgeffnet-profile/1"
# Node types that are conversions, not layers (OpenVINO layerType, ONNX Runtime op_name, TensorRT's reformats).
OVERHEAD_TYPES = {
    "Reorder",
    "Convert",
    "FakeQuantize",
    "Cast",
    "QuantizeLinear",
    "DequantizeLinear",
    "Transpose",
    "ReorderInput",
    "ReorderOutput",
    "Reformat",
    "Reformatting",
    "Input",
    "Output",
    "Parameter",
    "Result",
    "MemoryInput",
    "MemoryOutput",
    "DynamicQuantizeLinear",
}
BITS = {"i8": 8, "u8": 8, "i4": 4, "u4": 4, "f16": 16, "bf16": 16, "f32": 32, "f64": 64}
CLAIMED = {"int8": "i8", "fp16": "f16", "fp32": "f32"}
# Two checks that the profile is the inference, both meaningful only on a CPU the bench has to itself.
# Coverage: per profiled inference, the nodes' times against the host's wall time around that inference;
# the gap is the call itself and the hand-offs between the caller and the runtime's threads, so the sum
# sits a little under the wall time and never over it. The sum check: the profiled sum against the bench's
# unprofiled latency, at the median and at the minimum (load only adds time), holding when either is within
# SUM_TOLERANCE: the counters cost about 15-20 us per node on a small CPU (Lite0 at 64 px, 52 nodes: 3.24 ms
# profiled against 2.31 ms unprofiled, least-disturbed), so a tiny graph sits high, and 50% still separates
# "the profile is the inference" from a profile of half the graph or of every node twice.
# On an oversubscribed CPU (load average above the CPU count) neither holds, and the record says so
# ("busy"): each hand-off to a runtime thread waits for a time slice. Measured here, 2 cores at load 14,
# Lite0 64 px, 1 thread: 31 ms wall per profiled inference, 2.6 ms of process CPU time, 4.3 ms in nodes.
COVERAGE_MIN = 0.6
COVERAGE_MAX = 1.02  # timer granularity: per-node times are rounded to microseconds
SUM_TOLERANCE = 0.5


def normal_precision(p: str | None) -> str:
    p = (p or "").lower()
    aliases = {
        "u8": "i8",
        "int8": "i8",
        "uint8": "i8",
        "float": "f32",
        "float32": "f32",
        "fp32": "f32",
        "float16": "f16",
        "fp16": "f16",
        "half": "f16",
        "bfloat16": "bf16",
        "i32": "i32",
        "int32": "i32",
    }
    return aliases.get(p, p or "unknown")


def _classify(node: dict, exact: dict[str, str], overhead: set[str], rows: dict[str, dict]) -> tuple[list[str], bool]:
    """(layers the node holds, heaviest first; whether an empty list is a known conversion)."""
    names = [n for n in (node.get("original_names") or []) if n] or [node["node"]]
    if node.get("type") in OVERHEAD_TYPES:
        return [], True
    found: list[str] = []
    for name in names:
        if name in overhead or is_qdq(name):
            continue
        layer = exact.get(name) or layer_of(name)
        if layer in rows and layer not in found:
            found.append(layer)
    if not found:
        known = all(n in overhead or is_qdq(n) for n in names)
        return [], known
    own = exact.get(node["node"]) or layer_of(node["node"])
    found.sort(key=lambda name: (rows[name]["macs"], name == own), reverse=True)
    return found, True


@dataclass
class _Mapping:
    """The runtime's nodes placed on the table's rows, over every profiled inference."""

    placed: dict[str, tuple[str, list[str], bool]]  # runtime node -> (row key, fused, known)
    per_run: list[dict[str, float]]  # per profiled inference: row key -> the time of its nodes (ms)
    by_row: dict[str, dict]  # row key -> {"nodes": {runtime node: its profile row}, "fused": [layers]}

    @property
    def totals(self) -> list[float]:
        """Each profiled inference's sum over its nodes."""
        return [sum(s.values()) for s in self.per_run]


def _map_nodes(table: dict, rows: dict[str, dict], runs: list[list[dict]]) -> _Mapping:
    exact = {n: r["name"] for r in table["layers"] for n in r.get("onnx_nodes", [])}
    overhead = set(table.get("overhead_nodes", []))
    mapping = _Mapping({}, [], {})
    placed, by_row = mapping.placed, mapping.by_row
    for run in runs:
        sums: dict[str, float] = {}
        for node in run:
            name = node["node"]
            if name not in placed:
                layers, known = _classify(node, exact, overhead, rows)
                placed[name] = (layers[0], layers[1:], True) if layers else (name, [], known)
            key = placed[name][0]
            sums[key] = sums.get(key, 0.0) + float(node["time_ms"])
            row = by_row.setdefault(key, {"nodes": {}, "fused": []})
            row["nodes"][name] = node
            row["fused"] += [f for f in placed[name][1] if f not in row["fused"]]
        mapping.per_run.append(sums)
    return mapping


def _time_rows(mapping: _Mapping, rows: dict[str, dict], profiled_sum: float) -> list[dict]:
    """One row per layer and per overhead node: its time, share, how it ran and, for a layer, its work."""
    out_rows = []
    for key, row in mapping.by_row.items():
        t = _st.median([s.get(key, 0.0) for s in mapping.per_run])
        heavy = max(row["nodes"].values(), key=lambda n: float(n["time_ms"]))
        base = {
            "name": key,
            "time_ms": round(t, 5),
            "share": t / profiled_sum if profiled_sum else 0.0,
            "exec_type": str(heavy.get("exec_type") or ""),
            "precision": normal_precision(heavy.get("precision")),
            "nodes": sorted(row["nodes"]),
            "fused": row["fused"],
        }
        if key in rows:
            r = rows[key]
            gops = r["ops"] / (t / 1e3) / 1e9 if t > 0 else None
            base.update(
                role=r["role"], macs=r["macs"], bytes=r["bytes"], intensity=r["intensity"], gops=gops, known=True
            )
        else:
            known = mapping.placed[next(iter(row["nodes"]))][2]
            base.update(role="overhead", macs=0, bytes=0, intensity=0.0, gops=None, known=known)
        out_rows.append(base)
    out_rows.sort(key=lambda r: r["time_ms"], reverse=True)
    return out_rows


def _time_by_role(out_rows: list[dict], layers: list[dict]) -> dict:
    """Where the time went: per role, against the work per role, and the share the mapping explains."""
    by_role: dict[str, float] = {}
    for r in out_rows:
        by_role[r["role"]] = by_role.get(r["role"], 0.0) + r["time_ms"]
    in_layers = sum(r["time_ms"] for r in out_rows if r["role"] != "overhead")
    explained = sum(r["time_ms"] for r in out_rows if r["known"])
    rows_total = sum(r["time_ms"] for r in out_rows) or 1.0
    return {
        "by_role": {k: round(v, 5) for k, v in by_role.items()},
        "flops_by_role": _flops_by_role(layers),
        "mapped_fraction": explained / rows_total,
        "layer_fraction": in_layers / rows_total,
    }


def _against_unprofiled(
    totals: list[float], unprofiled_ms: list[float], wall_ms: list[float] | None, per_inference: bool
) -> dict:
    """The profiled sums against the unprofiled latencies and the host's wall time: is the profile the inference?"""
    unprofiled_p50_ms = _st.median(unprofiled_ms) if unprofiled_ms else None
    unprofiled_min = min(unprofiled_ms) if unprofiled_ms else None
    profiled_sum = _st.median(totals) if totals else 0.0
    profiled_min = min(totals) if totals and per_inference else None
    unprofiled_mid = unprofiled_p50_ms if per_inference or not unprofiled_ms else _st.fmean(unprofiled_ms)
    return {
        "profiled_sum_ms": round(profiled_sum, 5),
        "unprofiled_p50_ms": unprofiled_p50_ms,
        "unprofiled_min_ms": unprofiled_min,
        "profiled_min_ms": profiled_min,
        "profiled_wall_p50_ms": _st.median(wall_ms) if wall_ms else None,
        # what profiling costs an inference: its wall time profiled against unprofiled, at the median
        "profiler_overhead": (_st.median(wall_ms) / unprofiled_p50_ms - 1) if wall_ms and unprofiled_p50_ms else None,
        "coverage": _coverage(totals, wall_ms, per_inference),
        "sum_check": _sum_check(
            profiled_sum, profiled_min or profiled_sum, unprofiled_mid, unprofiled_min, per_inference
        ),
        "load_per_cpu": _load_per_cpu(),
    }


def _precision_check(out_rows: list[dict], bundle_precision: str) -> dict:
    """The layers that ran wider than the bundle's precision claims (an INT8 bundle's convs in FP32)."""
    claimed = CLAIMED.get(bundle_precision)
    wider = [
        r["name"]
        for r in out_rows
        if r["role"] != "overhead" and r["macs"] and claimed and BITS.get(r["precision"], 0) > BITS[claimed]
    ]
    return {
        "claimed_precision": claimed,
        "ran_wider": wider,
        "warning": (
            f"{len(wider)} layer(s) of this {bundle_precision} bundle ran wider than {claimed}: "
            f"{', '.join(wider[:8])}{' ...' if len(wider) > 8 else ''}"
        )
        if wider
        else None,
    }


def analyse(
    table: dict,
    runs: list[list[dict]],
    bundle_precision: str,
    runtime: str,
    unprofiled_ms: list[float],
    roof: dict | None = None,
    wall_ms: list[float] | None = None,
    statistic: str = "median",
    iterations: int | None = None,
) -> dict:
    """The profile record (docs/measuring.md) from the table, the profiled inferences (their node rows and,
    where known, their wall times) and the latencies (ms) of unprofiled inferences of the same run.
    statistic "mean": `runs` is one run, the nodes' mean over `iterations` inferences (see the module)."""
    if statistic not in ("median", "mean") or (statistic == "mean" and len(runs) > 1):
        raise ValueError(f"statistic {statistic!r} over {len(runs)} runs")
    rows = {r["name"]: r for r in table["layers"]}
    mapping = _map_nodes(table, rows, runs)
    totals = mapping.totals
    # a mean over inferences has no per-inference minimum; the check compares means then
    per_inference = statistic == "median"
    out_rows = _time_rows(mapping, rows, _st.median(totals) if totals else 0.0)
    record = {
        "format": FORMAT,
        "runtime": runtime,
        "iterations": iterations or len(runs),
        "statistic": "median per inference"
        if per_inference
        else "mean over the profiled inferences (the runtime's counters are running means)",
        "layers": out_rows,
        **_time_by_role(out_rows, table["layers"]),
        "unmapped_nodes": sorted(n for n, (_, _, known) in mapping.placed.items() if not known),
        "runtime_nodes": len(mapping.placed),
        **_against_unprofiled(totals, unprofiled_ms, wall_ms, per_inference),
        **_precision_check(out_rows, bundle_precision),
    }
    if roof:
        record["roofline"] = place_on_roof(out_rows, roof)
    return record


def _load_per_cpu() -> float | None:
    try:
        return round(os.getloadavg()[0] / (os.cpu_count() or 1), 2)
    except OSError:
        return None


def _coverage(totals: list[float], wall_ms: list[float] | None, per_inference: bool = True) -> dict | None:
    if not wall_ms or not totals:
        return None
    if per_inference:
        if len(wall_ms) != len(totals):
            return None
        ratio = _st.median(t / w for t, w in zip(totals, wall_ms) if w > 0)
        compares = "per profiled inference: sum of its nodes / host wall time around it"
    else:
        ratio = totals[0] / _st.fmean(wall_ms)
        compares = "the nodes' mean sum over the profiled inferences / their mean host wall time"
    return {
        "median": ratio,
        "min": COVERAGE_MIN,
        "max": COVERAGE_MAX,
        "holds": COVERAGE_MIN <= ratio <= COVERAGE_MAX,
        "compares": compares,
    }


def _sum_check(
    p50: float, low: float | None, u50: float | None, ulow: float | None, per_inference: bool = True
) -> dict:
    median = p50 / u50 if u50 else None
    least = low / ulow if low and ulow else None
    holds = any(r is not None and abs(r - 1) <= SUM_TOLERANCE for r in (median, least))
    return {
        "ratio_median": median,
        "ratio_min": least,
        "tolerance": SUM_TOLERANCE,
        "holds": holds,
        "compares": "profiled node sum / unprofiled latency of the bench, at the median and the minimum"
        if per_inference
        else "the nodes' mean sum over the profiled inferences / the unprofiled mean latency of the bench, "
        "and / its minimum (load only adds time)",
    }


def _flops_by_role(layers: list[dict]) -> dict[str, int]:
    """2 x MACs per role over the whole table (a fused layer's work still counts for its own role)."""
    out: dict[str, int] = {}
    for r in layers:
        out[r["role"]] = out.get(r["role"], 0) + 2 * r["macs"]
    return out


def place_on_roof(rows: list[dict], roof: dict) -> dict:
    """Each layer's roof (min of the compute peak and bandwidth x intensity), how close it came, and the
    share of layer time spent under each ceiling (left of the ridge: memory; right: compute)."""
    peak, bw = roof.get("compute_gops"), roof.get("bandwidth_gbs")
    if not peak or not bw:
        return roof | {"time_memory_bound": None, "time_compute_bound": None}
    ridge = peak / bw
    memory = compute = 0.0
    for r in rows:
        if r["role"] == "overhead" or not r["bytes"]:
            continue
        bound = "memory" if r["intensity"] < ridge else "compute"
        r["bound"] = bound
        r["ceiling_gops"] = min(peak, bw * r["intensity"])
        r["of_ceiling"] = r["gops"] / r["ceiling_gops"] if r["gops"] and r["ceiling_gops"] else None
        if bound == "memory":
            memory += r["time_ms"]
        else:
            compute += r["time_ms"]
    total = memory + compute or 1.0
    return roof | {"ridge_intensity": ridge, "time_memory_bound": memory / total, "time_compute_bound": compute / total}


def trace(runs: list[list[dict]], record: dict) -> dict:
    """One profiled inference (the one whose total is the median; OpenVINO's single run: the nodes' means)
    as Chrome trace JSON: one complete event ("ph": "X", microseconds) per runtime node; nodes without a
    start time are laid end to end."""
    if not runs:
        return {"traceEvents": [], "displayTimeUnit": "ms"}
    totals = [sum(float(n["time_ms"]) for n in run) for run in runs]
    run = runs[sorted(range(len(runs)), key=totals.__getitem__)[len(runs) // 2]]
    layer_of_node = {n: r for r in record["layers"] for n in r["nodes"]}
    start0 = min((float(n["start_ms"]) for n in run if "start_ms" in n), default=0.0)
    events, cursor = [], 0.0
    for node in run:
        r = layer_of_node.get(node["node"], {})
        ts = float(node["start_ms"]) - start0 if "start_ms" in node else cursor
        dur = float(node["time_ms"])
        cursor = ts + dur
        events.append(
            {
                "name": node["node"],
                "cat": r.get("role", "overhead"),
                "ph": "X",
                "pid": 1,
                "tid": 1,
                "ts": round(ts * 1e3, 3),
                "dur": round(dur * 1e3, 3),
                "args": {
                    "layer": r.get("name") if r.get("role") != "overhead" else None,
                    "role": r.get("role", "overhead"),
                    "exec_type": node.get("exec_type", ""),
                    "precision": normal_precision(node.get("precision")),
                    "type": node.get("type", ""),
                },
            }
        )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"runtime": record["runtime"], "source": "edgeffnet bench --profile"},
    }
