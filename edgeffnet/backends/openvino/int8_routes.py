"""OpenVINO INT8 has up to four routes; each build measures them and keeps the best.

(a) the Q/DQ ONNX graph (the one every target gets) converted to IR, its non-negative activations
re-encoded as uint8 (unsigned_where_nonnegative); (a7) the same with 7-bit dense-layer weights, measured only on
x86 CPUs without VNNI (see seven_bit_weights); (all-int8) when the precision stage kept layers in float for
ONNX Runtime's sake, the better of (a)/(a7) for this CPU with those layers quantized too (without_kept_float);
(b) NNCF quantizing the FP32 IR with its defaults and the same calibration data. The choice is by mean cosine
with FP32 on the tuning views first (a clear gap wins), then by latency; the bundle records every
measurement and the choice.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ...measure.timing import interleaved_p50
from ...onnx_index import GraphIndex
from ...precision import qdq, ranges
from ...verify import compare, run_batched
from .. import RunSettings

COSINE_GAP = 0.002  # a difference in mean cosine below this is noise on 64 views; then latency decides
# NNCF's route calibrates on at most this many of the calibration batches, spread over the set. Its
# statistics pass was the largest part of an INT8 build (B3 at 300 views: 147 of the compile stage's 318 s
# on a loaded 2-core host); at 100 it takes a third of that. The trade: NNCF's ranges come from 100 views
# instead of 300, so its route may measure a little less faithful; it only competes in the race below,
# and whichever route wins is verified and reported on the verification photos as before.
NNCF_SAMPLES = 100


# -- OpenVINO's encoding of the shared Q/DQ graph --------------------------------------------------------

ZERO_UINT8 = "qdq_zero_uint8"
_ALWAYS_NONNEGATIVE = ("Relu", "Sigmoid")
_KEEP_SIGN = ("GlobalAveragePool", "MaxPool", "AveragePool", "Flatten", "Reshape", "QuantizeLinear",
              "DequantizeLinear")


def nonnegative(model: onnx.ModelProto) -> set[str]:
    """Tensors that cannot be negative whatever the input: outputs of Relu, Sigmoid and Clip with a
    lower bound >= 0, and what pooling, reshaping, Q/DQ, sums and products of those make of them."""
    index = GraphIndex(model)
    out: set[str] = set()
    for n in model.graph.node:  # topological order
        op, ins = n.op_type, n.input
        if op in _ALWAYS_NONNEGATIVE:
            out.add(n.output[0])
        elif op == "Clip":
            low = index.array(ins[1]) if len(ins) > 1 and ins[1] else None
            if ins[0] in out or (low is not None and float(low) >= 0):
                out.add(n.output[0])
        elif (op in _KEEP_SIGN and ins[0] in out) or (op in ("Add", "Mul") and all(i in out for i in ins)):
            out.add(n.output[0])
    return out


def unsigned_where_nonnegative(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of a Q/DQ graph whose activations that cannot be negative are uint8 (zero point 0, scale
    threshold/255) instead of int8 (threshold/127), and the tensors it changed.

    Same range, same calibration, twice the resolution. This is OpenVINO's form, not TensorRT's (whose
    activations must be int8): x86 VNNI's dot product (vpdpbusd) takes u8 activations and s8 weights, so
    s8 activations must first be shifted or widened. Measured on pretrained Lite0 (CPU, p50 INT8/FP32):
    0.45 instead of 0.50, and mean cosine with FP32 0.9978 instead of 0.9963 on 200 verification views.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    index = GraphIndex(m)
    inits = index.initializers
    positive = nonnegative(m)
    changed = []
    for q in [n for n in g.node if n.op_type == "QuantizeLinear"]:
        t = q.input[0]
        if t in inits or t not in positive or len(q.input) < 3 or inits.get(q.input[2]) is None:
            continue
        zero = numpy_helper.to_array(inits[q.input[2]])
        dqs = index.reader_nodes(q.output[0])
        scale = q.input[1]
        if zero.dtype != np.int8 or zero.ndim or not dqs or any(
                d.op_type != "DequantizeLinear" or d.input[1:] != q.input[1:] for d in dqs):
            continue
        if any(r not in dqs and r is not q for r in index.reader_nodes(scale)):
            continue  # a scale shared with another tensor stays as it is
        s = numpy_helper.to_array(inits[scale]) * (127.0 / 255.0)
        inits[scale].CopyFrom(numpy_helper.from_array(s.astype(np.float32), scale))
        for node in (q, *dqs):
            node.input[2] = ZERO_UINT8
        changed.append(t)
    if changed:
        g.initializer.append(numpy_helper.from_array(np.zeros((), np.uint8), ZERO_UINT8))
    onnx.checker.check_model(m)
    return m, changed


def has_vnni(flags: set[str] | None = None) -> bool:
    """Whether this x86 CPU has an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX); a CPU
    that is not x86, or whose flags cannot be read, counts as having one (nothing to work around)."""
    if flags is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
        line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
        if line is None:
            return True
        flags = set(line.split(":", 1)[1].split())
    if "avx2" not in flags:
        return True  # not an AVX2 x86 (Arm, or too old for OpenVINO's int8 kernels): no pmaddubsw path
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"})


def seven_bit_weights(model: onnx.ModelProto, input_means: dict[str, np.ndarray] | None = None
                      ) -> tuple[onnx.ModelProto, int]:
    """A copy whose dense (non-depthwise) Conv and Gemm weights use 7 bits (per-channel scale amax/63:
    codes in [-63, 63]), and how many layers it changed.

    Without VNNI, OpenVINO's int8 convolution multiplies u8 activations by s8 weights with pmaddubsw,
    which adds two products into a saturating int16: 255 * 127 * 2 = 64770 overflows it, 255 * 63 * 2 =
    32130 does not. Measured on pretrained Lite0 on an AVX2 CPU without VNNI (100 verification views, mean
    cosine with FP32): 8-bit IR 0.909 against 0.998 for the same graph in ONNX Runtime; 7-bit weights on
    every layer 0.988, on the dense layers only 0.990 (7 bits cost resolution, so depthwise convs, which
    this did not help, keep 8).

    With `input_means` (the calibration statistics' per-channel means, keyed by the FP32 tensor each
    layer's input Q/DQ pair quantizes), each changed layer's bias also absorbs the mean output shift of
    the coarser rounding, as qdq.quantize's bias correction does for 8 bits (whose corrected bias the
    graph already holds: only the difference between the 7-bit and the 8-bit rounding is added).
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    index = GraphIndex(m)
    inits = index.initializers
    layers = {n.input[1]: n for n in m.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1
              and next((a.i for a in n.attribute if a.name == "group"), 1) == 1}
    changed = 0
    for dq in list(m.graph.node):
        if dq.op_type != "DequantizeLinear" or dq.output[0] not in layers or dq.input[1] not in inits:
            continue
        s = numpy_helper.to_array(inits[dq.input[1]])
        if s.ndim != 1:
            continue  # per-tensor: not one of this pass's per-channel weight scales
        s7 = (s * (127.0 / 63.0)).astype(np.float32)
        if input_means is not None:
            _correct_bias(m, index, layers[dq.output[0]], dq, s, s7, input_means)
        inits[dq.input[1]].CopyFrom(numpy_helper.from_array(s7, dq.input[1]))
        changed += 1
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    kept = [t for t in m.graph.initializer if t.name in used]  # the 8-bit biases replaced above go
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    onnx.checker.check_model(m)
    return m, changed


