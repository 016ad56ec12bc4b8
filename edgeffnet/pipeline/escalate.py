"""Escalation: an INT8 build of trained weights that misses the fidelity gate keeps its most damaging
layers in float, is re-measured, and stops at the gate or at MAX_LAYERS, as NNCF's accuracy control does.

Layers are ranked once by measured effect (precision/int8.py rank_layers: each layer alone back in float,
mean cosine with FP32 on the calibration views, which the gate's verification views never include). Each
step rebuilds the precision and compile stages with the top k layers in float (both cached under k) and
judges them with the same gate. What stayed in float and what it cost in latency (the compiled artifact
before and after, interleaved on this host) go into the manifest.
"""

from __future__ import annotations

import dataclasses

from ..errors import FidelityTooLow
from . import stages

STEPS = (1, 3, 6)  # layers kept in float at each re-measurement; the last is the limit
MAX_LAYERS = STEPS[-1]


def applies(ctx) -> bool:
    return ctx.precision == "int8" and ctx.trained and not ctx.options.allow_drop


def escalate(ctx, store, simplified, graph, miss: FidelityTooLow, steps: tuple[int, ...] = STEPS):
    """(ctx, graph, compiled, verdict) of the first step that passes the gate; the last miss otherwise."""
    import onnx

    from ..backends import RunSettings, get
    from ..measure.timing import interleaved_p50
    from ..precision import int8

    o = ctx.options
    ctx.log.info(f"escalation: {miss}")
    backend = get(ctx.target.backend)
    settings = RunSettings(cpu_fallback=True)
    # The artifact that missed stays loaded (its files are about to be replaced) for the latency comparison.
    before = backend.load(ctx.dir, ctx.target, ctx.precision, settings)
    # The layers the sensitivity pass kept stay float; the rest are ranked by the pass's own measurement,
    # or measured now where the pass had nothing to do (its tuning cosine was already above target).
    kept = [k["node"] for k in graph.record.get("kept_float", [])]
    ranking = [(r["node"], r["cosine_gain"]) for r in graph.record.get("sensitivity_ranking", [])]
    if not ranking:
        model = onnx.load(str(simplified.path))
        cal = ctx.calibration
        stats, _ = int8.statistics(model, cal.data, cal.sha256, o.cache)
        ranking = int8.rank_layers(model, stats, cal.tuning(ctx.preprocess), graph.record["method"], tuple(kept))
    ranked = [(name, gain) for name, gain in ranking if gain > 0 and name not in kept][:MAX_LAYERS]
    # The range method the first build chose stays: the escalation changes which layers are float, nothing else.
    options = dataclasses.replace(o, calib_method=graph.record["method"])
    tried = []
    for k in sorted({min(k, len(ranked)) for k in steps} - {0}):
        c = dataclasses.replace(ctx, options=options, keep_float=tuple(kept + [name for name, _ in ranked[:k]]))
        graph = stages.precision(c, store, simplified)
        compiled = stages.compile(c, store, graph)
        try:
            verdict = stages.fidelity_verdict(c, graph, compiled)
        except FidelityTooLow as e:
            miss = e
            tried.append({"layers": k, "passed": False, "message": str(e)})
            ctx.log.info(f"escalation: {k} layer(s) in float still misses the gate")
            continue
        tried.append({"layers": k, "passed": True})
        after = backend.load(c.dir, c.target, c.precision, settings)
        x = ctx.calibration.tuning(ctx.preprocess)[: ctx.fixed_batch or 1]
        lat = interleaved_p50({"before": before.bound(x), "after": after.bound(x)})
        verdict["escalation"] = {
            "kept_float": [{"node": name, "rank_cosine_gain": round(gain, 6)} for name, gain in ranked[:k]],
            "ranked_by": "mean cosine gain with the layer alone in float, calibration tuning views",
            "steps": tried, "latency_p50_ms": {"before": round(lat["before"], 4), "escalated": round(lat["after"], 4)},
            "latency_cost": round(lat["after"] / lat["before"], 3), "measured_on": after.device}
        ctx.log.info(f"escalation: passes with {k} layer(s) in float "
                     f"({', '.join(n for n, _ in ranked[:k])}); p50 {lat['before']:.3f} -> {lat['after']:.3f} ms")
        return c, graph, compiled, verdict
    raise FidelityTooLow(f"{miss} (after keeping up to {tried[-1]['layers'] if tried else 0} of the most damaging "
                         f"layers in float)") from None

