"""The build stages, each a function from one artifact to the next, each verified against PyTorch:

    reference (PyTorch model, reference logits) -> export (model.onnx) -> simplify (model.sim.onnx)
    -> precision (model.fp16.onnx | model.int8.onnx) -> compile (the target's artifact)

Each stage is cached under a key of everything that determines it (its upstream key, its own inputs,
the tool versions and edgeffnet's code), so a rebuild reuses finished stages.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from edgeffnet.core import host, logs
from edgeffnet.core.artifact import Artifact
from edgeffnet.core.errors import UserError
from edgeffnet.core.files import digest_key
from edgeffnet.core.layout import EXPORTED, IR, REFERENCE, SIMPLIFIED
from edgeffnet.core.version import __version__
from edgeffnet.pipeline import cache
from edgeffnet.pipeline.context import BuildContext


def _cached(
    ctx: BuildContext, store: cache.StageCache, name: str, upstream: Artifact | None, parts: dict, make
) -> Artifact:
    """The stage's record from the cache, or from `make()` (then stored); its files land in ctx.dir."""
    k = digest_key(upstream.key if upstream else "", name, parts, host.tools(), cache.code_digest())
    record = store.fetch(name, k, ctx.dir)
    if record is not None:
        record["cached"] = True
        ctx.log.info(f"{name:9s} reused from cache ({record.get('summary', '')})")
    else:
        t = time.perf_counter()
        with logs.heartbeat(f"stage {name}"):
            record = make()
        record["seconds"] = round(time.perf_counter() - t, 3)
        record["cached"] = False
        store.store(name, k, ctx.dir, record)
        ctx.log.info(f"{name:9s} {record['seconds']:7.2f}s  {record.get('summary', '')}")
    record["key"] = k
    artifact = record.get("artifact")
    return Artifact(name, ctx.dir / artifact if artifact else None, record)


def reference(ctx: BuildContext, store: cache.StageCache) -> Artifact:
    """The PyTorch model with its weights, and its FP32 logits on real-photo views (reference.npz)."""
    o, w = ctx.options, ctx.weights
    parts = {
        "spec": ctx.spec.name,
        "resolution": ctx.spec.resolution,
        "num_classes": o.num_classes,
        "weights": w.sha256 if w else f"random:{o.seed}",
        "views": o.views,
        "edgeffnet": __version__,
    }

    def make() -> dict:
        import torch

        from edgeffnet.network.model import count_params
        from edgeffnet.network.photos import to_input, verification_views

        views = verification_views(o.views, ctx.preprocess)
        with torch.no_grad():
            logits = ctx.model(torch.from_numpy(to_input(views, ctx.preprocess))).numpy()
        if not np.all(np.isfinite(logits)):
            raise UserError(
                "the model's outputs on the verification photos are not finite (NaN/Inf): the "
                "weights hold NaN or Inf, or overflow; check the checkpoint"
            )
        np.savez_compressed(ctx.dir / REFERENCE, views=views, logits=logits)
        return {
            "files": [REFERENCE],
            "artifact": REFERENCE,
            "reference": f"PyTorch {torch.__version__} eval, FP32",
            "views": int(len(views)),
            "num_classes": int(logits.shape[1]),
            "params": count_params(ctx.model),
            "summary": f"{len(views)} reference views",
        }

    return _cached(ctx, store, "reference", None, parts, make)


def _verified_graph(ctx: BuildContext, stage: str, name: str, info: dict) -> dict:
    """The record (less its summary line) of a stage that wrote the FP32 ONNX graph `name`: the graph run
    as written (exact, no layout optimisations) against the reference."""
    from edgeffnet.backends import onnxruntime as ort_backend

    parity = ctx.verify(stage, ort_backend.Runner(ctx.dir / name, exact=True).run, "fp32")
    return {
        "files": [name],
        "artifact": name,
        **info,
        "parity": parity,
        "verified_with": "onnxruntime CPU (no layout optimisations)",
    }


def export(ctx: BuildContext, store: cache.StageCache, ref: Artifact) -> Artifact:
    o = ctx.options
    parts = {"batch": o.batch, "dynamic": o.dynamic_batch, "opset": o.opset}

    def make() -> dict:
        from edgeffnet.network.export import export_onnx

        info = export_onnx(
            ctx.model,
            ctx.dir / EXPORTED,
            ctx.spec.resolution,
            o.batch,
            o.dynamic_batch,
            o.opset,
            {"edgeffnet_spec": ctx.spec.name, "preprocess": asdict(ctx.preprocess)},
        )
        r = _verified_graph(ctx, "export", EXPORTED, info)
        d = r["parity"]["max_abs"]
        return r | {"summary": f"{info['nodes']} nodes, opset {info['opset']}, max|d| {d:.1e}"}

    return _cached(ctx, store, "export", ref, parts, make)


