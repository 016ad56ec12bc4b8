"""edgeffnet: compound-scaled EfficientNets compiled and measured for the device you ship to.

The bundle side (`Bundle`, `bench`, `compile`) imports no PyTorch: it runs on a device with only its
runtime installed. The build side (`build`, `create_model`, ...) loads PyTorch when first used.
"""

from __future__ import annotations

from edgeffnet.core import telemetry
from edgeffnet.core.version import __version__  # noqa: F401  (edgeffnet.__version__)

telemetry.off()  # before anything imports OpenVINO, NNCF or ONNX Runtime

from edgeffnet.bundle import Bundle  # noqa: E402
from edgeffnet.core.errors import UserError  # noqa: E402
from edgeffnet.measure.bench import bench  # noqa: E402
from edgeffnet.measure.records import Record  # noqa: E402

__all__ = [
    "build",
    "Bundle",
    "bench",
    "Record",
    "compile",
    "spec",
    "create_model",
    "save_weights",
    "ModelSpec",
    "EfficientNet",
    "Numerics",
    "Preprocess",
    "UserError",
    "count_macs",
    "count_params",
    "BuildOptions",
]

# name -> module that defines it; imported on first access (PEP 562), so `import edgeffnet` stays light.
_LAZY = {
    "create_model": "network.reference",
    "save_weights": "network.reference",
    "EfficientNet": "network.model",
    "Numerics": "network.model",
    "count_macs": "network.model",
    "count_params": "network.model",
    "Preprocess": "core.preprocess",
    "ModelSpec": "specs.scaling",
    "BuildOptions": "pipeline.options",
}


def build(
    spec: str, target: str = "cpu", precision: str | None = None, weights: str | None = None, output=None, **options
) -> Bundle:
    """Build `spec` for `target` into a verified bundle; see edgeffnet.pipeline.build."""
    from edgeffnet.pipeline import build as _build

    return _build(spec, target, precision, weights, output, **options)


def compile(bundle) -> Bundle:  # noqa: A001 - the command's name
    """Finish a bundle's pending TensorRT engine on this device (build, verify, update the bundle)."""
    from edgeffnet.workflows.compile_on_device import compile_on_device

    return compile_on_device(bundle)


def spec(text):
    """The scaled specification for a model-spec string (see `edgeffnet info --help` for the grammar)."""
    from edgeffnet.specs.scaling import parse_spec

    return parse_spec(text)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'edgeffnet' has no attribute {name!r}")
