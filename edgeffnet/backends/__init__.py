"""Backends: each has the same two roles behind one contract.

- `compile(ctx, graph) -> Artifact`: the build stage that turns the precision stage's ONNX graph into what
  the target runs (an OpenVINO IR, a TensorRT engine or, off the device, the engine's pending recipe).
- `load(bundle, target, precision, settings) -> Runner`: the artifact ready to run on this host.

A Runner runs the artifact: `run(x)` returns outputs for a float32 NCHW batch; `bound(x)` returns a
zero-argument callable doing one synchronous inference on pre-bound input (what the latency loop times);
`queue(x)` returns the runtime's asynchronous request queue bound to `x`, or None where the runtime has
none (throughput mode then times the synchronous loop); `describe()` says what ran where, with which
settings. Outputs are compared with the reference apart from the backends (edgeffnet.core.verify).

A runner whose runtime has a per-node profiler is also `Profiling`: `profile(x, iterations)` runs
`iterations` inferences with it (on a model or session of its own: the timed one never carries the
profiler) and returns a `Profiled`: each inference's host-clock latency, and the nodes the runtime
executed in it, each a dict {node, type, time_ms,
exec_type, precision, original_names} (and start_ms where the runtime gives start times): `original_names`
are the ONNX node names the node came from (fused nodes list several), `precision` the element type it
computed in as the runtime says it. measure/profile.py maps them onto the bundle's layer table.

Extra outputs: a caller that needs a tensor inside the network (a class activation map's feature map,
calibration's activations) names it in `RunSettings.outputs` and the backend adds it to what it loads;
`run_outputs(x)` then returns the logits and each named tensor from one inference. The request belongs
to loading, not to a run: a compiled OpenVINO model and an ONNX Runtime session return only the outputs
they were built with. ONNX Runtime and OpenVINO can expose them; TensorRT (an engine cannot grow an
output after it is built) and PyTorch refuse.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeffnet.core.errors import UserError

NAMES = ("openvino", "tensorrt", "onnxruntime", "pytorch")
# An extra output every backend that has them resolves in its own form of the graph: the feature map the
# final global average pooling reads (in an INT8 IR, its FakeQuantize's output).
FEATURES = "features"


@dataclass
class AsyncQueue:
    """An asynchronous request queue bound to one input: `start()` launches one inference (blocking while
    every request is busy), `wait_all()` waits for all, `latencies_ms` collects each request's own latency."""

    start: Callable[[], Any]
    wait_all: Callable[[], Any]
    latencies_ms: list
    requests: int


@dataclass(frozen=True)
class RunSettings:
    """How to load an artifact for running. Fields a runtime has no such knob for are ignored by it."""

    hint: str = "LATENCY"  # LATENCY | THROUGHPUT: the runtime's own performance mode where it has one
    threads: int | None = None
    streams: int | None = None
    batch: int | None = None  # images per request for a dynamic-batch artifact
    # Build-time verification of a bundle for a device this host lacks (an Intel GPU/NPU profile on a
    # workstation): check the artifact on the CPU, and say so. Never used for measurement.
    cpu_fallback: bool = False
    # Tensors to expose beside the logits, for Runner.run_outputs: FEATURES or a tensor name of the graph.
    outputs: tuple[str, ...] = ()


@runtime_checkable
class Runner(Protocol):
    device: str

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def bound(self, x: np.ndarray) -> Callable[[], Any]: ...

    def queue(self, x: np.ndarray) -> AsyncQueue | None: ...

    def describe(self) -> dict: ...


@dataclass
class Profiled:
    """Profiled inferences: per inference, the runtime's node rows and the host's wall time around it.

    A runtime whose counters are running means (OpenVINO's CPU plugin) gives one run, the nodes' mean over
    the `iterations` profiled inferences, with `statistic` "mean"; wall_ms still has one time per inference."""

    runs: list  # list[list[dict]]
    wall_ms: list  # list[float], one per profiled inference
    statistic: str = "median"  # "median": runs are single inferences; "mean": runs[0] is their mean
    iterations: int | None = None  # profiled inferences (default: len(runs))


@runtime_checkable
class Profiling(Protocol):
    def profile(self, x: np.ndarray, iterations: int) -> Profiled: ...


@runtime_checkable
class OutputsRunner(Runner, Protocol):
    """A runner loaded with RunSettings.outputs. `output_tensors` maps each requested name to the tensor
    it resolved to in the runtime's graph."""

    output_tensors: dict[str, str]

    def run_outputs(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...


class Backend(Protocol):
    def compile(self, ctx, graph) -> Any: ...  # BuildContext, Artifact -> Artifact

    def load(self, bundle: Path, target, precision: str, settings: RunSettings | None = None) -> Runner: ...


# The extra that installs each backend's runtime (pyproject.toml).
EXTRAS = {"openvino": "openvino", "tensorrt": "tensorrt", "onnxruntime": "onnxruntime", "pytorch": "build"}


def get(name: str) -> Backend:
    """The backend module by name, imported only when asked (each pulls its runtime in). A runtime this
    install lacks (a device-side install carries only its own) is one line naming the extra to add."""
    if name not in NAMES:
        raise UserError(f"unknown backend '{name}'; known: {', '.join(NAMES)}")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as e:
        from edgeffnet.core.extras import missing

        error = missing(e, f"the {name} backend", EXTRAS[name])
        if error is None:
            raise
        raise error from None
