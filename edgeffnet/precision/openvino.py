"""OpenVINO INT8 has two routes; each build measures both and keeps the better.

(a) the Q/DQ ONNX graph (the one every target gets) converted to IR, its non-negative activations
re-encoded as uint8 (unsigned_where_nonnegative), or (b) NNCF quantizing the FP32 IR with its
defaults and the same calibration data. The choice is by agreement with FP32 on the tuning
views first (a clear gap wins), then by latency; the bundle records both measurements and the choice.
"""

from __future__ import annotations

import io
import shutil
import time

import numpy as np
import onnx
from onnx import numpy_helper

from ..backends import onnxruntime as ort_backend
from ..backends import openvino as ovb
from ..verify import compare, run_batched
from . import INT8_GRAPH, calibration_set

COSINE_GAP = 0.002  # a difference in mean cosine below this is noise on 64 views; then latency decides


# -- OpenVINO's encoding of the shared Q/DQ graph --------------------------------------------------------

ZERO_UINT8 = "qdq_zero_uint8"
_ALWAYS_NONNEGATIVE = ("Relu", "Sigmoid")
_KEEP_SIGN = ("GlobalAveragePool", "MaxPool", "AveragePool", "Flatten", "Reshape", "QuantizeLinear",
              "DequantizeLinear")


def nonnegative(model: onnx.ModelProto) -> set[str]:
    """Tensors that cannot be negative whatever the input: outputs of Relu, Sigmoid and Clip with a
    lower bound >= 0, and what pooling, reshaping, Q/DQ, sums and products of those make of them."""
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    out: set[str] = set()
    for n in g.node:  # topological order
        op, ins = n.op_type, n.input
        if op in _ALWAYS_NONNEGATIVE:
            out.add(n.output[0])
        elif op == "Clip":
            low = consts.get(ins[1]) if len(ins) > 1 and ins[1] else None
            if ins[0] in out or (low is not None and float(low) >= 0):
                out.add(n.output[0])
        elif (op in _KEEP_SIGN and ins[0] in out) or (op in ("Add", "Mul") and all(i in out for i in ins)):
            out.add(n.output[0])
    return out


def unsigned_where_nonnegative(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of a Q/DQ graph whose activations that cannot be negative are uint8 (zero point 0, scale
    threshold/255) instead of int8 (threshold/127), and the tensors it changed.

    Same range, same calibration, twice the resolution. This is OpenVINO's form, not TensorRT's (whose
    activations must be int8): x86 VNNI's dot product (vpdpbusd) takes u8 activations and s8 weights, so
    s8 activations must first be shifted or widened. Measured on pretrained Lite0 (CPU, p50 INT8/FP32):
    0.45 instead of 0.50, and mean cosine with FP32 0.9978 instead of 0.9963 on 200 verification views.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    positive = nonnegative(m)
    changed = []
    for q in [n for n in g.node if n.op_type == "QuantizeLinear"]:
        t = q.input[0]
        if t in inits or t not in positive or len(q.input) < 3 or inits.get(q.input[2]) is None:
            continue
        zero = numpy_helper.to_array(inits[q.input[2]])
        dqs = readers.get(q.output[0], [])
        scale = q.input[1]
        if zero.dtype != np.int8 or zero.ndim or not dqs or any(
                d.op_type != "DequantizeLinear" or d.input[1:] != q.input[1:] for d in dqs):
            continue
        if any(r not in dqs and r is not q for r in readers[scale]):
            continue  # a scale shared with another tensor stays as it is
        s = numpy_helper.to_array(inits[scale]) * (127.0 / 255.0)
        inits[scale].CopyFrom(numpy_helper.from_array(s.astype(np.float32), scale))
        for node in (q, *dqs):
            node.input[2] = ZERO_UINT8
        changed.append(t)
    if changed:
        g.initializer.append(numpy_helper.from_array(np.zeros((), np.uint8), ZERO_UINT8))
    onnx.checker.check_model(m)
    return m, changed


def _latency_ms(runners: dict, x: np.ndarray, seconds: float = 1.5) -> dict:
    """p50 of interleaved synchronous runs, so both routes see the same machine state."""
    calls = {k: r.bound(x) for k, r in runners.items()}
    for call in calls.values():
        for _ in range(5):
            call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    end = time.perf_counter() + seconds * len(calls)
    while time.perf_counter() < end or min(len(v) for v in times.values()) < 20:
        for k, call in calls.items():
            t = time.perf_counter()
            call()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}


def _nncf_ir(b, out_xml) -> None:
    import nncf
    import openvino as ov

    cal = calibration_set(b)
    fp32 = ov.convert_model(io.BytesIO((b.dir / "model.sim.onnx").read_bytes()))  # paths may hold commas
    batch = b.fixed_batch or 1
    # A static batch needs whole batches; a calibration set smaller than one batch repeats its views.
    data = cal.data if len(cal.data) >= batch else np.resize(cal.data, (batch, *cal.data.shape[1:]))
    samples = [data[i:i + batch] for i in range(0, len(data) - batch + 1, batch)]
    quantized = nncf.quantize(fp32, nncf.Dataset(samples), subset_size=len(samples))
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)


def compile_int8(b) -> dict:
    alt = b.dir / ".routes"
    alt.mkdir()
    try:
        # Route (a) reads the shared Q/DQ graph in OpenVINO's encoding: non-negative activations as uint8.
        graph, unsigned = unsigned_where_nonnegative(onnx.load(str(b.dir / INT8_GRAPH)))
        onnx.save(graph, str(alt / INT8_GRAPH))
        info = ovb.compile(alt / INT8_GRAPH, b.dir, b.target, "int8")
        t = time.perf_counter()
        _nncf_ir(b, alt / "model.xml")
        nncf_seconds = time.perf_counter() - t
        tuning = calibration_set(b).tuning(b.preprocess)
        ref = ort_backend.run_all(b.dir / "model.sim.onnx", tuning)
        runners = {"qdq-onnx": ovb.load(b.dir, b.target, "int8", fallback=True),
                   "nncf": ovb.load(alt, b.target, "int8", fallback=True)}
        cos = {k: compare(ref, run_batched(r.run, tuning, b.fixed_batch)).cosine_mean for k, r in runners.items()}
        x = tuning[: b.fixed_batch or 1]
        lat = _latency_ms(runners, x)
        if abs(cos["qdq-onnx"] - cos["nncf"]) > COSINE_GAP:
            chosen, why = max(cos, key=cos.get), "closer to FP32 (mean cosine)"
        else:
            chosen, why = min(lat, key=lat.get), "faster at equal fidelity"
        if chosen == "nncf":
            for name in ("model.xml", "model.bin"):
                shutil.move(str(alt / name), str(b.dir / name))
    finally:
        shutil.rmtree(alt, ignore_errors=True)
    device = runners["nncf"].device
    return {**info, "int8_route": chosen, "int8_route_reason": why, "converted_from": (
                f"{INT8_GRAPH} with its {len(unsigned)} non-negative activations as uint8 (zero point 0)"
                if chosen == "qdq-onnx" else "model.sim.onnx via NNCF"), "int8_routes": {
                k: {"latency_p50_ms": round(lat[k], 4), "tuning_cosine_mean": round(cos[k], 6)} for k in lat},
            "int8_routes_measured_on": device, "uint8_activations": len(unsigned), "nncf_seconds": round(nncf_seconds, 2)}
