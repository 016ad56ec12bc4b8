"""OpenVINO: compile = ONNX graph -> IR (model.xml/.bin); run = the IR compiled for the profile's device.

The IR is converted from the graph the precision stage produced (the same file every target consumes),
not from PyTorch: one conversion path for fp32, fp16 and Q/DQ int8 (benchmarks/build_speed.py shows it is
as fast and as exact as converting from PyTorch). Two OpenVINO-specific choices live here: fp16 is the
FP32 graph saved with FP16-compressed weights (what OpenVINO's plugins expect), and int8 measures two
routes and keeps the better (pipeline/int8_routes.py; the encodings are encoding.py's).
"""

from __future__ import annotations

import io
from pathlib import Path

from edgeffnet.backends import RunSettings
from edgeffnet.backends.openvino.runner import Runner, available, core
from edgeffnet.core.artifact import Artifact
from edgeffnet.core.errors import UserError
from edgeffnet.core.layout import IR, IR_WEIGHTS, SIMPLIFIED


def convert(graph: Path, out_dir: Path, compress_to_fp16: bool) -> dict:
    """Write model.xml/model.bin into out_dir from an ONNX graph.

    The IR is device-independent (OpenVINO compiles it for the device when it is loaded), so a bundle
    for a GPU or NPU can be built on a machine without one."""
    import openvino as ov

    # From bytes, not the path: convert_model splits a path string at commas (TF's "graph,checkpoint"),
    # and bundle names such as "b0,res=96" have them.
    model = ov.convert_model(io.BytesIO(Path(graph).read_bytes()))
    # save_model compresses to FP16 by default: an fp32/int8 IR must say no, or its weights lose bits.
    ov.save_model(model, str(out_dir / IR), compress_to_fp16=compress_to_fp16)
    return {"files": [IR, IR_WEIGHTS], "converted_from": Path(graph).name, "compress_to_fp16": compress_to_fp16}


def compile(ctx, graph):
    """The compile stage's work for OpenVINO: an IR in ctx.dir from the precision stage's artifact."""
    # int8: the Q/DQ graph as it is (its plain route); a build measures every route and keeps the best
    # (pipeline/int8_routes.py), asking this backend to encode, convert and load each.
    # fp16: OpenVINO's own FP16 path (FP16-compressed IR from the FP32 graph) is what its plugins expect.
    source = ctx.dir / SIMPLIFIED if ctx.precision == "fp16" else graph.path
    return Artifact("compile", ctx.dir / IR, convert(source, ctx.dir, compress_to_fp16=ctx.precision == "fp16"))


def placed(target) -> str:
    """The OpenVINO device a build checks on: the profile's, or the CPU where this host lacks it."""
    return target.device if available(target.device) else "CPU"


def graph_runner(graph: bytes, target, batch: int):
    """run(x) -> logits: a serialized ONNX graph compiled for `placed(target)`, run in batches of `batch`
    (a stand-in for the IR a build would make of it, as escalation's ranking needs one per candidate)."""
    import numpy as np
    import openvino as ov

    from edgeffnet.core.verify import run_batched

    request = core().compile_model(ov.convert_model(io.BytesIO(graph)), placed(target)).create_infer_request()
    return lambda x: run_batched(lambda b: np.array(request.infer({0: b})[0], np.float32), x, batch)


def load(bundle: Path, target, precision: str, settings: RunSettings | None = None) -> Runner:
    """The bundle's IR compiled for the profile's device with its inference precision.

    With settings.cpu_fallback, a device this host lacks is replaced by the CPU (build-time verification of
    a GPU/NPU bundle on a workstation); the runner's describe() says so."""
    s = settings or RunSettings()
    xml = Path(bundle) / IR
    if not xml.is_file() or not (Path(bundle) / IR_WEIGHTS).is_file():
        raise UserError(
            f"{bundle} has no complete OpenVINO IR ({IR} and {IR_WEIGHTS}); rebuild the bundle with edgeffnet build"
        )
    device = target.device
    precision_hint = target.options.get("inference_precision", {}).get(precision)
    note = None
    if not available(device):
        if not s.cpu_fallback:
            raise UserError(
                f"OpenVINO device {device} (target {target.name}) is not present on this host; "
                f"available: {', '.join(core().available_devices)}"
            )
        note = f"{device} not present on this host; verified on CPU"
        device = "CPU"
        if precision_hint not in ("f32", None):
            precision_hint = "f32"  # the CPU checks the IR itself, not the device's arithmetic
    try:
        return Runner(xml, device, precision_hint, s, note)
    except Exception as e:  # noqa: BLE001  (whatever the runtime raises on a damaged file, one line says so)
        raise UserError(f"OpenVINO cannot load {xml}: {damage(e)}; rebuild the bundle with edgeffnet build") from None


def damage(e: Exception) -> str:
    """What a runtime's exception says about a damaged file, in a few words: its own text is many lines of
    C++ source locations and 'Check ... failed' frames, useless to a user, and only its gist is kept."""
    text = " ".join(str(e).split())
    for noise in ("Exception from src/", "Check '"):
        text = text.split(noise)[0].strip(" :;,")
    text = text or type(e).__name__
    return "the IR is damaged or not an OpenVINO IR" + (f" ({text[:100]})" if text != type(e).__name__ else "")
