"""TensorRT's per-layer times as runtime node rows (measure/profile.py maps them onto the layer table).

Two sources: an `IProfiler` attached to the runner's execution context (`report_layer_time(name, ms)` per
engine layer per inference), and the JSON files of `trtexec --exportProfile=P --exportLayerInfo=L` for
engines finished with trtexec. This module parses; it imports TensorRT only inside `layer_times`, so
the parsing is tested anywhere.

Formats (TensorRT 8.x-10.x). An engine layer's name joins the ONNX nodes it fused with " + "
(`/stem/conv/Conv + /stem/act/Sigmoid + /stem/act/Mul`); Myelin regions read
`{ForeignNode[/first/node.../last/node]}`; TensorRT 8.6+ adds `[ONNX Layer: name]` tags under detailed
verbosity; reformats are `Reformatting CopyNode for Input Tensor 0 to <layer>`. --exportProfile writes a
list: `[{"count": N}, {"name", "timeMs", "averageMs", "medianMs", "percentage"}, ...]` (medianMs from 8.4).
--exportLayerInfo (and the engine inspector) write `{"Layers": [...], "Bindings": [...]}`, a layer being a
name (layer-names-only verbosity) or `{"Name", "LayerType", "Inputs": [{"Name", "Dimensions",
"Format/Datatype"}], "Outputs": [...], "TacticName", ...}` (detailed).
"""

from __future__ import annotations

import re
from pathlib import Path

from edgeffnet.core.untrusted import UntrustedFileError, field, read_json

_ONNX_TAG = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_FOREIGN = re.compile(r"\{ForeignNode\[(.+)\]\}")
_REFORMAT = ("Reformatting CopyNode", "Reformatted ")
# "Format/Datatype" words -> precision, most specific first ("Half" and "FP16" before "Float").
_FORMATS = (
    ("int8", "i8"),
    ("fp8", "f8"),
    ("half", "f16"),
    ("fp16", "f16"),
    ("bf16", "bf16"),
    ("bfloat16", "bf16"),
    ("int32", "i32"),
    ("fp32", "f32"),
    ("float", "f32"),
)


def original_names(layer_name: str) -> list[str]:
    """The ONNX node names an engine layer's name holds (fused with " + ", tagged, or a Myelin region's ends)."""
    tagged = _ONNX_TAG.findall(layer_name)
    if tagged:
        return [n.strip() for t in tagged for n in t.split("|")]
    names = []
    for part in layer_name.split(" + "):
        part = part.strip()
        region = _FOREIGN.fullmatch(part)
        if region:
            names += [n for n in region.group(1).split("...") if n]
        elif part:
            names.append(part)
    return names


def precision_of(fmt: str) -> str:
    low = fmt.lower()
    return next((p for word, p in _FORMATS if word in low), "")


def layer_formats(info: dict) -> dict[str, dict]:
    """Per engine layer name: its type and the precision it computed in (its first input's datatype, the
    output's where it has no input), from --exportLayerInfo or the engine inspector's JSON."""
    out = {}
    for layer in info.get("Layers") or []:
        if isinstance(layer, str):
            out[layer] = {"type": "", "precision": "", "tactic": ""}
            continue
        if not isinstance(layer, dict) or not isinstance(layer.get("Name"), str):
            continue
        tensors = [t for t in (layer.get("Inputs") or []) + (layer.get("Outputs") or []) if isinstance(t, dict)]
        precision = next((p for t in tensors if (p := precision_of(str(t.get("Format/Datatype", ""))))), "")
        out[layer["Name"]] = {
            "type": str(layer.get("LayerType", "")),
            "precision": precision,
            "tactic": str(layer.get("TacticName", "")),
        }
    return out


def rows(times: list[tuple[str, float]], formats: dict[str, dict] | None = None) -> list[dict]:
    """One inference's (layer name, ms) pairs as runtime node rows."""
    formats = formats or {}
    out = []
    for name, ms in times:
        f = formats.get(name, {})
        kind = f.get("type") or ("Reformat" if name.startswith(_REFORMAT) else "")
        out.append(
            {
                "node": name,
                "type": "Reformat" if name.startswith(_REFORMAT) else kind,
                "time_ms": float(ms),
                "exec_type": f.get("tactic") or kind,
                "precision": f.get("precision", ""),
                "original_names": [] if name.startswith(_REFORMAT) else original_names(name),
            }
        )
    return out


def read_trtexec(profile_path: str | Path, layer_info_path: str | Path | None = None) -> tuple[list[list[dict]], int]:
    """The rows of trtexec's --exportProfile file (one "inference" of per-layer medians, or averages where
    the file has no medians) and the number of inferences trtexec profiled."""
    doc = read_json(profile_path, what="trtexec profile", kind=list)
    where = f"trtexec profile '{profile_path}'"
    if not doc or not isinstance(doc[0], dict) or "count" not in doc[0]:
        raise UntrustedFileError(f'{where} does not start with {{"count": N}}: write it with trtexec --exportProfile')
    count = field(doc[0], "count", int, where)
    times = []
    for i, entry in enumerate(doc[1:], 1):
        at = f"{where} entry {i}"
        if not isinstance(entry, dict):
            raise UntrustedFileError(f"{at} is not an object")
        key = "medianMs" if "medianMs" in entry else "averageMs"
        times.append((field(entry, "name", str, at), field(entry, key, float, at)))
    formats = {}
    if layer_info_path is not None:
        info = read_json(layer_info_path, what="trtexec layer info")
        formats = layer_formats(info)
    return [rows(times, formats)], count


def layer_times(trt):
    """An IProfiler collecting (layer name, ms) of each inference in `.times` (cleared by the caller)."""

    class LayerTimes(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.times: list[tuple[str, float]] = []

        def report_layer_time(self, layer_name, ms):
            self.times.append((str(layer_name), float(ms)))

    return LayerTimes()
