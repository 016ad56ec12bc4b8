"""Lookups over an ONNX graph that several passes need: constants, the producer and the readers of a tensor."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


class GraphIndex:
    """A read-only index of `model.graph`, built once. Rebuild it after changing the graph."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.model = model
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        self.constants: dict[str, onnx.TensorProto] = dict(self.initializers)
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.constants[n.output[0]] = n.attribute[0].t
        self.producer: dict[str, onnx.NodeProto] = {o: n for n in g.node for o in n.output}
        # tensor -> [(node, input index)], in graph order
        self.readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for n in g.node:
            for k, i in enumerate(n.input):
                if i:
                    self.readers.setdefault(i, []).append((n, k))
        self.outputs = {o.name for o in g.output}
        self.value_info = {v.name: v for v in list(g.input) + list(g.output) + list(g.value_info)}

    def reader_nodes(self, tensor: str) -> list[onnx.NodeProto]:
        return [n for n, _ in self.readers.get(tensor, [])]

    def array(self, name: str) -> np.ndarray | None:
        t = self.constants.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def rank(self, name: str) -> int | None:
        if name in self.constants:
            return len(self.constants[name].dims)
        v = self.value_info.get(name)
        return len(v.type.tensor_type.shape.dim) if v is not None else None
