"""The bundle's layer table (layers.json): every layer of `layers.spec_layers`, with the ONNX nodes of it.

Written at build time from the graph the target runs, read at bench time on the device, where there may
be neither ONNX nor PyTorch: this module imports neither. A runtime's profiler names its nodes after the
ONNX nodes they came from (OpenVINO's `originalLayersNames`, ONNX Runtime's node names, TensorRT's layer
names), and the export names every ONNX node by the PyTorch module path that made it
(`/stages/stages.1/stages.1.0/dw/conv/Conv`); `layer_of` turns such a name, or one a pass derived from it
(`.../Conv/WithoutBiases`, `.../Mul_output_0_DequantizeLinear`, `..._token_3`), into the layer's name.

Quantize/DequantizeLinear nodes belong to no layer: they are the "overhead" of an INT8 graph, listed apart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgeffnet.core import formats
from edgeffnet.core.files import atomic_write_json
from edgeffnet.core.untrusted import UntrustedFileError, field
from edgeffnet.specs.layers import ROLES, spec_layers

if TYPE_CHECKING:
    from edgeffnet.specs.scaling import ModelSpec

LAYER_TABLE = formats.Format(
    "layer table", "format", (1,), "rebuild the bundle with edgeffnet build", tag="edgeffnet-layers"
)
FORMAT = LAYER_TABLE.stamp()["format"]  # "edgeffnet-layers/1"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
OVERHEAD_OPS = QDQ_OPS + ("Cast",)  # conversions an INT8 or FP16 graph adds between layers
_BLOCK = re.compile(r"stages\.\d+\.\d+")
_BLOCK_LAYERS = ("expand", "dw", "project", "reduce", "spatial", "restore", "shortcut")
_ROOTS = ("stem", "head", "classifier")
_POOL_OPS = ("GlobalAveragePool", "ReduceMean", "AveragePool", "Flatten", "Reshape", "Squeeze")


def is_qdq(name: str) -> bool:
    """A Q/DQ node's name as the precision pass writes it (`<tensor>_QuantizeLinear`)."""
    return name.endswith(QDQ_OPS)


def layer_of(name: str) -> str | None:
    """The layer (module path of layers.py) an ONNX or runtime node name belongs to; None: no layer's.

    Only the path part of the name counts: the export writes `/<module path>/<Op>`, and later passes add
    suffixes to the last part. Activations belong to the layer they follow (`.../expand/act/Mul` is
    expand's); in squeeze-excitation the pooling is se.pool, the reduce conv and its activation se.reduce,
    the expand conv se.expand, the sigmoid gate and the product se.scale; a block's own Add (and a
    bottleneck's activation after it) is its residual."""
    parts = [p for p in name.split("/") if p]
    # A runtime may prefix a renamed node (ONNX Runtime: `InsertedPrecisionFreeCast_/stem/conv/Conv...`):
    # the module path starts at the first part that is a module of the model.
    roots = [i for i, p in enumerate(parts) if p in _ROOTS or _BLOCK.fullmatch(p)]
    if roots:
        parts = parts[roots[0] :]
    elif len(parts) >= 1 and "/" in name and parts[-1].startswith(_POOL_OPS):
        return "pool"  # the model's own global pooling and flatten, named at the top level
    else:
        return None
    for i, part in enumerate(parts):
        if _BLOCK.fullmatch(part):
            rest = parts[i + 1 :]
            break
    else:
        top, tail = parts[0], parts[1:]
        if not tail:
            return None
        if top == "stem":
            return "stem.pool" if tail[0] == "pool" else "stem"
        return top if top in ("head", "classifier") else None
    if not rest:
        return None
    block, first = part, rest[0]
    if first in _BLOCK_LAYERS and len(rest) > 1:
        return f"{block}.{first}"
    if first == "se" and len(rest) > 1:
        sub = rest[1]
        if sub in ("reduce", "act"):
            return f"{block}.se.reduce"
        if sub == "expand":
            return f"{block}.se.expand"
        return f"{block}.se.pool" if sub.startswith(_POOL_OPS) else f"{block}.se.scale"
    if first.startswith(("Add", "act", "Relu", "Sigmoid", "Mul")) and len(rest) <= 2:
        return f"{block}.residual"
    return None


def make(
    spec: ModelSpec,
    num_classes: int,
    precision: str,
    nodes: list[tuple[str, str]],
    aliases: dict[str, str] | None = None,
) -> dict:
    """The table for a spec at a precision, given the (name, op_type) of every node of the graph the target
    runs. Each layer lists its nodes; Q/DQ and Cast nodes are listed under "overhead_nodes"; nodes of no layer
    under "unassigned_nodes" (an export that names nodes otherwise shows up there, not as a wrong row).
    `aliases`: other names a runtime gives a node (OpenVINO names the node that makes a graph output after
    the output, `logits`), listed with the node's layer."""
    layers = spec_layers(spec, num_classes)
    rows = {layer.name: layer.to_dict(precision) | {"onnx_nodes": []} for layer in layers}
    overhead, unassigned = [], []
    for name, op in nodes:
        if op in OVERHEAD_OPS:
            overhead.append(name)
            continue
        layer = layer_of(name)
        if layer in rows:
            rows[layer]["onnx_nodes"].append(name)
            alias = (aliases or {}).get(name)
            if alias and alias != name:
                rows[layer]["onnx_nodes"].append(alias)
        else:
            unassigned.append(name)
    return {
        "format": FORMAT,
        "spec": spec.name,
        "precision": precision,
        "resolution": spec.resolution,
        "num_classes": num_classes,
        "layers": list(rows.values()),
        "overhead_nodes": overhead,
        "unassigned_nodes": unassigned,
    }


def write(path: Path, table: dict) -> None:
    atomic_write_json(path, table)


_NUMBERS = ("macs", "weights", "in_elements", "out_elements", "ops", "bytes")


def read(path: str | Path) -> dict:
    """A bundle's layers.json, checked field by field (it travels with the bundle to the device)."""
    where = f"layer table '{path}'"
    d, _ = formats.load(LAYER_TABLE, path, where)
    for key in ("spec", "precision"):
        field(d, key, str, where)
    for key in ("resolution", "num_classes"):
        field(d, key, int, where)
    layers = field(d, "layers", list, where)
    for i, row in enumerate(layers):
        at = f"{where} layer {i}"
        if not isinstance(row, dict):
            raise UntrustedFileError(f"{at} is not an object")
        field(row, "name", str, at)
        if field(row, "role", str, at) not in ROLES:
            raise UntrustedFileError(f"{at}: role {row['role']!r} is not one of {', '.join(ROLES)}")
        for key in _NUMBERS:
            if field(row, key, int, at) < 0:
                raise UntrustedFileError(f"{at}: '{key}' is negative")
        field(row, "intensity", float, at)
        nodes = field(row, "onnx_nodes", list, at)
        if not all(isinstance(n, str) for n in nodes):
            raise UntrustedFileError(f"{at}: 'onnx_nodes' holds something other than names")
    for key in ("overhead_nodes", "unassigned_nodes"):
        names = field(d, key, list, where, default=[])
        if not all(isinstance(n, str) for n in names):
            raise UntrustedFileError(f"{where}: '{key}' holds something other than names")
    return d
