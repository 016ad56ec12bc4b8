"""What a TensorRT build does, per TensorRT version: the network typing, the builder flags, the trtexec line.

Pure functions of the profile, the precision and the graph's input shape, so they are tested without
TensorRT. The same plan drives the Python-API build on the device and the trtexec line written into
every bundle; the line follows the *profile's* TensorRT version, the API build the version installed.

Flag facts (each checked against a trtexec help text or NVIDIA's migration guides):
- --workspace=N (MiB) until 8.3; --memPoolSize=workspace:N from 8.4 (present in the 8.5.3 help, MiB
  without a suffix in every version); --workspace is an error in 10.x (8.x->10.x trtexec migration guide).
- --buildOnly through 8.5 (8.5.3 help); --skipInference from 8.6 (8.6.1 scripts, 10.x help).
- --stronglyTyped in 10.x makes precision come from the graph's types; --fp16/--int8 may not be combined
  with it. TensorRT 11 is always strongly typed and removes --fp16/--int8 (10.x->11.x trtexec guide).
- 8.x needs the INT8 flag for a Q/DQ network to build in int8 (8.4 developer guide, "Explicit
  Quantization"), and the FP16 flag to pick FP16 kernels for an FP16 graph (weak typing).
- DLA: --useDLACore=N --allowGPUFallback; DLA runs FP16/INT8 only, so an fp32 build stays on the GPU.
  NVIDIA's DLA examples for 8.x/10.x use the precision flags (--fp16 with --useDLACore), so DLA builds
  keep them on 10.x; TensorRT 11 types DLA networks from the graph too.
- TF32: TensorRT lets FP32 layers use TF32 on sm_80+ by default; an fp32 build disables it (--noTF32),
  or its logits miss the 1e-4 FP32 tolerance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeffnet.core.layout import ENGINE, TIMING_CACHE

DEFAULT_DYNAMIC_BATCH = {"min": 1, "opt": 8, "max": 32}


def parse_version(text: str | int | float | tuple) -> tuple[int, int]:
    """'8.2.1' -> (8, 2); '10' -> (10, 0); a tuple passes through."""
    if isinstance(text, tuple):
        return (int(text[0]), int(text[1]) if len(text) > 1 else 0)
    parts = [int(p) for p in re.findall(r"\d+", str(text))[:2]]
    if not parts:
        raise ValueError(f"not a TensorRT version: {text!r}")
    return (parts[0], parts[1] if len(parts) > 1 else 0)


def compute_capability(text: str | None) -> tuple[int, int] | None:
    return parse_version(text) if text else None


@dataclass(frozen=True)
class EnginePlan:
    tensorrt: tuple[int, int]
    precision: str
    strongly_typed: bool  # a STRONGLY_TYPED network: precision from the graph's types
    flags: tuple[str, ...]  # builder precision flags (BuilderFlag names): FP16, INT8
    no_tf32: bool
    dla_core: int | None
    workspace_mib: int
    why: str  # one sentence: why this typing and these flags, for the manifest

    @property
    def path(self) -> str:
        if self.tensorrt[0] >= 11:
            return "strongly typed (TensorRT 11: always)"
        if self.strongly_typed:
            return "strongly typed"
        return "weakly typed" + (f", flags {'+'.join(self.flags)}" if self.flags else ", FP32")


def plan(target, precision: str, tensorrt: tuple[int, int], cc: tuple[int, int] | None = None) -> EnginePlan:
    """The build for `target` at `precision` with TensorRT `tensorrt` on a GPU of compute capability `cc`
    (default: the profile's; a profile with only a minimum is treated as possibly sm_80+)."""
    o = target.options
    cc = cc or compute_capability(o.get("compute_capability"))
    dla = o.get("dla_core")
    dla = int(dla) if dla is not None and precision != "fp32" and int(o.get("dla_cores", 0)) > int(dla) else None
    no_tf32 = precision == "fp32" and (cc is None or cc >= (8, 0))
    workspace = int(o.get("workspace_mib", 1024))
    major = tensorrt[0]
    flag = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}[precision]
    if major >= 11:
        typed, flags = True, ()
        why = "TensorRT 11 networks are always strongly typed; precision comes from the graph's types"
    elif precision == "fp32":
        typed, flags = False, ()
        why = "an FP32 graph builds in FP32 without precision flags"
    elif major >= 10 and dla is None:
        typed, flags = True, ()
        why = f"TensorRT {major}.x strongly typed: the {precision} graph's types decide the precision"
    elif major >= 10:
        typed, flags = False, flag
        why = f"DLA builds on TensorRT {major}.x use the precision flag (NVIDIA's DLA examples)"
    else:
        typed, flags = False, flag
        why = (
            f"TensorRT {major}.x is weakly typed: the {'+'.join(flag)} flag lets it build the "
            f"{precision} graph in {precision}"
        )
    return EnginePlan(tensorrt, precision, typed, flags, no_tf32, dla, workspace, why)


def batch_profile(target, dims: list[int | None]) -> dict | None:
    """min/opt/max shapes for a graph whose batch dimension is free; None for a static graph."""
    if dims[0] is not None:
        return None
    b = {**DEFAULT_DYNAMIC_BATCH, **target.options.get("dynamic_batch", {})}
    rest = "x".join(str(d) for d in dims[1:])
    return {k: f"{b[k]}x{rest}" for k in ("min", "opt", "max")}


def trtexec_line(p: EnginePlan, graph: str, input_name: str, dims: list[int | None], target) -> str:
    """The trtexec command that builds this bundle's engine, run from inside the bundle directory."""
    major, minor = p.tensorrt
    args = ["trtexec", f"--onnx={graph}", f"--saveEngine={ENGINE}"]
    if p.strongly_typed and major == 10:
        args.append("--stronglyTyped")
    args += [f"--{f.lower()}" for f in p.flags]
    if p.no_tf32:
        args.append("--noTF32")
    args.append(
        f"--workspace={p.workspace_mib}" if p.tensorrt < (8, 4) else f"--memPoolSize=workspace:{p.workspace_mib}"
    )
    args.append(f"--timingCacheFile={TIMING_CACHE}")
    shapes = batch_profile(target, dims)
    if shapes:
        args += [f"--{k}Shapes={input_name}:{v}" for k, v in shapes.items()]
    if p.dla_core is not None:
        args += [f"--useDLACore={p.dla_core}", "--allowGPUFallback"]
    args.append("--buildOnly" if p.tensorrt < (8, 6) else "--skipInference")
    return " ".join(args)
