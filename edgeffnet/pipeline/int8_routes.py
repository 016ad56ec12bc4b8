"""OpenVINO INT8 has up to four routes; each build measures them and keeps the best.

(a) the Q/DQ ONNX graph (the one every target gets) converted to IR, its non-negative activations
re-encoded as uint8; (a7) the same with 7-bit dense-layer weights, measured only on x86 CPUs without VNNI
(both encodings: backends/openvino/encoding.py); (all-int8) when the precision stage kept layers in float
for ONNX Runtime's sake, the better of (a)/(a7) for this CPU with those layers quantized too
(without_kept_float); (b) NNCF quantizing the FP32 IR with its defaults and the same calibration data
(backends/openvino/nncf_route.py). The choice is by mean cosine with FP32 on the tuning views first (a
clear gap wins), then by latency; the bundle records every measurement and the choice.

This is the build's policy, so it lives in the pipeline: it asks the OpenVINO backend to encode, convert and
load each route, and times them with the one timing loop.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import onnx

from edgeffnet.backends import RunSettings
from edgeffnet.backends.openvino import convert, load, nncf_route
from edgeffnet.backends.openvino.encoding import (
    ROUTE_7BIT,
    ROUTE_8BIT,
    ZERO_UINT8,
    has_vnni,
    host_route,
    seven_bit_weights,
    unsigned_where_nonnegative,
)
from edgeffnet.core.layout import IR, IR_WEIGHTS, SIMPLIFIED
from edgeffnet.core.verify import compare, run_batched
from edgeffnet.measure.timing import interleaved_p50
from edgeffnet.precision import int8, qdq, ranges

COSINE_GAP = 0.002  # a difference in mean cosine below this is noise on 64 views; then latency decides
# NNCF's route calibrates on at most this many of the calibration batches, spread over the set. Its
# statistics pass was the largest part of an INT8 build (B3 at 300 views: 147 of the compile stage's 318 s
# on a loaded 2-core host); at 100 it takes a third of that. The trade: NNCF's ranges come from 100 views
# instead of 300, so its route may measure a little less faithful; it only competes in the race below,
# and whichever route wins is verified and reported on the verification photos as before.
NNCF_SAMPLES = 100


def _nncf_ir(ctx, out_xml: Path) -> None:
    cal = ctx.calibration
    batch = ctx.fixed_batch or 1
    # A static batch needs whole batches; a calibration set smaller than one batch repeats its views.
    data = cal.data if len(cal.data) >= batch else np.resize(cal.data, (batch, *cal.data.shape[1:]))
    samples = [data[i : i + batch] for i in range(0, len(data) - batch + 1, batch)]
    samples = samples[:: max(1, len(samples) // NNCF_SAMPLES)][:NNCF_SAMPLES]
    nncf_route.quantize(ctx.dir / SIMPLIFIED, samples, out_xml)


def choose(cos: dict[str, float], lat: dict[str, float]) -> tuple[str, str]:
    """The route closest to FP32, or, among those within COSINE_GAP of it, the fastest."""
    best = max(cos.values())
    near = [k for k in cos if best - cos[k] <= COSINE_GAP]
    if len(near) == 1:
        return near[0], "closer to FP32 (mean cosine)"
    return min(near, key=lat.get), "fastest of the routes at equal fidelity"


def _statistics(ctx) -> dict:
    """The precision stage's calibration statistics (from the cache when it kept them)."""
    cal = ctx.calibration
    return int8.statistics(onnx.load(str(ctx.dir / SIMPLIFIED)), cal.data, cal.sha256, ctx.options.cache)[0]


def without_kept_float(ctx, stats: dict, method: str) -> onnx.ModelProto:
    """model.sim.onnx quantized as the precision stage did, but with only the escalation's layers in float.

    The precision stage keeps layers in float while ONNX Runtime's cosine on the tuning views is below
    its target; in OpenVINO each float layer also costs two layout and precision changes around it. On
    pretrained Lite0 the two it keeps run at 112x112: their FP32 convolutions, two f32->u8 Reorders and an
    f32 stem output made the IR 7% slower than NNCF's, whose runtime graph has every convolution in u8,
    while their fidelity gain (cosine +0.0014 on 200 views in the 7-bit route) is below COSINE_GAP."""
    model = qdq.name_nodes(onnx.load(str(ctx.dir / SIMPLIFIED)))
    return qdq.quantize(
        model, qdq.plan(model, frozenset(ctx.keep_float)), ranges.thresholds(stats, method), stats["means"]
    )


