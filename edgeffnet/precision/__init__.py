"""Stage 4, precision: the FP16 or Q/DQ INT8 ONNX graph that every target consumes.

TensorRT 11 has no FP16/INT8 builder flags or calibrators, and JetPack devices run TensorRT 8.x/10.x, so
precision is decided once, in the graph, and verified here with ONNX Runtime (and OpenVINO).
"""

from __future__ import annotations

import onnx

from . import calibration, fidelity, fp16, int8

FP16_GRAPH, INT8_GRAPH = "model.fp16.onnx", "model.int8.onnx"


def stage(b) -> dict:
    """Run the precision stage for build `b` (an edgeffnet.build.Build); sets the graph the target compiles."""
    if b.precision == "fp16":
        return _fp16(b)
    return _int8(b)


def _fp16(b) -> dict:
    def run() -> dict:
        from ..backends import onnxruntime as ort_backend

        graph = fp16.to_fp16(onnx.load(str(b.dir / "model.sim.onnx")))
        onnx.save(graph, str(b.dir / FP16_GRAPH))
        parity = b.verify("precision", ort_backend.Runner(b.dir / FP16_GRAPH, exact=True).run, "fp16")
        x, ref = fidelity_data(b)
        row = fidelity.report(ref, ort_backend.run_all(graph, x), "FP16 ONNX (onnxruntime)")
        return {"files": [FP16_GRAPH], "graph": FP16_GRAPH, "kept_fp32": [], "initializers": fp16.float_types(graph),
                "io": "float32 with casts at the edges", "parity": parity, "fidelity": row,
                "verified_with": "onnxruntime CPU",
                "summary": f"FP16 graph, cosine min {parity['cosine_min']:.6f}, top-1 {row['top1_agreement']:.0%} "
                           f"over {row['views']} views"}

    # fidelity_views is part of the key: the compile stage below inherits it and reports a fidelity row too.
    record = b.stage("precision", {"precision": "fp16", "keep_fp32": [],
                                   "fidelity_views": options(b)["fidelity_views"]}, run)
    # OpenVINO's own FP16 path (FP16-compressed IR from the FP32 graph) is what its plugins expect; every
    # other target builds from the FP16 graph.
    b.graph_file = "model.sim.onnx" if b.target.backend == "openvino" else FP16_GRAPH
    return record


def options(b) -> dict:
    e = b.req.extra
    return {"calib": e.get("calib"), "calib_size": e.get("calib_size", calibration.DEFAULT_SIZE),
            "calib_method": e.get("calib_method"), "min_agreement": e.get("min_agreement", fidelity.DEFAULT_MIN_AGREEMENT),
            "allow_drop": e.get("allow_drop", False), "fidelity_views": e.get("fidelity_views") or (
                fidelity.DEFAULT_VIEWS if b.weights is not None else fidelity.RANDOM_INIT_VIEWS)}


def calibration_set(b):
    """The build's calibration data, loaded once (the compile stage's NNCF comparison reuses it)."""
    if getattr(b, "_calibration", None) is None:
        o = options(b)
        b._calibration = calibration.load(o["calib"], o["calib_size"], b.preprocess)
        for w in b._calibration.warnings:
            b.log(f"warning: {w}")
    return b._calibration


def fidelity_data(b):
    """Verification views (>= 200 by default) and FP32 logits for them, shared by every fidelity row."""
    if getattr(b, "_fidelity", None) is None:
        x = fidelity.views(options(b)["fidelity_views"], b.preprocess)
        b._fidelity = (x, fidelity.fp32_reference(b.dir / "model.sim.onnx", x))
    return b._fidelity


def _int8(b) -> dict:
    o = options(b)
    trained = b.weights is not None
    cal = calibration_set(b)
    parts = {"precision": "int8", "pass": int8.VERSION, "calib": cal.sha256, "method": o["calib_method"], "sensitivity": trained,
             "fidelity_views": o["fidelity_views"]}

    def run() -> dict:
        from ..backends import onnxruntime as ort_backend

        model = onnx.load(str(b.dir / "model.sim.onnx"))
        stats, cached = int8.statistics(model, cal.data, cal.sha256, b.req.cache)
        b.log(f"calibration statistics {'reused from cache' if cached else 'collected'} "
              f"({len(cal.data)} views, {cal.source})")
        result = int8.quantize_model(model, stats, cal.tuning(b.preprocess), o["calib_method"], trained)
        counts = int8.write(result, b.dir / INT8_GRAPH)
        x, ref = fidelity_data(b)
        got = ort_backend.run_all(result.model, x)
        row = fidelity.report(ref, got, "Q/DQ ONNX (onnxruntime)")
        parity = b.verify("precision", ort_backend.Runner(b.dir / INT8_GRAPH, exact=True).run, "int8")
        return {"files": [INT8_GRAPH], "graph": INT8_GRAPH, "calibration": cal.record(),
                "statistics_cached": cached, "method": result.method, "method_scores": result.method_scores,
                "method_choice": "given" if o["calib_method"] else "measured: best mean cosine on tuning views",
                "sensitivity_pass": "trained weights: layers kept in float while tuning cosine < "
                                    f"{int8.TARGET_COSINE}" if trained else "skipped: random-init weights",
                "quantized_nodes": len(result.plan.nodes), "kept_float": result.kept_float,
                "tuning": result.tuning, "qdq": counts, "scheme": {
                    "activations": "int8 per-tensor symmetric, zero point 0",
                    "weights": "int8 per-output-channel symmetric (axis 0; Gemm output axis), zero point 0",
                    "bias_correction": True},
                "fidelity": row, "parity": parity, "verified_with": "onnxruntime CPU",
                "summary": f"{result.method}, {len(result.plan.nodes)} layers int8, {len(result.kept_float)} kept float, "
                           f"top-1 {row['top1_agreement']:.1%} over {row['views']} views"}

    record = b.stage("precision", parts, run)
    b.graph_file = INT8_GRAPH
    return record
