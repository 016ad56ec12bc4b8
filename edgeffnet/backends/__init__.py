"""Backends: each has the same two roles, `compile` (graph -> target artifact) and `load` (artifact -> Runner).

A Runner runs the artifact: `run(x)` returns outputs for a float32 NCHW batch, `bound(x)` returns a
zero-argument callable doing one synchronous inference on pre-bound input (what the latency harness
times), and `describe()` says what it ran on and with which settings.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UserError


def get(name: str) -> ModuleType:
    if name not in ("openvino", "onnxruntime", "tensorrt"):
        raise UserError(f"unknown backend '{name}'; known: openvino, onnxruntime, tensorrt")
    return importlib.import_module(f"{__name__}.{name}")