def simplify(ctx: BuildContext, store: cache.StageCache, exported: Artifact) -> Artifact:
    def make() -> dict:
        from edgeffnet.graph.simplify import simplify as run_onnxsim

        info = run_onnxsim(exported.path, ctx.dir / SIMPLIFIED)
        r = _verified_graph(ctx, "simplify", SIMPLIFIED, info)
        d = r["parity"]["max_abs"]
        return r | {"summary": f"nodes {info['nodes_before']} -> {info['nodes_after']}, max|d| {d:.1e}"}

    return _cached(ctx, store, "simplify", exported, {}, make)


def precision(ctx: BuildContext, store: cache.StageCache, simplified: Artifact) -> Artifact:
    """fp32 compiles the simplified graph as it is; fp16 and int8 get a graph of their own."""
    if ctx.precision == "fp32":
        return simplified
    from edgeffnet import precision as passes

    with logs.heartbeat("stage precision: calibration data"):  # read before the key: it is part of it
        parts = passes.cache_parts(ctx)
    return _cached(ctx, store, "precision", simplified, parts, lambda: passes.make_graph(ctx, simplified.path))


def compile(ctx: BuildContext, store: cache.StageCache, graph: Artifact) -> Artifact:
    """The target's artifact from the precision graph, by the target's backend, verified on its runtime."""
    from edgeffnet.backends import RunSettings, get

    t = ctx.target
    backend = get(t.backend)
    parts = {
        "backend": t.backend,
        "device": t.device,
        "options": t.options,
        "precision": ctx.precision,
        "graph": graph.path.name,
    }

    def make() -> dict:
        if ctx.precision == "int8" and t.backend == "openvino":
            # OpenVINO has several INT8 encodings of the one Q/DQ graph: the build measures them and keeps
            # the best (the build's policy; the backend encodes, converts and loads each route)
            from edgeffnet.pipeline import int8_routes

            artifact = Artifact("compile", ctx.dir / IR, int8_routes.compile_int8(ctx, graph.path, graph.record))
        else:
            artifact = backend.compile(ctx, graph)
        record = {**artifact.record, "artifact": artifact.path.name if artifact.path else None}
        if record.get("pending"):  # cross-building for a device whose compiler is not on this host
            return record
        runner = backend.load(ctx.dir, t, ctx.precision, RunSettings(cpu_fallback=True))
        parity = ctx.verify("compile", runner.run, ctx.precision)
        record.update(
            parity=parity,
            verified_on=runner.describe(),
            summary=f"{t.backend} on {runner.device}, max|d| {parity['max_abs']:.1e}, "
            f"cosine min {parity['cosine_min']:.6f}",
        )
        if ctx.precision != "fp32":
            from edgeffnet.core.verify import run_batched
            from edgeffnet.precision import fidelity

            x, ref = ctx.fidelity_data
            record["fidelity"] = fidelity.report(
                ref, run_batched(runner.run, x, ctx.fixed_batch), f"{t.backend} {runner.device} artifact"
            )
        return record

    artifact = _cached(ctx, store, "compile", graph, parts, make)
    # Checked on the record, cached or fresh, so a cached pending stage fails too.
    if artifact.record.get("pending") and ctx.options.require_engine:
        raise UserError(
            f"--require-engine: the {t.name} engine was not built: {artifact.record.get('pending_reason')}; "
            f"build on the device, or drop --require-engine to get a bundle with the engine pending"
        )
    return artifact


def layer_table(
    ctx: BuildContext, store: cache.StageCache, ref: Artifact, graph: Artifact, compiled: Artifact
) -> Artifact:
    """layers.json: every layer of the spec with its cost and the ONNX nodes of the graph the target runs
    (the one its compile stage converted; the precision graph where it names none), so a profile on the
    device maps runtime nodes back to layers without ONNX or PyTorch there."""
    from edgeffnet.bundle import LAYER_TABLE

    converted = str(compiled.record.get("converted_from") or "").split(" ")[0]
    source = ctx.dir / converted if converted.endswith(".onnx") and (ctx.dir / converted).is_file() else graph.path

    def make() -> dict:
        import onnx

        from edgeffnet.specs import layer_table as table

        model = onnx.load(str(source), load_external_data=False)
        nodes = [(n.name, n.op_type) for n in model.graph.node]
        outputs = {o.name for o in model.graph.output}
        aliases = {n.name: out for n in model.graph.node for out in n.output if out in outputs}
        t = table.make(ctx.spec, ref.record["num_classes"], ctx.precision, nodes, aliases) | {"graph": source.name}
        table.write(ctx.dir / LAYER_TABLE, t)
        mapped = sum(len(r["onnx_nodes"]) for r in t["layers"])
        return {
            "files": [LAYER_TABLE],
            "artifact": LAYER_TABLE,
            "graph": source.name,
            "layers": len(t["layers"]),
            "nodes_mapped": mapped,
            "nodes_qdq": len(t["overhead_nodes"]),
            "nodes_unassigned": len(t["unassigned_nodes"]),
            "summary": f"{len(t['layers'])} layers, {mapped} of {len(nodes)} nodes of {source.name} in them",
        }

    return _cached(ctx, store, "layers", compiled, {"graph": source.name}, make)


