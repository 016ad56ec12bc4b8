"""The build pipeline: a read-only context, five stages from one artifact to the next, a manifest.

    reference -> export -> simplify -> precision -> compile

`build()` is the loop: resolve what to build, open a staging directory, run the stages, write the
manifest, rename the directory into place (stages.py has the stages, context.py what they read).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from edgeffnet import bundle
from edgeffnet.bundle import Bundle, Manifest
from edgeffnet.core import host, logs
from edgeffnet.core.errors import UserError
from edgeffnet.core.files import utc_now
from edgeffnet.core.layout import BUILD_LOG
from edgeffnet.core.version import __version__
from edgeffnet.pipeline import cache, escalate, stages
from edgeffnet.pipeline.context import BuildContext
from edgeffnet.pipeline.options import BuildOptions
from edgeffnet.specs import targets


def default_output(spec_name: str, target: str, precision: str) -> Path:
    slug = spec_name.replace(",", "-").replace("=", "").replace(".", "p")
    return Path("build") / f"{slug}-{target}-{precision}"


BUILD_SIDE = ("torch", "onnx", "onnxsim")
# An ONNX file stops at 2 GB (protobuf): a network past this many FP32 parameters cannot be exported, and
# would have filled the memory before the export said so.
MAX_PARAMS = 400_000_000


def require_build_side(what: str = "building") -> None:
    """A device-side install (no PyTorch, no ONNX tooling) cannot build: say which extra to install."""
    import importlib.util

    missing = [m for m in BUILD_SIDE if importlib.util.find_spec(m) is None]
    if missing:
        from edgeffnet.core.extras import install_line

        raise UserError(
            f"{what} needs {', '.join(missing)}, which this device-side install lacks; install the "
            f"build side: {install_line('build')}"
        )


def prepare(
    spec: str,
    target: str = "cpu",
    precision: str | None = None,
    weights: str | None = None,
    output: str | Path | None = None,
    options: BuildOptions | None = None,
) -> BuildContext:
    """Everything a build needs, resolved and checked before any work (bad input fails here, in one line).

    What the options alone decide is checked first, before PyTorch is imported: a mistyped name is
    answered at once, not after the seconds and the memory an import of the build side takes."""
    from edgeffnet.specs.scaling import parse_spec, with_resolution

    o = options or BuildOptions()
    s = parse_spec(spec)
    if o.resolution is not None:
        s = with_resolution(s, o.resolution)
    t = targets.load(target)
    p = t.check_precision(precision)
    check_weights_argument(weights)
    if o.dynamic_batch and t.options.get("static_shapes"):
        raise UserError(f"target '{t.name}' runs static shapes only; drop --dynamic-batch")
    if output is not None and str(output) == "":
        raise UserError("-o is empty; name a bundle directory or leave -o out for the default")
    out = Path(output) if output is not None else default_output(s.name, t.name, p)
    bundle.check_destination(out)
    require_build_side()
    check_profile_rules(t, p, o)
    from edgeffnet.network import weights as _weights
    from edgeffnet.network.reference import check_weights

    w = _weights.resolve(weights, s)
    if w is not None:
        check_weights(s, w)
    # After the weights: a checkpoint's head width is what --classes must list.
    stages.check_val(o, p, o.num_classes or (w.num_classes if w else 1000))
    _check_size(s, o, p, w)
    ctx = BuildContext(spec=s, target=t, precision=p, weights=w, options=o, output=out, log=logs.logger())
    if p != "fp32" and o.calib is not None:
        ctx.calibration  # bad calibration data fails here, before the first stage, and is kept for that stage
    return ctx


WEIGHTS_KEYWORDS = ("pretrained",)


def check_weights_argument(weights: str | Path | None) -> None:
    """--weights is a keyword or a checkpoint file; a near-miss keyword gets a suggestion (without PyTorch)."""
    if weights is None or str(weights) in WEIGHTS_KEYWORDS:
        return
    path = Path(weights)
    if path.is_file():
        return
    from edgeffnet.core.suggest import did_you_mean

    what = "is a directory" if path.is_dir() else "does not exist"
    raise UserError(
        f"--weights '{weights}' {what}{did_you_mean(str(weights), WEIGHTS_KEYWORDS)}; pass a "
        f".pth/.pt checkpoint file or one of: {', '.join(WEIGHTS_KEYWORDS)}"
    )


def check_profile_rules(target, precision: str, options: BuildOptions) -> None:
    """What the target's own rules refuse from the options alone (the backend reads them from the profile:
    TensorRT's parser version bounds the opset), refused before the first stage rather than at compile."""
    from edgeffnet.backends import get

    problems = getattr(get(target.backend), "option_problems", lambda *a: [])(target, precision, options)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"target '{target.name}' cannot take these options: {problems[0]}{more}")


def _check_size(spec, o: BuildOptions, precision: str, weights) -> None:
    from edgeffnet.network.info import describe

    o.check_memory(spec.resolution, precision, weights is not None)
    params = describe(spec, o.num_classes or (weights.num_classes if weights else 1000))["params"]
    if params > MAX_PARAMS:
        raise UserError(
            f"{spec.name} has {params:,} parameters; a build takes at most {MAX_PARAMS:,} (an ONNX "
            f"file stops at 2 GB): choose smaller w or d"
        )