def route_graphs(ctx, qdq_graph: Path, precision_record: dict, vnni: bool) -> tuple[dict, dict]:
    """The ONNX graph of each Q/DQ route, in OpenVINO's encoding, and each one's description."""
    graph, unsigned = unsigned_where_nonnegative(onnx.load(str(qdq_graph)))
    graphs = {ROUTE_8BIT: graph}
    u8 = f"its {len(unsigned)} non-negative activations as uint8 (zero point 0)"
    w7 = (
        "7-bit dense-layer weights, bias-corrected (no VNNI on this CPU: int16 sums of u8 x s8 products would overflow)"
    )
    described = {ROUTE_8BIT: f"{qdq_graph.name} with {u8}", ROUTE_7BIT: f"{qdq_graph.name} with {u8} and {w7}"}
    if ctx.keep_float:
        # An escalation ranked its layers on this host's own Q/DQ route (pipeline/escalate.py): the route
        # stays, or a step could swap in a route the ranking never measured (seen on Lite0 at 96 px: the
        # 8-bit route won on tuning views by 0.001 and lost 4 points of agreement to the 7-bit one).
        own = host_route(vnni)
        if own == ROUTE_7BIT:
            graphs = {own: seven_bit_weights(graph, _statistics(ctx)["means"])[0]}
        return graphs, {own: described[own]}
    kept = [k["node"] for k in precision_record.get("kept_float", [])]
    if vnni and not kept:
        return graphs, described
    stats = _statistics(ctx)
    if not vnni:
        graphs[ROUTE_7BIT] = seven_bit_weights(graph, stats["means"])[0]
    if kept:
        own = host_route(vnni)
        full, unsigned_full = unsigned_where_nonnegative(without_kept_float(ctx, stats, precision_record["method"]))
        graphs[f"{own}-all-int8"] = full if vnni else seven_bit_weights(full, stats["means"])[0]
        described[f"{own}-all-int8"] = (
            f"{SIMPLIFIED} quantized as {qdq_graph.name} but with its {len(kept)} sensitivity-kept float layers "
            f"in int8 too, {len(unsigned_full)} non-negative activations as uint8" + ("" if vnni else f" and {w7}")
        )
    return graphs, described


def float_twins(cos: dict[str, float]) -> set[str]:
    """Routes whose all-int8 variant is as faithful (within COSINE_GAP): the same graph with some layers in
    float, which only adds work in OpenVINO (FP32 convolutions, Reorders around them), so they are left out
    of the latency comparison, where a busy host's noise could pick them. Measured in one run with the
    order alternating (pretrained lite0, lite1, AVX2 without VNNI, idle host): p50 of the twin 1.07 and
    1.01 of NNCF's, of the all-int8 route 0.98 and 0.98; under load the build's own timing picked the twin."""
    return {k for k in cos if f"{k}-all-int8" in cos and cos[k] - cos[f"{k}-all-int8"] <= COSINE_GAP}


def compile_int8(ctx, qdq_graph: Path, precision_record: dict, vnni: bool | None = None) -> dict:
    """Every route measured on the tuning views; the chosen IR is left in ctx.dir. Returns the record."""
    vnni = has_vnni() if vnni is None else vnni
    alt = ctx.dir / ".routes"
    alt.mkdir()
    settings = RunSettings(cpu_fallback=True)
    try:
        graphs, described = route_graphs(ctx, qdq_graph, precision_record, vnni)
        dirs = {k: alt / f"r{i}" for i, k in enumerate([*graphs, "nncf"])}
        for k, g in graphs.items():
            dirs[k].mkdir()
            onnx.save(g, str(dirs[k] / qdq_graph.name))
            convert(dirs[k] / qdq_graph.name, dirs[k], compress_to_fp16=False)
        t = time.perf_counter()
        if ctx.keep_float:  # NNCF's route ignores which layers are float: an escalation has no use for it
            del dirs["nncf"]
        else:
            dirs["nncf"].mkdir()
            _nncf_ir(ctx, dirs["nncf"] / IR)
        nncf_seconds = time.perf_counter() - t
        tuning, ref = ctx.tuning_data  # the precision stage's, when it ran in this build
        runners = {k: load(d, ctx.target, "int8", settings) for k, d in dirs.items()}
        cos = {k: compare(ref, run_batched(r.run, tuning, ctx.fixed_batch)).cosine_mean for k, r in runners.items()}
        x = tuning[: ctx.fixed_batch or 1]
        lat = interleaved_p50({k: r.bound(x) for k, r in runners.items()})
        twins = float_twins(cos)
        chosen, why = choose({k: c for k, c in cos.items() if k not in twins}, lat)
        if ctx.keep_float:
            why = "escalation: the host's Q/DQ route, on which the layers kept in float were ranked"
        device = next(iter(runners.values())).device
        del runners
        for name in (IR, IR_WEIGHTS):
            shutil.move(str(dirs[chosen] / name), str(ctx.dir / name))
    finally:
        shutil.rmtree(alt, ignore_errors=True)
    described.setdefault("nncf", f"{SIMPLIFIED} via NNCF")
    if twins:
        why += f" (left out as float twins of all-int8 routes: {', '.join(sorted(twins))})"
    encoded = graphs.get(chosen, graphs.get(ROUTE_8BIT))  # NNCF's route: the Q/DQ graph's own encoding
    return {
        "files": [IR, IR_WEIGHTS],
        "compress_to_fp16": False,
        "int8_route": chosen,
        "int8_route_reason": why,
        "converted_from": described[chosen],
        "int8_routes": {k: {"latency_p50_ms": round(lat[k], 4), "tuning_cosine_mean": round(cos[k], 6)} for k in lat},
        "int8_routes_measured_on": device,
        "cpu_vnni": vnni,
        "uint8_activations": sum(
            1 for n in encoded.graph.node if n.op_type == "QuantizeLinear" and ZERO_UINT8 in n.input
        ),
        "nncf_seconds": round(nncf_seconds, 2),
    }
