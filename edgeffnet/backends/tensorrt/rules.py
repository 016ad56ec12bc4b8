"""Static checks that an ONNX graph is one TensorRT's ONNX parser builds, for a given TensorRT version.

They run at compile time on any host, so a workstation build for a Jetson fails here, with the reason,
instead of on the device. `violations(model, "8.2")` returns one line per problem; [] means none found.

The rules and where they come from:
- Opset: the parser reads the default domain up to opset 13 in 8.0-8.4, 17 in 8.5/8.6, 20 in 10.0,
  22 from 10.9, 24 from 10.13, 25 in 11 (onnx/onnx-tensorrt docs/operators.md per release branch;
  TensorRT 11 ONNX opset guide). 8.4 is not documented and gets 8.2's limit.
- Types: the 8.x parser reads FLOAT, FLOAT16, DOUBLE, INT8, INT32, INT64, BOOL; 10.x adds BFLOAT16,
  UINT8, FLOAT8E4M3FN, INT4 (docs/operators.md, 8.x and 10.0 branches).
- Explicit quantization: zero points all 0 (the parser asserts "TRT only supports symmetric
  quantization"), quantized type INT8 (10.x also FP8/INT4), scales constant, activations per tensor,
  weights per output channel (Conv axis 0, ConvTranspose axis 1, Gemm B axis 0 with transB else 1,
  MatMul B its last axis), per-axis scales need opset >= 13 (QuantizeLinear-13 added `axis`), and every
  QuantizeLinear feeds DequantizeLinear nodes only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgeffnet.backends.tensorrt.plan import parse_version
from edgeffnet.graph.onnx_index import GraphIndex

T = TensorProto
MAX_OPSET = (((8, 0), 13), ((8, 5), 17), ((10, 0), 20), ((10, 9), 22), ((10, 13), 24), ((11, 0), 25))
TYPES_8 = {T.FLOAT, T.FLOAT16, T.DOUBLE, T.INT8, T.INT32, T.INT64, T.BOOL}
TYPES_10 = TYPES_8 | {T.BFLOAT16, T.UINT8, T.FLOAT8E4M3FN, T.INT4}
QUANTIZED_8 = {T.INT8}
QUANTIZED_10 = {T.INT8, T.FLOAT8E4M3FN, T.INT4}
ONNX_DOMAINS = ("", "ai.onnx")


def max_opset(version: tuple[int, int]) -> int:
    return max((limit for since, limit in MAX_OPSET if version >= since), default=MAX_OPSET[0][1])


def _type_name(dtype: int) -> str:
    return T.DataType.Name(dtype)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _opset_above(opset: int, version: tuple[int, int]) -> list[str]:
    if opset <= max_opset(version):
        return []
    return [
        f"opset {opset} is above {max_opset(version)}, the newest TensorRT {version[0]}.{version[1]}'s ONNX "
        f"parser reads; export with --opset {max_opset(version)}"
    ]


def option_violations(tensorrt: str | tuple, opset: int, precision: str) -> list[str]:
    """The rules above that the build options alone break, known before a graph exists."""
    version = parse_version(tensorrt)
    problems = _opset_above(opset, version)
    if precision == "int8" and opset < 13:
        problems.append(
            f"INT8's per-channel weight scales need opset 13 (QuantizeLinear-13 added axis); "
            f"--opset {opset} is below it"
        )
    return problems


def _opset(model: onnx.ModelProto, version: tuple[int, int]) -> tuple[int, list[str]]:
    found = [o.version for o in model.opset_import if o.domain in ONNX_DOMAINS]
    opset = max(found) if found else 0
    problems = _opset_above(opset, version)
    for o in model.opset_import:
        if o.domain not in ONNX_DOMAINS:
            problems.append(f"operator domain '{o.domain}' is not ONNX's; TensorRT's parser reads only ai.onnx")
    return opset, problems


def _types(model: onnx.ModelProto, version: tuple[int, int]) -> list[str]:
    allowed = TYPES_10 if version >= (10, 0) else TYPES_8
    g = model.graph
    seen: dict[int, str] = {}

    def note(dtype: int, where: str) -> None:
        if dtype and dtype not in allowed and dtype not in seen:
            seen[dtype] = where

    for v in list(g.input) + list(g.output) + list(g.value_info):
        note(v.type.tensor_type.elem_type, v.name)
    for t in g.initializer:
        note(t.data_type, t.name)
    for n in g.node:
        if n.op_type == "Cast":
            note(_attr(n, "to", 0), n.name or n.output[0])
        if n.op_type == "Constant" and _attr(n, "value") is not None:
            note(_attr(n, "value").data_type, n.name or n.output[0])
    return [
        f"type {_type_name(d)} (at '{w}') is not read by TensorRT {version[0]}.{version[1]}'s ONNX parser"
        for d, w in seen.items()
    ]


def _quant_params(node: onnx.NodeProto, g: GraphIndex, version: tuple[int, int]) -> list[str]:
    """Scale and zero point of one QuantizeLinear/DequantizeLinear: constant, symmetric, int8."""
    name = node.name or node.output[0]
    problems = []
    if len(node.input) < 2 or node.input[1] not in g.constants:
        problems.append(f"{node.op_type} '{name}': the scale is not a constant")
    zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zp is None:
        if node.op_type == "QuantizeLinear" and _attr(node, "output_dtype") is None:
            problems.append(
                f"QuantizeLinear '{name}' has no zero point, so it quantizes to UINT8 (asymmetric); "
                f"TensorRT needs an INT8 zero point of 0"
            )
        return problems
    t = g.constants.get(zp)
    if t is None:
        return problems + [f"{node.op_type} '{name}': the zero point is not a constant"]
    allowed = QUANTIZED_10 if version >= (10, 0) else QUANTIZED_8
    if t.data_type not in allowed:
        problems.append(
            f"{node.op_type} '{name}' quantizes to {_type_name(t.data_type)}; TensorRT "
            f"{version[0]}.{version[1]} takes {', '.join(_type_name(d) for d in sorted(allowed))}"
        )
    if np.any(numpy_helper.to_array(t) != 0):
        problems.append(f"{node.op_type} '{name}': zero point is not 0; TensorRT supports symmetric quantization only")
    return problems


def _expected_weight_axis(consumer: onnx.NodeProto, index: int, rank: int) -> int | None:
    """The output-channel axis of a weight read as input `index` of `consumer`; None: not a weight input."""
    if index != 1:
        return None
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if _attr(consumer, "transB", 0) else 1
    if consumer.op_type == "MatMul":
        return rank - 1
    return None


def _source_is_constant(dq: onnx.NodeProto, g: GraphIndex) -> bool:
    """Whether the tensor a DequantizeLinear restores is a weight: a constant, or a Q of a constant."""
    x = dq.input[0]
    if x in g.constants:
        return True
    q = g.producer.get(x)
    return q is not None and q.op_type == "QuantizeLinear" and q.input[0] in g.constants


def _granularity(dq: onnx.NodeProto, g: GraphIndex, opset: int) -> list[str]:
    name = dq.name or dq.output[0]
    scale = g.array(dq.input[1]) if len(dq.input) > 1 else None
    if scale is None or scale.size <= 1:
        return []
    if opset < 13:
        return [f"DequantizeLinear '{name}' is per-axis, which needs opset 13 (graph has {opset})"]
    if not _source_is_constant(dq, g):
        return [
            f"DequantizeLinear '{name}' quantizes an activation per channel; TensorRT quantizes activations per tensor"
        ]
    source = dq.input[0] if dq.input[0] in g.constants else g.producer[dq.input[0]].input[0]
    rank = g.rank(source) or 1
    axis = _attr(dq, "axis", 1)
    axis = axis + rank if axis < 0 else axis
    problems = []
    for consumer, index in g.readers.get(dq.output[0], []):
        expected = _expected_weight_axis(consumer, index, rank)
        if expected is not None and axis != expected:
            problems.append(
                f"{consumer.op_type} '{consumer.name or consumer.output[0]}': weight '{source}' is "
                f"quantized along axis {axis}; TensorRT needs its output-channel axis {expected}"
            )
    return problems


def _pairing(node: onnx.NodeProto, g: GraphIndex) -> list[str]:
    name = node.name or node.output[0]
    if node.op_type == "QuantizeLinear":
        if node.output[0] in g.outputs:
            return [f"QuantizeLinear '{name}' is a graph output; it must feed a DequantizeLinear"]
        others = [c for c, _ in g.readers.get(node.output[0], []) if c.op_type != "DequantizeLinear"]
        if others or not g.readers.get(node.output[0]):
            what = f"feeds {others[0].op_type} '{others[0].name}'" if others else "feeds nothing"
            return [f"QuantizeLinear '{name}' {what}; every Q must be paired with a DequantizeLinear"]
        return []
    x = node.input[0]
    q = g.producer.get(x)
    if x not in g.constants and (q is None or q.op_type != "QuantizeLinear"):
        return [f"DequantizeLinear '{name}' reads '{x}', neither a QuantizeLinear output nor a constant"]
    return []


def violations(model: onnx.ModelProto | str | Path, tensorrt: str | tuple) -> list[str]:
    """Every way `model` breaks TensorRT `tensorrt`'s parser rules; [] when it meets them all."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    version = parse_version(tensorrt)
    opset, problems = _opset(model, version)
    problems += _types(model, version)
    g = GraphIndex(model)
    for n in model.graph.node:
        if n.domain not in ONNX_DOMAINS:
            problems.append(f"node '{n.name}' ({n.domain}.{n.op_type}) is not an ONNX operator")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems += _quant_params(n, g, version) + _pairing(n, g)
            if n.op_type == "DequantizeLinear":
                problems += _granularity(n, g, opset)
    return list(dict.fromkeys(problems))
