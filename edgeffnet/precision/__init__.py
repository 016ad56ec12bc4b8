"""Stage 4, precision: the FP16 or Q/DQ INT8 ONNX graph that every target consumes.

TensorRT 11 has no FP16/INT8 builder flags or calibrators, and JetPack devices run TensorRT 8.x/10.x, so
precision is decided once, in the graph, and verified here with ONNX Runtime (and OpenVINO).
`make_graph(ctx, simplified)` writes the graph into the build directory and returns the stage's record;
`cache_parts(ctx)` is what, besides the upstream graph, determines it.
"""

from __future__ import annotations

from pathlib import Path

from edgeffnet.core.layout import FP16_GRAPH, INT8_GRAPH


def cache_parts(ctx) -> dict:
    # fidelity_views is part of the key: the compile stage below inherits it and reports a fidelity row too.
    views = ctx.options.fidelity_view_count(ctx.trained)
    if ctx.precision == "fp16":
        return {"precision": "fp16", "keep_fp32": [], "fidelity_views": views}
    from edgeffnet.precision import int8

    return {
        "precision": "int8",
        "pass": int8.VERSION,
        "calib": ctx.calibration.sha256,
        "method": ctx.options.calib_method,
        "sensitivity": ctx.trained and not ctx.keep_float,
        "fidelity_views": views,
        "distill": ctx.options.distill and ctx.trained,
        "escalated_float": list(ctx.keep_float),
    }


def make_graph(ctx, simplified: Path) -> dict:
    return _fp16(ctx, simplified) if ctx.precision == "fp16" else _int8(ctx, simplified)


def _fp16(ctx, simplified: Path) -> dict:
    import onnx

    from edgeffnet.backends import onnxruntime as ort_backend
    from edgeffnet.precision import fidelity, fp16

    graph = fp16.to_fp16(onnx.load(str(simplified)))
    onnx.save(graph, str(ctx.dir / FP16_GRAPH))
    parity = ctx.verify("precision", ort_backend.Runner(ctx.dir / FP16_GRAPH, exact=True).run, "fp16")
    x, ref = ctx.fidelity_data
    row = fidelity.report(ref, ort_backend.run_all(graph, x), "FP16 ONNX (onnxruntime)")
    return {
        "files": [FP16_GRAPH],
        "artifact": FP16_GRAPH,
        "graph": FP16_GRAPH,
        "kept_fp32": [],
        "initializers": fp16.float_types(graph),
        "io": "float32 with casts at the edges",
        "parity": parity,
        "fidelity": row,
        "verified_with": "onnxruntime CPU",
        "summary": f"FP16 graph, cosine min {parity['cosine_min']:.6f}, top-1 {row['top1_agreement']:.0%} "
        f"over {row['views']} views",
    }


def _int8(ctx, simplified: Path) -> dict:
    import onnx

    from edgeffnet.backends import onnxruntime as ort_backend
    from edgeffnet.precision import fidelity, int8

    o, cal = ctx.options, ctx.calibration
    model = onnx.load(str(simplified))
    stats, cached = int8.statistics(model, cal.data, cal.sha256, o.cache)
    ctx.log.info(
        f"calibration statistics {'reused from cache' if cached else 'collected'} ({len(cal.data)} views, {cal.source})"
    )
    # An escalation (pipeline/escalate.py) names every layer to keep in float itself: no sensitivity pass.
    tuning, tuning_ref = ctx.tuning_data
    result = int8.quantize_model(
        model, stats, tuning, o.calib_method, ctx.trained and not ctx.keep_float, ctx.keep_float, tuning_ref
    )
    result.model, distilled = _self_distill(ctx, model, result.model)
    counts = int8.write(result, ctx.dir / INT8_GRAPH)
    x, ref = ctx.fidelity_data
    # literal: ORT's extended optimisations replace a DequantizeLinear feeding a Conv by their own
    # per-tensor int8 weights, which is ORT's rewrite, not this graph (cosine 0.996 instead of 0.998 on Lite0).
    row = fidelity.report(ref, ort_backend.run_all(result.model, x, literal=True), "Q/DQ ONNX (onnxruntime)")
    parity = ctx.verify("precision", ort_backend.Runner(ctx.dir / INT8_GRAPH, exact=True).run, "int8")
    return {
        "files": [INT8_GRAPH],
        "artifact": INT8_GRAPH,
        "graph": INT8_GRAPH,
        "calibration": cal.record(),
        "statistics_cached": cached,
        "method": result.method,
        "method_scores": result.method_scores,
        "method_choice": "given" if o.calib_method else "measured: best mean cosine on tuning views",
        "sensitivity_pass": f"trained weights: layers kept in float while tuning cosine < {int8.TARGET_COSINE}"
        if ctx.trained
        else "skipped: random-init weights",
        "quantized_nodes": len(result.plan.nodes),
        "kept_float": result.kept_float,
        "escalated_float": list(ctx.keep_float),
        "sensitivity_ranking": [{"node": n, "cosine_gain": round(g, 6)} for n, g in result.ranking[:16]],
        "tuning": result.tuning,
        "self_distillation": distilled,
        "qdq": counts,
        "scheme": {
            "activations": "int8 per-tensor symmetric, zero point 0",
            "weights": "int8 per-output-channel symmetric (axis 0; Gemm output axis), zero point 0",
            "bias_correction": True,
        },
        "fidelity": row,
        "parity": parity,
        "verified_with": "onnxruntime CPU",
        "summary": f"{result.method}, {distilled['kept']} scales, {len(result.plan.nodes)} layers int8, "
        f"{len(result.kept_float) + len(ctx.keep_float)} kept float, "
        f"top-1 {row['top1_agreement']:.1%} over {row['views']} views",
    }


def _self_distill(ctx, fp32_model, qdq_model):
    """The Q/DQ graph tuned by self-distillation (precision/distill.py) when it follows FP32 more closely
    on held-out views, else the graph as calibrated; and the record of both scores and the choice."""
    import time

    from edgeffnet.precision import distill

    if not ctx.trained:  # random-init logits carry no meaning worth matching, and the time buys nothing
        return qdq_model, {"kept": "untuned", "reason": "skipped: random-init weights"}
    if not ctx.options.distill:
        # Off by default: on pretrained Lite0/Lite1 it did not earn its ~100 s
        # (docs/results/self-distillation.md).
        return qdq_model, {"kept": "untuned", "reason": "not asked (--distill)"}
    train_x, held_x, held_what = ctx.calibration.distillation_split(ctx.preprocess)
    if len(train_x) < distill.BATCH:
        return qdq_model, {
            "kept": "untuned",
            "reason": f"skipped: {len(train_x)} calibration views, fewer than one batch ({distill.BATCH})",
        }
    start = time.perf_counter()
    model, record = distill.tune(qdq_model, fp32_model, train_x, held_x, held_what)
    record["stage_seconds"] = round(time.perf_counter() - start, 1)
    ctx.log.info(
        f"self-distillation: held-out cosine {record['untuned']['cosine_mean']:.5f} untuned, "
        f"{record.get('tuned', {}).get('cosine_mean', float('nan')):.5f} tuned; kept {record['kept']} "
        f"({record['stage_seconds']:.0f}s)"
    )
    return model, record
