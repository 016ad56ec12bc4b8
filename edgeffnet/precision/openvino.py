"""OpenVINO INT8 has two routes; each build measures both and keeps the better.

(a) the Q/DQ ONNX graph (the one every target gets) converted to IR, its non-negative activations
re-encoded as uint8 (qdq.unsigned_where_nonnegative), or (b) NNCF quantizing the FP32 IR with its
defaults and the same calibration data. The choice is by agreement with FP32 on the tuning
views first (a clear gap wins), then by latency; the bundle records both measurements and the choice.
"""

from __future__ import annotations

import io
import shutil
import time

import numpy as np
import onnx

from ..backends import onnxruntime as ort_backend
from ..backends import openvino as ovb
from ..verify import compare, run_batched
from . import INT8_GRAPH, calibration_set, qdq

COSINE_GAP = 0.002  # a difference in mean cosine below this is noise on 64 views; then latency decides


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
        graph, unsigned = qdq.unsigned_where_nonnegative(onnx.load(str(b.dir / INT8_GRAPH)))
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