def fidelity_verdict(ctx: BuildContext, graph: Artifact, compiled: Artifact) -> dict | None:
    """The fidelity rows of the precision graph and the compiled artifact; INT8 of trained weights is gated."""
    if ctx.precision == "fp32":
        return None
    from edgeffnet.precision import fidelity

    rows = [r for r in (graph.record.get("fidelity"), compiled.record.get("fidelity")) if r]
    if rows:  # printed before the gate: a build it stops shows every row, not just the worst
        ctx.log.info(f"fidelity against FP32 on verification photos ({ctx.precision}):")
        for line in fidelity.table(rows):
            ctx.log.info("  " + line)
    o = ctx.options
    if o.val is not None:  # labelled data: the gate is what users care about, the accuracy drop
        return {"rows": rows, **labelled_verdict(ctx, graph, compiled)}
    verdict = (
        fidelity.gate(rows, ctx.trained, o.min_agreement, o.allow_drop)
        if ctx.precision == "int8" and rows
        else {"gated": False}
    )
    if verdict.get("gated"):  # a miss without --allow-drop raised above, with its own line
        ctx.log.info(
            f"fidelity gate {'passed' if verdict['passed'] else 'missed (kept: --allow-drop)'}: "
            f"worst {verdict['worst']}, top-1 agreement {verdict['judged_agreement']:.1%} on "
            f"{verdict['judged_on']} (gate {o.min_agreement * 100:g}%), mean cosine "
            f"{verdict['cosine_mean']:.4f} (gate {verdict['min_cosine']:g})"
        )
    elif rows and ctx.precision == "int8":
        ctx.log.info(f"fidelity gate: none ({verdict.get('reason', 'not gated')})")
    return {"rows": rows, **verdict}


def val_dataset(val: str, num_classes: int, classes: str | None = None):
    """`--val`'s labelled images, every label resolved (against --classes where given), and where the class
    names came from: a bad folder fails in one line."""
    from edgeffnet.measure import evaluate

    names, imagenet = evaluate.class_list(num_classes, classes)
    data = evaluate.open_dataset(val, evaluate.Labels(names, imagenet), "--val")
    if not data.labelled:
        raise UserError(
            f"--val {val} has no labels (images directly in the folder); give one sub-folder per "
            f"class or a CSV of path,label (edgeffnet eval --data measures agreement on unlabelled images)"
        )
    return data, evaluate.classes_source(classes, imagenet)


def check_val(options, precision: str, num_classes: int) -> None:
    """Read before any work, so a wrong --val (or --classes) fails before the build rather than after it."""
    if options.val is None:
        if options.classes is not None:
            raise UserError("--classes names the classes of --val's labels; give --val DIR too, or drop --classes")
        return
    if precision == "fp32":
        raise UserError(
            "--val gates an FP16 or INT8 build on its accuracy drop against FP32; an FP32 build has "
            "nothing to gate: drop --val, or build --precision fp16/int8"
        )
    from edgeffnet.measure import evaluate

    evaluate.first_readable(val_dataset(options.val, num_classes, options.classes)[0], "--val")


def labelled_verdict(ctx: BuildContext, graph: Artifact, compiled: Artifact) -> dict:
    """`build --val`: the FP32 graph, the precision graph and the compiled artifact on the user's labelled
    images; the gate is the top-1 accuracy drop (FP32 minus artifact) against --max-drop. The result is
    kept in the bundle as eval/NAME.json, as `edgeffnet eval` writes it."""
    from edgeffnet.backends import RunSettings
    from edgeffnet.backends import onnxruntime as ort_backend
    from edgeffnet.core.files import atomic_write_json, utc_now
    from edgeffnet.measure import eval_result, evaluate

    o = ctx.options
    num_classes = ort_backend.Runner(ctx.dir / SIMPLIFIED).session.get_outputs()[0].shape[-1]
    data, classes = val_dataset(o.val, num_classes, o.classes)
    reference, artifacts, notes = evaluate.artifact_models(
        ctx.dir,
        graph.path.name,
        ctx.target,
        ctx.precision,
        ctx.fixed_batch,
        bool(compiled.record.get("pending")),
        RunSettings(cpu_fallback=True),
    )
    result = evaluate.measure(data, ctx.preprocess, reference, artifacts)
    result["data"]["classes"] = classes
    if result["partial"]:
        raise KeyboardInterrupt  # a build is whole or not at all
    if result["images"] == 0:  # the images changed since the check before the stages, or none decodes whole
        raise UserError(
            f"none of the {len(data.items)} images in --val {o.val} could be read (e.g. "
            f"{result['skipped_unreadable'][0]}); give jpg, png, bmp or webp files"
        )
    ctx.log.info(f"accuracy on --val {o.val} ({result['images']} labelled images, {ctx.precision}):")
    for line in evaluate.lines(result):
        ctx.log.info("  " + line)
    (ctx.dir / "eval").mkdir(exist_ok=True)
    atomic_write_json(
        ctx.dir / "eval" / f"{evaluate.result_name(o.val)}.json",
        eval_result.tagged("edgeffnet build --val", {"created": utc_now(), **result, "notes": notes}),
    )
    return evaluate.drop_gate(result, o.max_drop, o.allow_drop, ctx.trained, ctx.precision)
