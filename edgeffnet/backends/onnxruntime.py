"""ONNX Runtime (CPU): runs every ONNX graph edgeffnet writes; it verifies stages and is a bench baseline.

Its artifact is the ONNX graph itself: `compile` has nothing to convert, and `load` runs the bundle's
graph for a precision (model.sim.onnx for fp32, the baseline the bench compares with).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeffnet.backends import Profiled, RunSettings
from edgeffnet.core.artifact import Artifact
from edgeffnet.core.layout import FP16_GRAPH, INT8_GRAPH, SIMPLIFIED

GRAPHS = {"fp32": SIMPLIFIED, "fp16": FP16_GRAPH, "int8": INT8_GRAPH}


class Runner:
    def __init__(
        self,
        path: str | Path | bytes,
        threads: int | None = None,
        exact: bool = False,
        literal: bool = False,
        outputs: tuple[str, ...] = (),
    ):
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
        opts.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            if literal
            else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            if exact
            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        named, self.output_tensors = path, {}
        if outputs:  # a session returns only its graph's outputs: the named tensors become outputs first
            path, self.output_tensors = with_outputs(path, outputs)
        self.path = Path("<in memory>") if isinstance(path, bytes) else Path(path)  # bytes: a serialized graph
        self.source = path if isinstance(path, bytes) else str(path)
        if outputs and not isinstance(named, bytes):
            self.path = Path(named)
        self.session = ort.InferenceSession(
            path if isinstance(path, bytes) else str(path), opts, providers=["CPUExecutionProvider"]
        )
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

    def run_outputs(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The logits and each tensor named at construction, as float32, from one inference."""
        fetch = [self.session.get_outputs()[0].name, *self.output_tensors.values()]
        logits, *named = self.session.run(fetch, {self.input_name: x.astype(self.input_dtype, copy=False)})
        return (
            np.asarray(logits, np.float32),
            {k: np.asarray(v, np.float32) for k, v in zip(self.output_tensors, named)},
        )

    def queue(self, x: np.ndarray) -> None:
        return None  # the Python API runs one request at a time

    def profile(self, x: np.ndarray, iterations: int, warmup: int = 3) -> Profiled:
        """`iterations` inferences with ONNX Runtime's session profiler, in a session of its own (the
        profiler costs time, the timed session never has it), read back from the JSON it writes."""
        import tempfile

        from edgeffnet.core.untrusted import read_json

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
        opts.graph_optimization_level = self.session.get_session_options().graph_optimization_level
        with tempfile.TemporaryDirectory(prefix="edgeffnet-ort-profile-") as tmp:
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / "ort")
            session = ort.InferenceSession(self.source, opts, providers=["CPUExecutionProvider"])
            feed = {self.input_name: np.ascontiguousarray(x.astype(self.input_dtype, copy=False))}
            wall = []
            for _ in range(warmup + iterations):  # the warm-up's runs (first-run weight packing) are dropped
                t = time.perf_counter_ns()
                session.run(None, feed)
                wall.append((time.perf_counter_ns() - t) / 1e6)
            events = read_json(session.end_profiling(), cap=1 << 30, what="ONNX Runtime profile", kind=list)
        return Profiled(profile_runs(events)[warmup:], wall[warmup:])

    def describe(self) -> dict:
        return {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "provider": "CPUExecutionProvider",
            "threads": self.threads or os.cpu_count(),
            "graph": self.path.name,
        }


def _precision(args: dict) -> str:
    """The element type a node computed in: its first input's (ONNX Runtime's profiler lists types)."""
    for key in ("input_type_shape", "output_type_shape"):
        for entry in args.get(key) or []:
            if isinstance(entry, dict) and entry:
                return next(iter(entry))
    return ""


