"""FP16 graph: weights and activations in float16, the model's inputs and outputs float32 with casts at the edges.

TensorRT's strongly typed networks (TensorRT 10/11) take precision from the graph's tensor types, and
older TensorRT with the FP16 flag builds the same graph, so the FP16 decision is made once, here.
Ops listed in `keep_fp32` stay float32, wrapped in casts.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeffnet.graph.onnx_index import GraphIndex

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def _float_initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer if t.data_type == FLOAT}


def to_fp16(model: onnx.ModelProto, keep_fp32: frozenset[str] = frozenset()) -> onnx.ModelProto:
    """Return an FP16 copy of an FP32 graph; nodes whose op_type is in `keep_fp32` compute in FP32."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    init_names = {t.name for t in g.initializer}
    input_names = {x.name for x in g.input}
    kept = [n for n in g.node if n.op_type in keep_fp32]
    kept_inputs = {i for n in kept for i in n.input}
    index = GraphIndex(m)

    # Initializers used only by kept nodes stay FP32; the rest become FP16.
    for name, t in _float_initializers(g).items():
        if name in kept_inputs and all(c.op_type in keep_fp32 for c in index.reader_nodes(name)):
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), name)
        t.CopyFrom(half)
    for n in g.node:  # constants folded into nodes
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))

    new_nodes: list[onnx.NodeProto] = []
    # Inputs: graph input (FP32) -> Cast -> FP16 tensor that the body reads.
    for inp in g.input:
        if inp.type.tensor_type.elem_type != FLOAT or inp.name in init_names:
            continue
        half_name = f"{inp.name}_fp16"
        for c in index.reader_nodes(inp.name):
            if c.op_type in keep_fp32:
                continue
            for k, i in enumerate(c.input):
                if i == inp.name:
                    c.input[k] = half_name
        new_nodes.append(helper.make_node("Cast", [inp.name], [half_name], to=HALF, name=f"cast_{inp.name}_to_fp16"))

    for n in g.node:
        if n.op_type not in keep_fp32:
            new_nodes.append(n)
            continue
        # A kept node reads FP16 activations through casts up and writes FP32 that is cast back down.
        for k, i in enumerate(n.input):
            if i and i not in init_names and i not in input_names:
                up = f"{i}_fp32_for_{n.name or n.op_type}"
                new_nodes.append(helper.make_node("Cast", [i], [up], to=FLOAT, name=f"cast_{up}"))
                n.input[k] = up
        outs = list(n.output)
        for k, o in enumerate(outs):
            n.output[k] = f"{o}_fp32"
        new_nodes.append(n)
        for o in outs:
            new_nodes.append(helper.make_node("Cast", [f"{o}_fp32"], [o], to=HALF, name=f"cast_{o}_to_fp16"))

    # Outputs: the body's FP16 result -> Cast -> the FP32 output name users see.
    for out in g.output:
        if out.type.tensor_type.elem_type != FLOAT:
            continue
        half_name = f"{out.name}_fp16"
        for n in new_nodes:
            for k, o in enumerate(n.output):
                if o == out.name:
                    n.output[k] = half_name
        for n in new_nodes:
            for k, i in enumerate(n.input):
                if i == out.name:
                    n.input[k] = half_name
        new_nodes.append(helper.make_node("Cast", [half_name], [out.name], to=FLOAT, name=f"cast_{out.name}_to_fp32"))

    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]  # stale FP32 types; shape inference recomputes them
    m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    onnx.checker.check_model(m)
    return m


def float_types(model: onnx.ModelProto) -> dict[str, int]:
    """How many initializers of each float type the graph holds (for tests and the manifest)."""
    out: dict[str, int] = {}
    for t in model.graph.initializer:
        name = TensorProto.DataType.Name(t.data_type)
        out[name] = out.get(name, 0) + 1
    return out
