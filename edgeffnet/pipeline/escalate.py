"""Escalation: an INT8 build of trained weights that misses the fidelity gate keeps its most damaging
layers in float, is re-measured, and stops at the gate or at the last of STEPS, as NNCF's accuracy control does.

Layers are ranked once by measured effect on the artifact that is judged: each quantized layer alone back
in float, the Q/DQ graph turned into the target's artifact as its compile stage turns it (for OpenVINO, the
Q/DQ route the host uses: uint8 activations, 7-bit dense weights without VNNI), mean cosine with FP32 on
the calibration tuning views, which the gate's verification views never include. Ranking on ONNX Runtime
instead finds the layers that hurt ONNX Runtime: on pretrained Lite0 at 96 px (OpenVINO CPU without VNNI,
confident-view agreement 84.8% at first), the ONNX Runtime ranking's top 10 layers in float reached 90.4%,
the OpenVINO ranking's top 10 97.0%.

Each step rebuilds the precision and compile stages with the top k layers in float (both cached under k)
and judges them with the same gate. What stayed in float, each step's agreement and what the passing step
cost in latency (the compiled artifact before and after, interleaved on this host) go into the manifest.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from edgeffnet.core import host, logs
from edgeffnet.core.errors import FidelityTooLow, UserError
from edgeffnet.core.files import atomic_write_json, cache_root, digest_key
from edgeffnet.core.untrusted import read_json
from edgeffnet.pipeline import cache, stages

# Layers kept in float at each re-measurement; the last is the limit. On Lite0 at 96 px the OpenVINO
# ranking's agreement went 84.8% -> 90.4% -> 93.4% -> 92.4% -> 97.0% -> 96.4% at 0, 1, 3, 6, 10, 15
# layers: six is too few where a whole route loses a bit, and a third of Lite0's 46 int8 layers is
# where float starts to cost what INT8 saves.
STEPS = (1, 3, 6, 10, 15)
MAX_LAYERS = STEPS[-1]


def applies(ctx) -> bool:
    return ctx.precision == "int8" and ctx.trained and not ctx.options.allow_drop


def artifact_maker(ctx, compiled):
    """(what it runs, make): make(Q/DQ model, calibration input means) -> run(x) -> logits, the graph run
    as the target's compiled artifact runs it; None where this host has no closer stand-in than ONNX Runtime (TensorRT)."""
    if ctx.target.backend != "openvino":
        return None
    from edgeffnet.backends.openvino import graph_runner, placed
    from edgeffnet.backends.openvino.encoding import encode, has_vnni, host_route

    # The escalated compile stage builds only this host's own Q/DQ route (int8_routes.route_graphs), so the
    # ranking measures that route whichever route the first build chose (NNCF's ignores what is float).
    route = host_route(compiled.record.get("cpu_vnni", has_vnni()))
    batch = ctx.fixed_batch or 1

    def make(model, means):
        return graph_runner(encode(model, route, means).SerializeToString(), ctx.target, batch)

    return f"OpenVINO {placed(ctx.target)}, route {route}", make


def rank_on_artifact(
    model, stats: dict, method: str, exclude: tuple[str, ...], x: np.ndarray, make
) -> list[tuple[str, float]]:
    """Quantized layers, most damaging first: each one's gain in mean cosine with FP32 on `x` when it alone
    returns to float, measured on what `make` turns the Q/DQ graph into (the layers in `exclude` stay float)."""
    from edgeffnet.backends import onnxruntime as ort_backend
    from edgeffnet.core.verify import compare
    from edgeffnet.precision import qdq, ranges

    model = qdq.name_nodes(model)
    ref = ort_backend.run_all(model, x)
    thresholds = ranges.thresholds(stats, method)

    def cosine(excluded) -> float:
        graph = qdq.quantize(model, qdq.plan(model, frozenset(excluded)), thresholds, stats["means"])
        return compare(ref, make(graph, stats["means"])(x)).cosine_mean

    base = cosine(exclude)
    gains = [(name, cosine((*exclude, name)) - base) for name in qdq.plan(model, frozenset(exclude)).nodes]
    return sorted(gains, key=lambda g: -g[1])


