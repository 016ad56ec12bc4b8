"""Explicit INT8: QuantizeLinear/DequantizeLinear pairs inserted into the FP32 graph.

The rules are TensorRT's (which OpenVINO and ONNX Runtime read too): int8, symmetric, zero point 0;
activations per tensor; weights per output channel (axis 0 of a Conv weight, the output axis of a Gemm
weight). Placement follows TensorRT's guidance: quantize the inputs of weighted ops (Conv, Gemm), of
pooling, and both inputs of residual Adds and squeeze-excitation Muls. A tensor read by
several quantized consumers gets one shared Q/DQ pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeffnet.graph.onnx_index import GraphIndex
from edgeffnet.graph.quantized import output_shift, rounded

WEIGHTED = ("Conv", "Gemm")
# Unweighted ops whose inputs are quantized too: GlobalAveragePool, and (see _eltwise) residual Adds
# and squeeze-excitation Muls, so the runtime keeps int8 between convs instead of converting to float
# around every elementwise op. Measured in OpenVINO on this CPU (p50, INT8 / FP32): B0 0.61 with them,
# 0.69 without (NNCF's defaults: 0.65); Lite0 0.50 vs 0.55. TensorRT's placement guidance asks for the
# same (quantized residual inputs let the add fuse into the int8 conv).
POOLS = ("GlobalAveragePool",)


@dataclass(frozen=True)
class Plan:
    """What gets quantized: weighted nodes (by name) and the activation tensors feeding them."""

    nodes: tuple[str, ...]  # Conv/Gemm nodes whose input and weight are quantized
    others: tuple[str, ...]  # unweighted nodes (pools, optionally residual Adds) whose inputs are quantized
    activations: tuple[str, ...]  # every activation tensor that receives a Q/DQ pair


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name: exclusions and reports refer to nodes by name."""
    seen = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)
    return model


def _eltwise(model: onnx.ModelProto) -> set[str]:
    """Residual Adds and squeeze-excitation Muls: two-activation ops between int8 convs.

    A Mul of x by Sigmoid(x) is SiLU, an activation that fuses into the conv before it, so it is left
    alone; a Mul of x by Sigmoid(y) is squeeze-excitation's channel scaling."""
    g = model.graph
    consts = {t.name for t in g.initializer}
    sigmoid_of = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Sigmoid"}
    out = set()
    for n in g.node:
        if n.op_type not in ("Add", "Mul") or len(n.input) != 2 or any(i in consts for i in n.input):
            continue
        a, b = n.input
        if n.op_type == "Mul" and (sigmoid_of.get(a) == b or sigmoid_of.get(b) == a):
            continue
        out.add(n.name)
    return out


def plan(model: onnx.ModelProto, exclude: frozenset[str] = frozenset(), eltwise: bool = True) -> Plan:
    g = model.graph
    consts = {t.name for t in g.initializer}
    weighted = [n for n in g.node if n.op_type in WEIGHTED and n.name not in exclude and n.input[1] in consts]
    elt = _eltwise(model) if eltwise else set()
    others = [n for n in g.node if n.name not in exclude and (n.op_type in POOLS or n.name in elt)]
    acts = [n.input[0] for n in weighted]
    for n in others:
        acts.extend(i for i in n.input if i not in consts)
    return Plan(tuple(n.name for n in weighted), tuple(n.name for n in others), tuple(dict.fromkeys(acts)))


def candidates(model: onnx.ModelProto) -> list[str]:
    """Every activation any plan could quantize (what calibration must measure)."""
    return list(plan(model, eltwise=True).activations)


def _weight_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1  # the output-feature axis of B
    return 0


ZERO = "qdq_zero_int8"  # the one zero point every activation pair shares


def _qdq_pair(tensor: str, scale: str, zero: str, name: str, **axis: int) -> list[onnx.NodeProto]:
    """QuantizeLinear then DequantizeLinear of `tensor`: `name`_q, `name`_dq, the nodes named after `name`."""
    return [
        helper.make_node("QuantizeLinear", [tensor, scale, zero], [f"{name}_q"], name=f"{name}_QuantizeLinear", **axis),
        helper.make_node(
            "DequantizeLinear", [f"{name}_q", scale, zero], [f"{name}_dq"], name=f"{name}_DequantizeLinear", **axis
        ),
    ]


def _activation_pairs(
    p: Plan, ranges: dict[str, float]
) -> tuple[dict[str, list[onnx.NodeProto]], list[onnx.TensorProto]]:
    """One Q/DQ pair per activation tensor, shared by all its quantized consumers, and the pairs' scales."""
    pairs: dict[str, list[onnx.NodeProto]] = {}
    scales: list[onnx.TensorProto] = []
    for t in p.activations:
        scale = max(float(ranges[t]), 1e-8) / 127.0
        scales.append(numpy_helper.from_array(np.array(scale, np.float32), f"{t}_scale"))
        pairs[t] = _qdq_pair(t, f"{t}_scale", ZERO, t)
    return pairs, scales


