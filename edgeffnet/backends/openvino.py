"""OpenVINO: compile = ONNX graph -> IR (model.xml/.bin); run = the IR compiled for the profile's device.

The IR is converted from the graph the precision stage produced (the same file every target consumes),
not from PyTorch: one conversion path for fp32, fp16 and Q/DQ int8, and a benchmark
(benchmarks/openvino_convert_source.py) shows it is as fast and as exact as converting from PyTorch.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import openvino as ov

_core: ov.Core | None = None


def core() -> ov.Core:
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def available(device: str) -> bool:
    return any(d == device or d.startswith(device + ".") for d in core().available_devices)


def compile(graph: Path, out_dir: Path, target, precision: str) -> dict:
    """Write model.xml/model.bin into out_dir. fp16 stores FP16-compressed weights; others keep FP32.

    The IR is device-independent (OpenVINO compiles it for the device when it is loaded), so a bundle
    for a GPU or NPU can be built on a machine without one."""
    # From bytes, not the path: convert_model splits a path string at commas (TF's "graph,checkpoint"),
    # and bundle names such as "b0,res=96" have them.
    model = ov.convert_model(io.BytesIO(Path(graph).read_bytes()))
    # save_model compresses to FP16 by default: an fp32/int8 IR must say no, or its weights lose bits.
    ov.save_model(model, str(out_dir / "model.xml"), compress_to_fp16=(precision == "fp16"))
    return {"files": ["model.xml", "model.bin"], "converted_from": graph.name, "compress_to_fp16": precision == "fp16"}


class Runner:
    def __init__(self, xml: str | Path, device: str = "CPU", inference_precision: str | None = None,
                 hint: str = "LATENCY", threads: int | None = None, streams: int | None = None,
                 batch: int | None = None):
        model = core().read_model(str(xml))
        if batch is not None and model.inputs[0].partial_shape[0].is_dynamic:
            shape = model.inputs[0].partial_shape
            shape[0] = batch
            model.reshape({model.inputs[0]: shape})
        config: dict = {"PERFORMANCE_HINT": hint}
        if inference_precision:
            config["INFERENCE_PRECISION_HINT"] = inference_precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if streams:
            config["NUM_STREAMS"] = streams
        self.device, self.config, self.xml, self.note = device, config, Path(xml), None
        self.compiled = core().compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        ps = self.compiled.inputs[0].partial_shape
        self.input_shape = tuple(d.get_length() if d.is_static else -1 for d in ps)

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(out[self.compiled.outputs[0]], dtype=np.float32).copy()

    def bound(self, x: np.ndarray):
        tensor = ov.Tensor(np.ascontiguousarray(x, dtype=np.float32))
        self.request.set_input_tensor(tensor)
        infer = self.request.infer
        return lambda: infer()

    def queue(self, x: np.ndarray):
        """Throughput mode: every request of an AsyncInferQueue (the compiled model's optimal number) bound
        to `x`. Returns (start, wait_all, latencies_ms, requests): start() launches one inference, blocking
        while all are busy; latencies_ms collects each finished request's own latency."""
        q = ov.AsyncInferQueue(self.compiled)
        tensor = ov.Tensor(np.ascontiguousarray(x, dtype=np.float32))
        for req in q:
            req.set_input_tensor(tensor)
        done: list[float] = []
        q.set_callback(lambda req, _: done.append(req.latency))
        return q.start_async, q.wait_all, done, len(q)

    def describe(self) -> dict:
        props = {}
        for key in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                    "OPTIMAL_NUMBER_OF_INFER_REQUESTS"):
            try:
                props[key] = str(self.compiled.get_property(key))
            except RuntimeError:
                pass
        return {"runtime": "openvino", "version": ov.get_version(), "device": self.device,
                "device_name": core().get_property(self.device, "FULL_DEVICE_NAME"), "settings": props,
                "artifact": self.xml.name} | ({"note": self.note} if self.note else {})


def load(bundle_dir: Path, target, precision: str, fallback: bool = False, **settings) -> Runner:
    """The bundle's IR compiled for the profile's device with its inference precision.

    With `fallback`, a device this host lacks is replaced by the CPU (build-time verification of a
    GPU/NPU bundle on a workstation); the runner's describe() says so.
    """
    device = target.device
    precision_hint = target.options.get("inference_precision", {}).get(precision)
    note = None
    if not available(device):
        if not fallback:
            from ..errors import UserError

            raise UserError(f"OpenVINO device {device} (target {target.name}) is not present on this host; "
                            f"available: {', '.join(core().available_devices)}")
        note = f"{device} not present on this host; verified on CPU"
        device = "CPU"
        if precision_hint not in ("f32", None):
            precision_hint = "f32"  # the CPU checks the IR itself, not the device's arithmetic
    runner = Runner(bundle_dir / "model.xml", device, precision_hint, **settings)
    runner.note = note
    return runner