def _ranking(ctx, simplified, graph, compiled, kept: list[str]) -> tuple[list[tuple[str, float]], str]:
    import onnx

    from edgeffnet.precision import int8

    cal = ctx.calibration
    tuning = cal.tuning(ctx.preprocess)
    maker = artifact_maker(ctx, compiled)
    if maker is None:  # the sensitivity pass's ranking (ONNX Runtime) where it ran; else measured now
        ranking = [(r["node"], r["cosine_gain"]) for r in graph.record.get("sensitivity_ranking", [])]
        if ranking:
            return ranking, "mean cosine gain with the layer alone in float, ONNX Runtime, calibration tuning views"
    model = onnx.load(str(simplified.path))
    method = graph.record["method"]
    on = "ONNX Runtime" if maker is None else maker[0]
    ranked_by = f"mean cosine gain with the layer alone in float, {on}, {len(tuning)} calibration tuning views"
    # One ranking compiles every layer's variant (minutes): a rebuild of the same graph reads it back.
    key = digest_key(int8.graph_digest(model), cal.sha256, method, kept, on, cache.code_digest(), _runtime_version())
    path = cache_root() / "escalation" / f"{key}.json"
    if ctx.options.cache:
        try:
            return [(str(n), float(g)) for n, g in read_json(path, what="cached ranking", kind=list)], ranked_by
        except (UserError, ValueError, TypeError):
            pass  # absent or damaged: measure
    stats, _ = int8.statistics(model, cal.data, cal.sha256, ctx.options.cache)
    t = time.perf_counter()
    with logs.heartbeat(f"escalation: ranking layers on {on}"):
        if maker is None:
            ranking = int8.rank_layers(model, stats, tuning, method, tuple(kept))
        else:
            ranking = rank_on_artifact(model, stats, method, tuple(kept), tuning, maker[1])
    ctx.log.info(f"escalation: {len(ranking)} layers ranked on {on} in {time.perf_counter() - t:.0f}s")
    if ctx.options.cache:
        try:
            atomic_write_json(path, ranking)
        except OSError:
            pass  # the cache is an optimisation
    return ranking, ranked_by


def _runtime_version() -> str:
    """The runtimes a ranking was measured with (from the installed packages' metadata: nothing imported)."""
    tools = host.tools()
    return f"ort {tools.get('onnxruntime')}, openvino {tools.get('openvino')}"


def escalate(ctx, store, simplified, graph, compiled, miss: FidelityTooLow, steps: tuple[int, ...] = STEPS):
    """(ctx, graph, compiled, verdict) of the first step that passes the gate; the last miss otherwise."""
    from edgeffnet.backends import RunSettings, get
    from edgeffnet.measure.timing import interleaved_p50

    o = ctx.options
    ctx.log.info(f"escalation: {miss}")
    backend = get(ctx.target.backend)
    settings = RunSettings(cpu_fallback=True)
    # The artifact that missed stays loaded (its files are about to be replaced) for the latency comparison.
    before = backend.load(ctx.dir, ctx.target, ctx.precision, settings)
    kept = [k["node"] for k in graph.record.get("kept_float", [])]  # the sensitivity pass's stay float
    ranking, ranked_by = _ranking(ctx, simplified, graph, compiled, kept)
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
            "ranked_by": ranked_by,
            "steps": tried,
            "limit": MAX_LAYERS,
            "latency_p50_ms": {"before": round(lat["before"], 4), "escalated": round(lat["after"], 4)},
            "latency_cost": round(lat["after"] / lat["before"], 3),
            "measured_on": after.device,
        }
        ctx.log.info(
            f"escalation: passes with {k} layer(s) in float "
            f"({', '.join(n for n, _ in ranked[:k])}); p50 {lat['before']:.3f} -> {lat['after']:.3f} ms"
        )
        return c, graph, compiled, verdict
    raise FidelityTooLow(
        f"{miss} (after keeping up to {tried[-1]['layers'] if tried else 0} of the most damaging "
        f"layers in float; the limit is {MAX_LAYERS})"
    ) from None
