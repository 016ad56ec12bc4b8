"""ONNX Runtime (CPU): runs every ONNX graph edgeffnet writes; it verifies stages and is a bench baseline.

Its artifact is the ONNX graph itself: `compile` has nothing to convert, and `load` runs the bundle's
graph for a precision (model.sim.onnx for fp32, the baseline the bench compares with).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import RunSettings

GRAPHS = {"fp32": "model.sim.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


class Runner:
    def __init__(self, path: str | Path | bytes, threads: int | None = None, exact: bool = False,
                 literal: bool = False):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        # exact: no layout transformations. ORT_ENABLE_ALL's NCHWc kernels round differently enough to
        # miss 1e-4 on a deep net (B7, one photo: 1.8e-4 against FP64, where PyTorch FP32, OpenVINO and
        # ORT without them stay within 2.5e-5), which is ORT's error, not the graph's. Verification asks
        # for exact; the speed baseline keeps every optimisation.
        # literal: no graph rewriting at all, node by node as written: tensors exposed as outputs stay the
        # graph's own, and a DequantizeLinear feeding a Conv with float weights is not turned into ORT's
        # per-tensor int8 weights (which the extended level does).
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if literal
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if exact
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        self.path = Path("<in memory>") if isinstance(path, bytes) else Path(path)  # bytes: a serialized graph
        self.session = ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts,
                                            providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:  # an edited graph: not a classifier edgeffnet built
            raise ValueError(f"the graph has {len(inputs)} inputs, not 1")
        inp = inputs[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.threads = threads
        self.device = "CPU"

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: x.astype(self.input_dtype, copy=False)})[0]
        return out.astype(np.float32, copy=False)

    def bound(self, x: np.ndarray):
        feed = {self.input_name: np.ascontiguousarray(x.astype(self.input_dtype, copy=False))}
        run = self.session.run
        return lambda: run(None, feed)

    def queue(self, x: np.ndarray) -> None:
        return None  # the Python API runs one request at a time

    def describe(self) -> dict:
        return {"runtime": "onnxruntime", "version": ort.__version__, "provider": "CPUExecutionProvider",
                "threads": self.threads or os.cpu_count(), "graph": self.path.name}


def compile(ctx, graph):
    """ONNX Runtime runs the ONNX graph as it is."""
    from ..pipeline.context import Artifact

    return Artifact("compile", graph.path, {"files": [], "runs": graph.path.name})


def load(bundle: Path, target, precision: str, settings: RunSettings | None = None) -> Runner:
    graph = Path(bundle) / GRAPHS[precision]
    if not graph.is_file():
        from ..errors import UserError

        raise UserError(f"{bundle} has no {graph.name}; rebuild the bundle with edgeffnet build")
    return open_graph(graph, (settings or RunSettings()).threads)


def open_graph(graph: Path, threads: int | None = None, exact: bool = False) -> Runner:
    """A Runner on a bundle's graph file; a damaged one (empty, garbage, no input) is one line."""
    from ..errors import UserError

    try:
        return Runner(graph, threads, exact)
    except Exception as e:  # noqa: BLE001  (ONNX Runtime's own exception types are not RuntimeErrors)
        why = " ".join(str(e).split())[:100] or type(e).__name__
        raise UserError(f"ONNX Runtime cannot load {graph}: it is damaged or not an ONNX graph ({why}); rebuild "
                        f"the bundle with edgeffnet build") from None


def free_batch(model):
    """A copy whose batch dimension is symbolic (edgeffnet graphs never bake the batch into a Reshape:
    Flatten keeps it free), so many views run per call whatever batch the bundle exports."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for v in list(m.graph.input) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    del m.graph.value_info[:]
    return m


def run_all(graph, x: np.ndarray, chunk: int = 32, literal: bool = False) -> np.ndarray:
    """Outputs for many views at once, `chunk` per call (what verification and calibration need);
    `graph` is a path or an onnx.ModelProto."""
    import onnx

    model = graph if isinstance(graph, onnx.ModelProto) else onnx.load(str(graph))
    runner = Runner(free_batch(model).SerializeToString(), exact=True, literal=literal)
    return np.concatenate([runner.run(x[i:i + chunk]) for i in range(0, len(x), chunk)])