def profile_runs(events: list) -> list[list[dict]]:
    """ONNX Runtime's profile JSON as runtime node rows, one list per inference (its model_run events
    bound them; node events are `<node>_kernel_time`, with op_name and input types in their args)."""
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if isinstance(e, dict) and e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    out: list[list[dict]] = [[] for _ in runs]
    for e in events:
        if not (isinstance(e, dict) and e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")):
            continue
        args = e.get("args") or {}
        node = e["name"][: -len("_kernel_time")]
        for i, (start, end) in enumerate(runs):
            if start <= e["ts"] <= end:
                out[i].append(
                    {
                        "node": node,
                        "type": args.get("op_name", ""),
                        "time_ms": e["dur"] / 1e3,
                        "start_ms": e["ts"] / 1e3,
                        "exec_type": f"{args.get('provider', '')}:{args.get('op_name', '')}",
                        "precision": _precision(args),
                        "original_names": [node],
                    }
                )
                break
    return out


def compile(ctx, graph):
    """ONNX Runtime runs the ONNX graph as it is."""
    return Artifact("compile", graph.path, {"files": [], "runs": graph.path.name})


def load(bundle: Path, target, precision: str, settings: RunSettings | None = None) -> Runner:
    graph = Path(bundle) / GRAPHS[precision]
    if not graph.is_file():
        from edgeffnet.core.errors import UserError

        raise UserError(f"{bundle} has no {graph.name}; rebuild the bundle with edgeffnet build")
    s = settings or RunSettings()
    return open_graph(graph, s.threads, outputs=s.outputs)


def feature_tensor(graph) -> str:
    """The tensor the final global pooling reads (FEATURES): walk back from the graph's output to the
    first pool, breadth-first, so the classifier's own pooling is found before a squeeze-excitation pool."""
    from edgeffnet.core.errors import UserError

    producers = {out: node for node in graph.node for out in node.output}
    frontier, seen = [graph.output[0].name], set()
    while frontier:
        name = frontier.pop(0)
        node = producers.get(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        if node.op_type in ("GlobalAveragePool", "ReduceMean"):
            return node.input[0]
        frontier += list(node.input)
    raise UserError(
        "the ONNX graph has no global average pooling before its classifier: it has no feature "
        "map to expose (a class activation map needs one)"
    )


def with_outputs(graph: str | Path | bytes, names: tuple[str, ...]) -> tuple[bytes, dict[str, str]]:
    """A serialized copy of an ONNX graph (a path or serialized bytes) with the named tensors (FEATURES
    or the graph's own tensor names) among its outputs, and the tensor each name resolved to."""
    import onnx

    from edgeffnet.backends import FEATURES
    from edgeffnet.core.errors import UserError

    model = onnx.load_from_string(graph) if isinstance(graph, bytes) else onnx.load(str(graph))
    g = model.graph
    tensors = {name: feature_tensor(g) if name == FEATURES else name for name in names}
    known = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    missing = [n for n, t in tensors.items() if t not in known]
    if missing:
        raise UserError(f"the graph has no tensor {', '.join(map(repr, missing))} to expose as an output")
    have = {o.name for o in g.output}
    # Output types from shape inference: an FP16 graph's activations are float16, and ONNX Runtime
    # refuses an output declared with another type.
    typed = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for tensor in dict.fromkeys(tensors.values()):
        if tensor not in have:
            g.output.append(onnx.helper.make_tensor_value_info(tensor, typed.get(tensor, onnx.TensorProto.FLOAT), None))
    return model.SerializeToString(), tensors


def open_graph(graph: Path, threads: int | None = None, exact: bool = False, outputs: tuple[str, ...] = ()) -> Runner:
    """A Runner on a bundle's graph file; a damaged one (empty, garbage, no input) is one line."""
    from edgeffnet.core.errors import UserError

    try:
        return Runner(graph, threads, exact, outputs=outputs)
    except Exception as e:  # noqa: BLE001  (ONNX Runtime's own exception types are not RuntimeErrors)
        why = " ".join(str(e).split())[:100] or type(e).__name__
        raise UserError(
            f"ONNX Runtime cannot load {graph}: it is damaged or not an ONNX graph ({why}); rebuild "
            f"the bundle with edgeffnet build"
        ) from None


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
    return np.concatenate([runner.run(x[i : i + chunk]) for i in range(0, len(x), chunk)])