def _quantized_source(index: GraphIndex, tensor: str) -> str | None:
    """The FP32 tensor behind a DequantizeLinear(QuantizeLinear(t)) output, or None."""
    dq = index.producer.get(tensor)
    q = index.producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def _correct_bias(m: onnx.ModelProto, index: GraphIndex, layer: onnx.NodeProto, dq: onnx.NodeProto,
                  s8: np.ndarray, s7: np.ndarray, input_means: dict[str, np.ndarray]) -> None:
    """Subtract E[(W7 - W8) x] from `layer`'s bias (x at its calibration mean); a layer whose FP32 weight
    or input mean is not in reach keeps its bias."""
    inits = index.initializers
    weight = _quantized_source(index, dq.output[0])
    source = _quantized_source(index, layer.input[0])
    if weight not in inits or source not in input_means:
        return
    w = numpy_helper.to_array(inits[weight]).astype(np.float32)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    shift = qdq.output_shift(layer, qdq.rounded(w, s7, axis, 63) - qdq.rounded(w, s8, axis, 127),
                             input_means[source], axis)
    bias = (numpy_helper.to_array(inits[layer.input[2]]).astype(np.float32) if len(layer.input) > 2
            and layer.input[2] else np.zeros(w.shape[axis], np.float32))
    name = f"{weight}_bias_w7"  # a new initializer: the 8-bit bias may be shared with another reader
    m.graph.initializer.append(numpy_helper.from_array((bias - shift).astype(np.float32), name))
    if len(layer.input) > 2:
        layer.input[2] = name
    else:
        layer.input.append(name)