def run(ctx: BuildContext) -> Bundle:
    o = ctx.options
    ctx.log.info(
        f"building {ctx.spec.name} for {ctx.target.name} ({ctx.target.description}) at {ctx.precision}, "
        f"input {'N' if o.dynamic_batch else o.batch}x3x{ctx.spec.resolution}x{ctx.spec.resolution}"
    )
    t0 = time.perf_counter()
    store = cache.StageCache(o.cache)
    with bundle.staging(ctx.output) as tmp, logs.to_file(tmp / BUILD_LOG):
        c = ctx.in_dir(tmp)
        ref = stages.reference(c, store)
        exported = stages.export(c, store, ref)
        simplified = stages.simplify(c, store, exported)
        graph = stages.precision(c, store, simplified)
        compiled = stages.compile(c, store, graph)
        try:
            fidelity = stages.fidelity_verdict(c, graph, compiled)
        except escalate.FidelityTooLow as miss:
            if not escalate.applies(c):
                raise
            c, graph, compiled, fidelity = escalate.escalate(c, store, simplified, graph, compiled, miss)
        layers = stages.layer_table(c, store, ref, graph, compiled)
        done = [ref, exported, simplified] + ([graph] if graph is not simplified else []) + [compiled, layers]
        left_out = _leave_out(c, graph.path.name)  # after the layer table: it reads the graph the target runs
        manifest = _manifest(
            c, {a.stage: a.record for a in done}, graph.path.name, fidelity, time.perf_counter() - t0, left_out
        )
        bundle.write_manifest(tmp, manifest)
        if not ctx.trained:
            ctx.log.info(f"weights: {bundle.RANDOM_WEIGHTS}")
        ctx.log.info(f"bundle complete: {ctx.output}")
    return Bundle.open(ctx.output)


def _leave_out(ctx: BuildContext, graph: str) -> dict:
    """Remove what the target's device does not need (the backend says which files, and why: a TensorRT
    bundle keeps only the graph its engine is built from); the stage cache keeps them for a rebuild."""
    from edgeffnet.backends import get

    backend = get(ctx.target.backend)
    files = [f for f in getattr(backend, "left_out", lambda g: [])(graph) if (ctx.dir / f).is_file()]
    for f in files:
        (ctx.dir / f).unlink()
    if files:
        ctx.log.info(f"left out of the bundle: {', '.join(files)} ({backend.LEFT_OUT_WHY})")
    return {"files": files, "why": backend.LEFT_OUT_WHY} if files else {}


def _profile(t) -> dict:
    """The profile as the manifest names it: its file name and the sha256 of its content, never a path of
    the machine that built the bundle (the profile's facts are recorded beside it)."""
    import hashlib

    try:
        digest = hashlib.sha256(Path(t.path).read_bytes()).hexdigest() if t.path else None
    except OSError:
        digest = None
    return {"profile": Path(t.path).name if t.path else None, "profile_sha256": digest}


def _manifest(
    ctx: BuildContext, records: dict, graph: str, fidelity: dict | None, seconds: float, left_out: dict
) -> Manifest:
    from edgeffnet.network.info import describe

    w, s, t = ctx.weights, ctx.spec, ctx.target
    d = describe(s, records["reference"]["num_classes"])
    files = sorted(p.name for p in ctx.dir.iterdir() if not p.name.startswith("."))
    o = ctx.options
    return Manifest(
        created=utc_now(),
        edgeffnet=__version__,
        spec={
            k: d[k]
            for k in (
                "spec",
                "family",
                "phi",
                "only",
                "alpha",
                "beta",
                "gamma",
                "depth",
                "width",
                "resolution_multiplier",
                "resolution",
                "dropout",
                "activation",
                "squeeze_excitation",
            )
        }
        | {"stages": d["stages"]},
        params=d["params"],
        macs=d["macs"],
        flops=d["flops"],
        num_classes=d["num_classes"],
        scaling_check=d["scaling_check"],
        target={
            "name": t.name,
            "backend": t.backend,
            "device": t.device,
            "description": t.description,
            **_profile(t),
            "peak": t.peak,
            "memory": t.memory,
            "options": t.options,
        },
        precision=ctx.precision,
        input={
            "name": "input",
            "batch": ctx.fixed_batch,
            "dynamic_batch": o.dynamic_batch,
            "shape": [o.batch, 3, s.resolution, s.resolution],
            "layout": "NCHW",
            "dtype": "float32",
        },
        weights=(
            {
                "source": w.source,
                "sha256": w.sha256,
                "layout": w.layout,
                "numerics": asdict(w.numerics),
                "random_init": False,
            }
            if w
            else {
                "source": "random",
                "random_init": True,
                "seed": o.seed,
                "note": "seeded random weights (BatchNorm statistics from the calibration photos); "
                "latency study: the outputs mean nothing",
            }
        ),
        preprocess=asdict(ctx.preprocess),
        options=o.manifest_dict(ctx.precision),
        graph=graph,
        stages=records,
        files=files + [f for f in (BUILD_LOG, bundle.MANIFEST) if f not in files],
        fidelity=fidelity,
        build_seconds=round(seconds, 3),
        tools=host.tools(),
        host=host.describe(),
        extra={"left_out": left_out} if left_out else {},
    )


def build(
    spec: str,
    target: str = "cpu",
    precision: str | None = None,
    weights: str | None = None,
    output: str | Path | None = None,
    **options,
) -> Bundle:
    """Build `spec` for `target` into a verified bundle (the Python API of `edgeffnet build`).

    `options` are BuildOptions fields (batch, dynamic_batch, opset, seed, views, cache, require_engine,
    calib, calib_size, calib_method, min_agreement, allow_drop, distill, fidelity_views, val, max_drop, classes,
    num_classes, resolution)."""
    return run(prepare(spec, target, precision, weights, output, BuildOptions.from_kwargs(options)))
