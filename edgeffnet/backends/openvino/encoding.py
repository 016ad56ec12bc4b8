"""OpenVINO's encodings of the shared Q/DQ graph, and which one this CPU runs well.

Every target reads the same Q/DQ ONNX graph (precision/qdq.py); OpenVINO's CPU plugin runs it best when its
non-negative activations are uint8 and, on an x86 CPU without VNNI, its dense-layer weights use 7 bits.
These rewrites are OpenVINO's business, so they live with its backend; the build (pipeline/int8_routes.py)
measures the routes they make and keeps the best.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgeffnet.graph.onnx_index import GraphIndex
from edgeffnet.graph.quantized import output_shift, rounded

ROUTE_8BIT = "qdq-onnx"  # the Q/DQ graph with uint8 where activations cannot be negative
ROUTE_7BIT = "qdq-onnx-w7"  # ... and 7-bit dense-layer weights, bias-corrected (x86 without VNNI)

ZERO_UINT8 = "qdq_zero_uint8"
_ALWAYS_NONNEGATIVE = ("Relu", "Sigmoid")
_KEEP_SIGN = ("GlobalAveragePool", "MaxPool", "AveragePool", "Flatten", "Reshape", "QuantizeLinear", "DequantizeLinear")


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
        if (
            zero.dtype != np.int8
            or zero.ndim
            or not dqs
            or any(d.op_type != "DequantizeLinear" or d.input[1:] != q.input[1:] for d in dqs)
        ):
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
    from edgeffnet.core.host import cpu_flags  # host reads the flags once; unreadable flags are empty: no avx2

    flags = cpu_flags() if flags is None else flags
    if "avx2" not in flags:
        return True  # not an AVX2 x86 (Arm, or too old for OpenVINO's int8 kernels): no pmaddubsw path
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"})


def seven_bit_weights(
    model: onnx.ModelProto, input_means: dict[str, np.ndarray] | None = None
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
    layers = {
        n.input[1]: n
        for n in m.graph.node
        if n.op_type in ("Conv", "Gemm")
        and len(n.input) > 1
        and next((a.i for a in n.attribute if a.name == "group"), 1) == 1
    }
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


def _correct_bias(
    m: onnx.ModelProto,
    index: GraphIndex,
    layer: onnx.NodeProto,
    dq: onnx.NodeProto,
    s8: np.ndarray,
    s7: np.ndarray,
    input_means: dict[str, np.ndarray],
) -> None:
    """Subtract E[(W7 - W8) x] from `layer`'s bias (x at its calibration mean); a layer whose FP32 weight
    or input mean is not in reach keeps its bias."""
    inits = index.initializers
    weight = _quantized_source(index, dq.output[0])
    source = _quantized_source(index, layer.input[0])
    if weight not in inits or source not in input_means:
        return
    w = numpy_helper.to_array(inits[weight]).astype(np.float32)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    shift = output_shift(layer, rounded(w, s7, axis, 63) - rounded(w, s8, axis, 127), input_means[source], axis)
    bias = (
        numpy_helper.to_array(inits[layer.input[2]]).astype(np.float32)
        if len(layer.input) > 2 and layer.input[2]
        else np.zeros(w.shape[axis], np.float32)
    )
    name = f"{weight}_bias_w7"  # a new initializer: the 8-bit bias may be shared with another reader
    m.graph.initializer.append(numpy_helper.from_array((bias - shift).astype(np.float32), name))
    if len(layer.input) > 2:
        layer.input[2] = name
    else:
        layer.input.append(name)


def host_route(vnni: bool) -> str:
    """The Q/DQ route this CPU runs well: 8-bit weights with VNNI, 7-bit dense weights without."""
    return ROUTE_8BIT if vnni else ROUTE_7BIT


def encode(model: onnx.ModelProto, route: str, input_means: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The Q/DQ graph in a route's encoding (ROUTE_8BIT or ROUTE_7BIT)."""
    model, _ = unsigned_where_nonnegative(model)
    if route == ROUTE_7BIT:
        model, _ = seven_bit_weights(model, input_means)
    return model