def _read_dequantized(p: Plan, nodes: dict[str, onnx.NodeProto], pairs: dict[str, list[onnx.NodeProto]]) -> None:
    """Point the planned nodes' activation inputs at the dequantized tensors."""
    dq_of = {t: f"{t}_dq" for t in pairs}
    for name in p.nodes:
        n = nodes[name]
        n.input[0] = dq_of.get(n.input[0], n.input[0])
    for name in p.others:
        n = nodes[name]
        for k, i in enumerate(n.input):
            n.input[k] = dq_of.get(i, i)


def _corrected_bias(
    n: onnx.NodeProto, inits: dict[str, onnx.TensorProto], w: np.ndarray, scale: np.ndarray, axis: int, mean: np.ndarray
) -> onnx.TensorProto:
    """The node's bias less the mean output shift that rounding its weight causes; the node then reads it."""
    shift = output_shift(n, rounded(w, scale, axis) - w, mean, axis)
    bias = (
        numpy_helper.to_array(inits[n.input[2]]).astype(np.float32)
        if len(n.input) > 2 and n.input[2]
        else np.zeros(w.shape[axis], np.float32)
    )
    b_name = f"{n.input[1]}_bias_corrected"
    if len(n.input) > 2:
        n.input[2] = b_name
    else:
        n.input.append(b_name)
    return numpy_helper.from_array((bias - shift).astype(np.float32), b_name)


def _quantize_weight(
    n: onnx.NodeProto, inits: dict[str, onnx.TensorProto], mean: np.ndarray | None
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """(the weight's Q/DQ pair, to go before `n`; its scales and zero points, and a corrected bias with `mean`).

    Per-output-channel symmetric scales; the FP32 weight stays and is fake-quantized, which every TensorRT
    version folds into int8 weights (int8 initializers need newer parsers)."""
    w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
    axis = _weight_axis(n)
    reduce = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.abs(w).max(axis=reduce)
    scale = np.where(amax > 0, amax / 127.0, 1e-8).astype(np.float32)
    base = n.input[1]
    s_name, z_name = f"{base}_wscale", f"{base}_wzero"
    added = [
        numpy_helper.from_array(scale, s_name),
        numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name),
    ]
    if mean is not None:
        added.append(_corrected_bias(n, inits, w, scale, axis, mean))
    pair = _qdq_pair(base, s_name, z_name, base, axis=axis)
    n.input[1] = f"{base}_dq"
    return pair, added


def _in_order(
    g: onnx.GraphProto,
    index: GraphIndex,
    pairs: dict[str, list[onnx.NodeProto]],
    before: dict[str, list[onnx.NodeProto]],
) -> list[onnx.NodeProto]:
    """The graph's nodes with the Q/DQ pairs placed so the list stays topologically sorted: an activation's
    pair right after its producer (or first, for a graph input), a weight's right before its node."""
    head: list[onnx.NodeProto] = []
    after: dict[str, list[onnx.NodeProto]] = {}
    for t, pair in pairs.items():
        producer = index.producer.get(t)
        (after.setdefault(producer.name, []) if producer else head).extend(pair)
    ordered = list(head)
    for n in g.node:
        ordered.extend(before.get(n.name, []))
        ordered.append(n)
        ordered.extend(after.get(n.name, []))
    return ordered


def quantize(
    model: onnx.ModelProto, p: Plan, ranges: dict[str, float], input_means: dict[str, np.ndarray] | None = None
) -> onnx.ModelProto:
    """Return a copy of `model` with Q/DQ pairs for plan `p`, scales from `ranges` (|x| thresholds).

    With `input_means` (per-channel means of each weighted node's input over the calibration data), the
    bias absorbs the mean output shift that rounding the weights causes (bias correction). BatchNorm
    folded into a depthwise conv can give weights whose 0.5% rounding error, times a large positive
    input mean, moves whole channels: pretrained Lite0's first depthwise conv alone drops the logits'
    cosine to 0.93 without it.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    index = GraphIndex(m)
    nodes = {n.name: n for n in g.node}
    new_inits = [numpy_helper.from_array(np.zeros((), np.int8), ZERO)]
    pairs, scales = _activation_pairs(p, ranges)
    new_inits += scales
    source = {name: nodes[name].input[0] for name in p.nodes}  # the FP32 tensor each weighted node reads
    _read_dequantized(p, nodes, pairs)
    before: dict[str, list[onnx.NodeProto]] = {}  # node name -> the weight's Q/DQ pair, inserted before it
    for name in p.nodes:
        mean = input_means.get(source[name]) if input_means is not None else None
        before[name], added = _quantize_weight(nodes[name], index.initializers, mean)
        new_inits += added
    ordered = _in_order(g, index, pairs, before)
    del g.node[:]
    g.node.extend(ordered)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]  # biases replaced by bias correction go
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(m)
    return m


def summary(model: onnx.ModelProto) -> dict:
    ops = [n.op_type for n in model.graph.node]
    return {
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
        "conv": ops.count("Conv"),
        "gemm": ops.count("Gemm"),
    }
