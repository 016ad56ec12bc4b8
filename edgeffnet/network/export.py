"""Stage 2, export: PyTorch module -> ONNX file, checked by onnx.checker.

Exporter: the TorchScript-based torch.onnx exporter (dynamo=False). The dynamo exporter emits opset 18+
only (and needs onnxscript), while the oldest runtime edgeffnet targets, TensorRT 8.2 on JetPack 4.6
(Jetson Nano/TX2), parses ONNX up to opset 13. Opset 13 is also the first with per-axis
QuantizeLinear/DequantizeLinear, which explicit INT8 needs, so 13 is the default: every target reads it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from edgeffnet.core.errors import UserError

OPSETS = range(13, 21)  # 13: per-axis Q/DQ and TensorRT 8.2; 20: the TorchScript exporter's newest
INPUT, OUTPUT = "input", "logits"


def export_onnx(
    model: torch.nn.Module,
    path: Path,
    resolution: int,
    batch: int,
    dynamic_batch: bool,
    opset: int,
    metadata: dict | None = None,
) -> dict:
    if opset not in OPSETS:
        raise UserError(
            f"--opset {opset} is not supported; use {OPSETS.start}..{OPSETS.stop - 1} "
            f"(13 is read by every target, TensorRT 8.2 included)"
        )
    x = torch.zeros(batch, 3, resolution, resolution)
    axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer/deprecation chatter; the checker and parity decide
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    graph = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        graph.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))
    return {
        "exporter": "torch.onnx (TorchScript)",
        "opset": opset,
        "nodes": len(graph.graph.node),
        "input": [batch if not dynamic_batch else "batch", 3, resolution, resolution],
    }