def _nncf_ir(ctx, out_xml: Path) -> None:
    import nncf
    import openvino as ov

    from ...logs import quiet_third_party

    quiet_third_party()
    cal = ctx.calibration
    fp32 = ov.convert_model(io.BytesIO((ctx.dir / "model.sim.onnx").read_bytes()))  # paths may hold commas
    batch = ctx.fixed_batch or 1
    # A static batch needs whole batches; a calibration set smaller than one batch repeats its views.
    data = cal.data if len(cal.data) >= batch else np.resize(cal.data, (batch, *cal.data.shape[1:]))
    samples = [data[i:i + batch] for i in range(0, len(data) - batch + 1, batch)]
    samples = samples[::max(1, len(samples) // NNCF_SAMPLES)][:NNCF_SAMPLES]
    # NNCF draws its progress bars on stdout, where `edgeffnet build` prints the bundle path and --json
    # goes: they belong with the build's log lines, on stderr.
    with contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize(fp32, nncf.Dataset(samples), subset_size=len(samples))
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)


def choose(cos: dict[str, float], lat: dict[str, float]) -> tuple[str, str]:
    """The route closest to FP32, or, among those within COSINE_GAP of it, the fastest."""
    best = max(cos.values())
    near = [k for k in cos if best - cos[k] <= COSINE_GAP]
    if len(near) == 1:
        return near[0], "closer to FP32 (mean cosine)"
    return min(near, key=lat.get), "fastest of the routes at equal fidelity"


def _statistics(ctx) -> dict:
    """The precision stage's calibration statistics (from the cache when it kept them)."""
    from ...precision import int8

    cal = ctx.calibration
    return int8.statistics(onnx.load(str(ctx.dir / "model.sim.onnx")), cal.data, cal.sha256, ctx.options.cache)[0]


def without_kept_float(ctx, stats: dict, method: str) -> onnx.ModelProto:
    """model.sim.onnx quantized as the precision stage did, but with only the escalation's layers in float.

    The precision stage keeps layers in float while ONNX Runtime's cosine on the tuning views is below
    its target; in OpenVINO each float layer also costs two layout and precision changes around it. On
    pretrained Lite0 the two it keeps run at 112x112: their FP32 convolutions, two f32->u8 Reorders and an
    f32 stem output made the IR 7% slower than NNCF's, whose runtime graph has every convolution in u8,
    while their fidelity gain (cosine +0.0014 on 200 views in the 7-bit route) is below COSINE_GAP."""
    model = qdq.name_nodes(onnx.load(str(ctx.dir / "model.sim.onnx")))
    return qdq.quantize(model, qdq.plan(model, frozenset(ctx.keep_float)), ranges.thresholds(stats, method),
                        stats["means"])


def route_graphs(ctx, qdq_graph: Path, precision_record: dict, vnni: bool) -> tuple[dict, dict]:
    """The ONNX graph of each Q/DQ route, in OpenVINO's encoding, and each one's description."""
    graph, unsigned = unsigned_where_nonnegative(onnx.load(str(qdq_graph)))
    graphs = {"qdq-onnx": graph}
    u8 = f"its {len(unsigned)} non-negative activations as uint8 (zero point 0)"
    w7 = "7-bit dense-layer weights, bias-corrected (no VNNI on this CPU: int16 sums of u8 x s8 products would overflow)"
    described = {"qdq-onnx": f"{qdq_graph.name} with {u8}", "qdq-onnx-w7": f"{qdq_graph.name} with {u8} and {w7}"}
    if ctx.keep_float:
        # An escalation ranked its layers on this host's own Q/DQ route (pipeline/escalate.py): the route
        # stays, or a step could swap in a route the ranking never measured (seen on Lite0 at 96 px: the
        # 8-bit route won on tuning views by 0.001 and lost 4 points of agreement to the 7-bit one).
        own = host_route(vnni)
        if own == "qdq-onnx-w7":
            graphs = {own: seven_bit_weights(graph, _statistics(ctx)["means"])[0]}
        return graphs, {own: described[own]}
    kept = [k["node"] for k in precision_record.get("kept_float", [])]
    if vnni and not kept:
        return graphs, described
    stats = _statistics(ctx)
    if not vnni:
        graphs["qdq-onnx-w7"] = seven_bit_weights(graph, stats["means"])[0]
    if kept:
        own = host_route(vnni)
        full, unsigned_full = unsigned_where_nonnegative(without_kept_float(ctx, stats, precision_record["method"]))
        graphs[f"{own}-all-int8"] = full if vnni else seven_bit_weights(full, stats["means"])[0]
        described[f"{own}-all-int8"] = (
            f"model.sim.onnx quantized as {qdq_graph.name} but with its {len(kept)} sensitivity-kept float layers "
            f"in int8 too, {len(unsigned_full)} non-negative activations as uint8" + ("" if vnni else f" and {w7}"))
    return graphs, described


def host_route(vnni: bool) -> str:
    """The Q/DQ route this CPU runs well: 8-bit weights with VNNI, 7-bit dense weights without."""
    return "qdq-onnx" if vnni else "qdq-onnx-w7"


def float_twins(cos: dict[str, float]) -> set[str]:
    """Routes whose all-int8 variant is as faithful (within COSINE_GAP): the same graph with some layers in
    float, which only adds work in OpenVINO (FP32 convolutions, Reorders around them), so they are left out
    of the latency comparison, where a busy host's noise could pick them. Measured in one run with the
    order alternating (pretrained lite0, lite1, AVX2 without VNNI, idle host): p50 of the twin 1.07 and
    1.01 of NNCF's, of the all-int8 route 0.98 and 0.98; under load the build's own timing picked the twin."""
    return {k for k in cos if f"{k}-all-int8" in cos and cos[k] - cos[f"{k}-all-int8"] <= COSINE_GAP}


def compile_int8(ctx, qdq_graph: Path, precision_record: dict, vnni: bool | None = None) -> dict:
    """Every route measured on the tuning views; the chosen IR is left in ctx.dir. Returns the record."""
    from . import convert, load

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
            _nncf_ir(ctx, dirs["nncf"] / "model.xml")
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
        for name in ("model.xml", "model.bin"):
            shutil.move(str(dirs[chosen] / name), str(ctx.dir / name))
    finally:
        shutil.rmtree(alt, ignore_errors=True)
    described.setdefault("nncf", "model.sim.onnx via NNCF")
    if twins:
        why += f" (left out as float twins of all-int8 routes: {', '.join(sorted(twins))})"
    encoded = graphs.get(chosen, graphs.get("qdq-onnx"))  # NNCF's route: the Q/DQ graph's own encoding
    return {"files": ["model.xml", "model.bin"], "compress_to_fp16": False, "int8_route": chosen,
            "int8_route_reason": why, "converted_from": described[chosen],
            "int8_routes": {k: {"latency_p50_ms": round(lat[k], 4), "tuning_cosine_mean": round(cos[k], 6)} for k in lat},
            "int8_routes_measured_on": device, "cpu_vnni": vnni,
            "uint8_activations": sum(1 for n in encoded.graph.node if n.op_type == "QuantizeLinear"
                                     and ZERO_UINT8 in n.input),
            "nncf_seconds": round(nncf_seconds, 2)}
