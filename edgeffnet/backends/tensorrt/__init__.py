"""TensorRT: compile = precision graph -> model.engine for the profile's GPU; run = that engine (pycuda/cuda-python).

An engine is bound to the GPU and TensorRT version it is built with, so it can only be built on the
device (or one of the same compute capability). Anywhere else, compile writes everything but the engine
and returns pending: the manifest and the bundle's README.md carry the exact trtexec line, and
`edgeffnet compile BUNDLE` on the device finishes the bundle. Nothing here stands in for TensorRT.

The graph is the one the precision stage wrote (model.sim.onnx for fp32, model.fp16.onnx, model.int8.onnx);
static checks of TensorRT's rules for the profile's version run first, wherever the build runs.
"""

from __future__ import annotations

from pathlib import Path

from edgeffnet.backends import RunSettings
from edgeffnet.backends.tensorrt.plan import parse_version, plan, trtexec_line
from edgeffnet.core.artifact import Artifact
from edgeffnet.core.errors import UserError
from edgeffnet.core.files import atomic_write_json, atomic_write_text, utc_now
from edgeffnet.core.layout import ENGINE, ENGINE_FACTS, ENGINE_README, EXPORTED, SIMPLIFIED
from edgeffnet.core.untrusted import read_json


def input_of(graph: Path) -> tuple[str, list[int | None]]:
    """The graph's input name and dims (None where the dimension is free)."""
    import onnx

    m = onnx.load(str(graph), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    return inp.name, [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]


def _import_tensorrt():
    """(module, None) or (None, why it is not usable here)."""
    try:
        import tensorrt as trt
    except ImportError as e:  # also the PyPI placeholder package, which raises on import
        return None, (
            f"tensorrt is not importable ({e}; JetPack installs it, elsewhere pip install 'edgeffnet[tensorrt]')"
        )
    except Exception as e:  # noqa: BLE001 - a broken install (missing libnvinfer) says so in its message
        return None, f"tensorrt is not importable ({type(e).__name__}: {e})"
    return trt, None


def host_gpu() -> tuple[dict | None, str | None]:
    from edgeffnet.backends.tensorrt.cuda import cuda

    try:
        return cuda().device(), None
    except ImportError as e:
        return None, f"{e}; pip install pycuda (or cuda-python) to run and verify the engine"


def pending_reason(target, precision: str) -> str | None:
    """Why this host cannot build and verify `target`'s engine, or None when it can."""
    trt, why = _import_tensorrt()
    if trt is None:
        return why
    gpu, why = host_gpu()
    if gpu is None:
        return why
    here = parse_version(gpu["compute_capability"])
    o = target.options
    if o.get("compute_capability") and here != parse_version(o["compute_capability"]):
        return (
            f"this host's GPU is {gpu['name']} (sm_{here[0]}{here[1]}), not {target.name}'s "
            f"sm_{o['compute_capability'].replace('.', '')}"
        )
    if o.get("min_compute_capability") and here < parse_version(o["min_compute_capability"]):
        return f"this host's GPU {gpu['name']} (sm_{here[0]}{here[1]}) is older than {target.name}'s sm_{o['min_compute_capability'].replace('.', '')}"
    p = plan(target, precision, parse_version(trt.__version__), here)
    if p.dla_core is not None:
        cores = trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores
        if cores <= p.dla_core:
            return f"this host has {cores} DLA cores; {target.name} builds for DLA core {p.dla_core}"
    return None


def _trtexec_for(target, precision: str, graph: Path) -> str:
    name, dims = input_of(graph)
    return trtexec_line(
        plan(target, precision, parse_version(target.options["tensorrt"])), graph.name, name, dims, target
    )


# What a TensorRT bundle leaves out: the device builds its engine from the precision graph alone, so the
# exported and simplified FP32 graphs (each the size of the FP32 weights) would only travel to sit there.
# The build side keeps them in its stage cache (EDGEFFNET_CACHE), and a rebuild reuses them.
LEFT_OUT = (EXPORTED, SIMPLIFIED)
LEFT_OUT_WHY = (
    "the device builds its engine from the precision graph alone; the build machine keeps these in its stage cache"
)
# JetPack installs trtexec outside PATH; the README's lines find it either way (TRTEXEC overrides).
TRTEXEC_LOOKUP = 'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"'


def left_out(graph: str) -> list[str]:
    """The files a bundle for this backend leaves out, given the graph its engine is built from."""
    return [f for f in LEFT_OUT if f != graph]


def _readme(
    target, precision: str, graph: str, line: str, pending: str | None, built: dict | None, random_weights: bool
) -> str:
    head = f"# TensorRT engine for {target.name}, {precision}\n\n"
    facts = f"Profile: {target.description}.\n\n"
    if random_weights:
        facts += (
            "Weights: **seeded random** (a latency study): the engine's outputs mean nothing; build with "
            "`--weights` for a model that classifies.\n\n"
        )
    gone = left_out(graph)
    if gone:
        facts += f"Left out of this bundle: {', '.join(f'`{f}`' for f in gone)}: {LEFT_OUT_WHY}.\n\n"
    if pending:
        status = (
            f"The engine is **pending**: it was not built here ({pending}). TensorRT engines are bound to "
            f"the GPU and TensorRT version that build them, so build it on the device. Everything up to "
            f"it is in this bundle: `{graph}`, verified against PyTorch with ONNX Runtime.\n\n"
            f"On the device, build, verify against `reference.npz` and update `manifest.json` with:\n\n"
            f"    edgeffnet compile BUNDLE\n\n"
            f"or build the engine alone (not verified, the manifest stays pending), inside this directory "
            f"(JetPack puts trtexec in /usr/src/tensorrt/bin, off PATH; set TRTEXEC to use another):\n\n"
        )
    else:
        status = (
            f"`{ENGINE}` was built with TensorRT {built['tensorrt']} on {built['gpu']} "
            f"(sm_{built['compute_capability'].replace('.', '')}), {built['path']}, and verified against "
            f"`reference.npz`. On another TensorRT version or GPU rebuild it with `edgeffnet compile BUNDLE` "
            f"or, inside this directory (JetPack puts trtexec in /usr/src/tensorrt/bin, off PATH):\n\n"
        )
    command = '"$TRTEXEC" ' + line.removeprefix("trtexec ")
    return head + facts + status + f"    {TRTEXEC_LOOKUP}\n    {command}\n"


def option_problems(target, precision: str, options) -> list[str]:
    """What the profile's TensorRT version refuses from the build options alone (rules.py), so a build
    stops before its first stage, not at compile."""
    from edgeffnet.backends.tensorrt import rules

    version = target.options.get("tensorrt")
    return rules.option_violations(version, options.opset, precision) if version else []


def compile(ctx, graph):
    """The compile stage for TensorRT: the engine from the precision graph, or its recipe when pending."""
    record = compile_graph(graph.path, ctx.dir, ctx.target, ctx.precision, not ctx.trained)
    return Artifact("compile", None if record["pending"] else ctx.dir / ENGINE, record)


def compile_graph(graph: Path, out_dir: Path, target, precision: str, random_weights: bool = False) -> dict:
    """Check the graph against the profile's TensorRT rules, then build model.engine here or mark it pending."""
    from edgeffnet.backends.tensorrt import rules
    from edgeffnet.core.verify import StageFailed

    version = target.options.get("tensorrt")
    if not version:
        raise UserError(
            f"target profile '{target.path or target.name}' has no options.tensorrt version; "
            f"see targets/jetson-orin-nano.toml for the format"
        )
    problems = rules.violations(graph, version)
    if problems:
        raise StageFailed(
            f"compile: {graph.name} breaks TensorRT {version}'s rules: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    line = _trtexec_for(target, precision, graph)
    record = {
        "graph": graph.name,
        "tensorrt_profile": version,
        "trtexec": line,
        "trtexec_cwd": "the bundle directory",
        "tensorrt_rules": {"checked_for": version, "violations": []},
    }
    reason = pending_reason(target, precision)
    if reason:
        atomic_write_text(
            out_dir / ENGINE_README, _readme(target, precision, graph.name, line, reason, None, random_weights)
        )
        return {
            **record,
            "files": [ENGINE_README],
            "pending": True,
            "pending_reason": reason,
            "engine": None,
            "finish": "edgeffnet compile BUNDLE on the device, or the trtexec line in README.md",
            "summary": f"engine pending: {reason}; on the device run `edgeffnet compile BUNDLE` "
            f"or the trtexec line in BUNDLE/README.md",
        }
    built = build_engine(graph, out_dir, target, precision)
    atomic_write_text(
        out_dir / ENGINE_README, _readme(target, precision, graph.name, line, None, built, random_weights)
    )
    return {**record, "files": [ENGINE, ENGINE_FACTS, ENGINE_README], "pending": False, "engine": built}


def build_engine(graph: Path, out_dir: Path, target, precision: str) -> dict:
    import tensorrt as trt

    from edgeffnet.backends.tensorrt import engine

    gpu, _ = host_gpu()
    name, dims = input_of(graph)
    p = plan(target, precision, parse_version(trt.__version__), parse_version(gpu["compute_capability"]))
    built = engine.build(graph, out_dir / ENGINE, p, target, gpu, name, dims)
    built["built"] = utc_now()
    atomic_write_json(out_dir / ENGINE_FACTS, built, indent=2)
    return built


def load(bundle_dir: Path, target, precision: str, settings: RunSettings | None = None):
    """The bundle's engine on this host's GPU. There is no fallback device: an engine runs where it was
    built or nowhere (settings.cpu_fallback does not apply)."""
    bundle_dir = Path(bundle_dir)
    if settings is not None and settings.outputs:
        raise UserError(
            "a TensorRT engine cannot grow an output after it is built; run its precision graph "
            "with onnxruntime for extra outputs"
        )
    engine_file, facts = bundle_dir / ENGINE, bundle_dir / ENGINE_FACTS
    if not engine_file.is_file():
        readme = bundle_dir / ENGINE_README
        raise UserError(
            f"{bundle_dir} has no TensorRT engine yet (built without TensorRT); on the device run "
            f"`edgeffnet compile {bundle_dir}`" + (f" or the trtexec line in {readme}" if readme.is_file() else "")
        )
    trt, why = _import_tensorrt()
    if trt is None:
        raise UserError(f"{why}; {bundle_dir}'s engine needs TensorRT on its device")
    gpu, why = host_gpu()
    if gpu is None:
        raise UserError(why)
    built = read_json(facts, what="engine facts") if facts.is_file() else None
    if built is None:
        raise UserError(
            f"{engine_file} has no {ENGINE_FACTS} saying what it was built with; rebuild it with "
            f"`edgeffnet compile {bundle_dir}`"
        )
    from edgeffnet.backends.tensorrt import engine
    from edgeffnet.backends.tensorrt.runner import Runner

    header = engine.plan_version(engine_file)
    if header and not engine.same_version(header, built["tensorrt"]):
        built = {**built, "tensorrt": header}  # the file was replaced (e.g. by trtexec): believe its header
    problem = engine.mismatch(built, trt.__version__, gpu)
    if problem:
        raise UserError(problem.replace("BUNDLE", str(bundle_dir)))
    return Runner(engine_file, built.get("dla_core"))
