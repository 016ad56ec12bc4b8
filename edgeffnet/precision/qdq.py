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
    inits = index.initializers
    nodes = {n.name: n for n in g.node}
    new_inits: list[onnx.TensorProto] = []
    zero = "qdq_zero_int8"
    new_inits.append(numpy_helper.from_array(np.zeros((), np.int8), zero))
    before: dict[str, list[onnx.NodeProto]] = {}  # node name -> Q/DQ nodes to insert before it

    # Activations: one Q/DQ pair per tensor, shared by all its quantized consumers.
    dq_of: dict[str, str] = {}
    pairs: dict[str, list[onnx.NodeProto]] = {}
    for t in p.activations:
        scale = max(float(ranges[t]), 1e-8) / 127.0
        s_name, q_name, dq_name = f"{t}_scale", f"{t}_q", f"{t}_dq"
        new_inits.append(numpy_helper.from_array(np.array(scale, np.float32), s_name))
        pairs[t] = [
            helper.make_node("QuantizeLinear", [t, s_name, zero], [q_name], name=f"{t}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q_name, s_name, zero], [dq_name], name=f"{t}_DequantizeLinear"),
        ]
        dq_of[t] = dq_name
    source = {name: nodes[name].input[0] for name in p.nodes}  # the FP32 tensor each weighted node reads
    for name in p.nodes:
        n = nodes[name]
        n.input[0] = dq_of.get(n.input[0], n.input[0])
    for name in p.others:
        n = nodes[name]
        for k, i in enumerate(n.input):
            n.input[k] = dq_of.get(i, i)

    # Weights: per-output-channel symmetric scales; the FP32 weight stays and is fake-quantized, which
    # every TensorRT version folds into int8 weights (int8 initializers need newer parsers).
    for name in p.nodes:
        n = nodes[name]
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        axis = _weight_axis(n)
        reduce = tuple(a for a in range(w.ndim) if a != axis)
        amax = np.abs(w).max(axis=reduce)
        scale = np.where(amax > 0, amax / 127.0, 1e-8).astype(np.float32)
        base = n.input[1]
        s_name, z_name = f"{base}_wscale", f"{base}_wzero"
        new_inits.append(numpy_helper.from_array(scale, s_name))
        new_inits.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name))
        if input_means is not None and source[name] in input_means:
            shift = output_shift(n, rounded(w, scale, axis) - w, input_means[source[name]], axis)
            bias = (
                numpy_helper.to_array(inits[n.input[2]]).astype(np.float32)
                if len(n.input) > 2 and n.input[2]
                else np.zeros(w.shape[axis], np.float32)
            )
            b_name = f"{base}_bias_corrected"
            new_inits.append(numpy_helper.from_array((bias - shift).astype(np.float32), b_name))
            if len(n.input) > 2:
                n.input[2] = b_name
            else:
                n.input.append(b_name)
        before[name] = [
            helper.make_node(
                "QuantizeLinear", [base, s_name, z_name], [f"{base}_q"], axis=axis, name=f"{base}_QuantizeLinear"
            ),
            helper.make_node(
                "DequantizeLinear",
                [f"{base}_q", s_name, z_name],
                [f"{base}_dq"],
                axis=axis,
                name=f"{base}_DequantizeLinear",
            ),
        ]
        n.input[1] = f"{base}_dq"

    # Keep the node list topologically sorted: an activation's Q/DQ right after its producer.
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
