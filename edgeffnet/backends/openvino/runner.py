"""The OpenVINO runner: an IR compiled for one device, one synchronous request and an asynchronous queue."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import openvino as ov

from edgeffnet.backends import AsyncQueue, Profiled, RunSettings
from edgeffnet.backends.openvino.outputs import add_outputs

_core: ov.Core | None = None


def core() -> ov.Core:
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def available(device: str) -> bool:
    return any(d == device or d.startswith(device + ".") for d in core().available_devices)


@contextmanager
def _runtime_stderr_dropped():
    """Drop what the runtime's C++ writes to file descriptor 2 while it reads a model: on a damaged IR,
    read_model tries every frontend it has, and TensorFlow's logs its own parse errors there, before the
    exception the caller turns into one line."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Runner:
    def __init__(
        self,
        xml: str | Path,
        device: str = "CPU",
        inference_precision: str | None = None,
        settings: RunSettings | None = None,
        note: str | None = None,
    ):
        s = settings or RunSettings()
        with _runtime_stderr_dropped():
            model = core().read_model(str(xml))
        if len(model.inputs) != 1 or len(model.outputs) < 1:  # an edited IR: not a classifier edgeffnet built
            raise ValueError(f"it has {len(model.inputs)} inputs and {len(model.outputs)} outputs, not 1 and 1")
        # Before compiling: a compiled model returns only the outputs it was compiled with.
        self.output_tensors, self._output_index = add_outputs(model, s.outputs) if s.outputs else ({}, {})
        if s.batch is not None and model.inputs[0].partial_shape[0].is_dynamic:
            shape = model.inputs[0].partial_shape
            shape[0] = s.batch
            model.reshape({model.inputs[0]: shape})
        config: dict = {"PERFORMANCE_HINT": s.hint}
        if inference_precision:
            config["INFERENCE_PRECISION_HINT"] = inference_precision
        if s.threads:
            config["INFERENCE_NUM_THREADS"] = s.threads
        if s.streams:
            config["NUM_STREAMS"] = s.streams
        self.device, self.config, self.xml, self.note, self.model = device, config, Path(xml), note, model
        self.compiled = core().compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        ps = self.compiled.inputs[0].partial_shape
        self.input_shape = tuple(d.get_length() if d.is_static else -1 for d in ps)

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(out[self.compiled.outputs[0]], dtype=np.float32).copy()

    def run_outputs(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The logits and each tensor named in settings.outputs, as float32, from one inference."""
        out = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})

        def take(i: int) -> np.ndarray:
            return np.asarray(out[self.compiled.outputs[i]], dtype=np.float32).copy()

        return take(0), {name: take(i) for name, i in self._output_index.items()}

    def bound(self, x: np.ndarray):
        self.request.set_input_tensor(ov.Tensor(np.ascontiguousarray(x, dtype=np.float32)))
        infer = self.request.infer
        return lambda: infer()

    def queue(self, x: np.ndarray) -> AsyncQueue:
        """Every request of an AsyncInferQueue (the compiled model's optimal number) bound to `x`."""
        q = ov.AsyncInferQueue(self.compiled)
        tensor = ov.Tensor(np.ascontiguousarray(x, dtype=np.float32))
        for req in q:
            req.set_input_tensor(tensor)
        done: list[float] = []
        q.set_callback(lambda req, _: done.append(req.latency))
        return AsyncQueue(q.start_async, q.wait_all, done, len(q))

    def profile(self, x: np.ndarray, iterations: int) -> Profiled:
        return profile(self, x, iterations)

    def describe(self) -> dict:
        props = {}
        for key in (
            "INFERENCE_PRECISION_HINT",
            "PERFORMANCE_HINT",
            "NUM_STREAMS",
            "INFERENCE_NUM_THREADS",
            "OPTIMAL_NUMBER_OF_INFER_REQUESTS",
        ):
            try:
                props[key] = str(self.compiled.get_property(key))
            except RuntimeError:
                pass
        return {
            "runtime": "openvino",
            "version": ov.get_version(),
            "device": self.device,
            "device_name": core().get_property(self.device, "FULL_DEVICE_NAME"),
            "settings": props,
            "artifact": self.xml.name,
        } | ({"note": self.note} if self.note else {})


def _rt(op, key: str) -> str:
    info = op.get_rt_info()
    return info[key].astype(str) if key in info else ""


def profile_nodes(compiled, request) -> list[dict]:
    """The executed nodes as OpenVINO's counters give them, and from the runtime model (keyed by the same
    names) the ONNX layers each node fused (`originalLayersNames`) and the precision it ran in. On the CPU
    plugin a node's time is the mean over every inference since compile, in whole microseconds (each
    inference's time truncated, then the total divided by the count: intel_cpu's PerfCount::avg), not the
    last inference's: its first reading after one inference is e.g. 2565 us, then 1398, 1008, 814 ... for
    a node that takes about 800 us (B0 at 128 px here)."""
    ops = {op.get_friendly_name(): op for op in compiled.get_runtime_model().get_ordered_ops()}
    rows = []
    for p in request.get_profiling_info():
        if p.status != ov.ProfilingInfo.Status.EXECUTED:
            continue
        op = ops.get(p.node_name)
        names = [n for n in _rt(op, "originalLayersNames").split(",") if n] if op is not None else []
        rows.append(
            {
                "node": p.node_name,
                "type": _rt(op, "layerType") if op is not None else p.node_type,
                "time_ms": p.real_time.total_seconds() * 1e3,
                "exec_type": p.exec_type,
                "precision": _rt(op, "runtimePrecision") if op is not None else "",
                "original_names": names,
            }
        )
    return rows


def window_mean(before: list[dict], after: list[dict], done_before: int, done: int) -> list[dict]:
    """The nodes' mean time over the inferences between two readings of running means: `before` after
    `done_before` inferences, `after` after `done` in all. Each reading is floor(total / count) in whole
    microseconds, so the mean is within (done_before + done) / (done - done_before) microseconds of the
    exact one, and like benchmark_app's (one reading at the end) about half a microsecond under it."""
    start = {r["node"]: r["time_ms"] for r in before}
    n = done - done_before
    return [
        r | {"time_ms": max(0.0, (r["time_ms"] * done - start.get(r["node"], 0.0) * done_before) / n)} for r in after
    ]


def profile(runner: Runner, x: np.ndarray, iterations: int, warmup: int = 3) -> Profiled:
    """`iterations` inferences of `x` with PERF_COUNT on, in a model compiled apart (the counters cost
    time, so the timed runner never has them), after `warmup` runs (weight reorders happen on the first).
    The CPU plugin's counters are running means since compile (profile_nodes), so the profile is each
    node's mean over the profiled inferences, from a reading after the warm-up and one at the end: the
    first inference (B0 at 128 px: its squeeze-excitation nodes 9.2 ms against 1.8 ms warm, the weights
    repacked) is left out, where the median of the running means read after each inference kept 1/(warmup
    + i) of it in reading i."""
    compiled = core().compile_model(runner.model, runner.device, runner.config | {"PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(np.ascontiguousarray(x, dtype=np.float32)))
    for _ in range(warmup):
        request.infer()
    before = profile_nodes(compiled, request) if warmup else []
    wall_ms = []
    for _ in range(iterations):
        t = time.perf_counter_ns()
        request.infer()
        wall_ms.append((time.perf_counter_ns() - t) / 1e6)
    mean = window_mean(before, profile_nodes(compiled, request), warmup, warmup + iterations)
    return Profiled([mean], wall_ms, statistic="mean", iterations=iterations)
