"""The engine build through the tensorrt Python API (8.x, 10.x, 11.x) and the facts an engine is bound to.

Only imported where `tensorrt` imports. The API differences handled here:
- network: EXPLICIT_BATCH on 8.x (the ONNX parser requires it); STRONGLY_TYPED on 10.x when the plan
  says so; nothing on 11 (always strongly typed, EXPLICIT_BATCH no longer exists).
- workspace: set_memory_pool_limit(WORKSPACE) from 8.3, max_workspace_size before.
- precision: BuilderFlag FP16/INT8 only where the plan asks (they do not exist on 11); TF32 cleared for fp32.
- DLA: default_device_type DLA, DLA_core, GPU_FALLBACK.
- timing cache: one file per TensorRT version and GPU under the edgeffnet cache, loaded before and saved
  after every build, so the second build of any model on a device skips most tactic timing.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from edgeffnet.backends.tensorrt.plan import EnginePlan, batch_profile
from edgeffnet.core.errors import UserError
from edgeffnet.core.files import atomic_write_bytes, cache_root
from edgeffnet.core.layout import ENGINE

PLAN_TAG = 0x74727466  # "ftrt": the first word of a serialized plan (TensorRT samples, sampleEngines.cpp)


def plan_version(engine: Path) -> str | None:
    """The TensorRT version written in a plan's header, without deserializing it; None if unreadable.

    Layout from trtexec's --getPlanVersionOnly (plans from 8.6 on): uint32 tag, uint32 serialization
    version 0, and bytes 24..27 = major, minor, patch, build. Sample code, not a documented format, so
    it only ever adds to the facts recorded beside the engine."""
    try:
        with open(engine, "rb") as f:
            head = f.read(28)
    except OSError:
        return None
    if len(head) < 28 or struct.unpack_from("<II", head) != (PLAN_TAG, 0):
        return None
    return ".".join(str(b) for b in head[24:28])


def timing_cache_path(tensorrt: str, gpu: dict) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu["name"]).strip("-").lower()
    return (
        cache_root() / "tensorrt" / f"timing-trt{tensorrt}-sm{gpu['compute_capability'].replace('.', '')}-{slug}.cache"
    )


def _save_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def build(graph: Path, engine: Path, p: EnginePlan, target, gpu: dict, input_name: str, dims: list[int | None]) -> dict:
    """Parse `graph`, build it as `p` says, serialize to `engine`; return what was done."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation = trt.NetworkDefinitionCreationFlag
    flags = 0
    if p.tensorrt[0] < 10:
        flags = 1 << int(creation.EXPLICIT_BATCH)
    elif p.tensorrt[0] == 10 and p.strongly_typed:
        flags = 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(graph.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT {trt.__version__} cannot parse {graph.name}: {errors}")

    config = builder.create_builder_config()
    pool = p.workspace_mib << 20
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, pool)
    else:
        config.max_workspace_size = pool
    for name in p.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if p.no_tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if p.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = p.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    shapes = batch_profile(target, dims)
    if shapes:
        profile = builder.create_optimization_profile()
        dim = {k: tuple(int(d) for d in v.split("x")) for k, v in shapes.items()}
        profile.set_shape(input_name, dim["min"], dim["opt"], dim["max"])
        config.add_optimization_profile(profile)

    tc_path = timing_cache_path(trt.__version__, gpu)
    tc_bytes = tc_path.read_bytes() if tc_path.is_file() else b""
    timing = config.create_timing_cache(tc_bytes)
    # A cache from another TensorRT/GPU is refused rather than half-used; the file name keys both anyway.
    reused = bool(tc_bytes) and config.set_timing_cache(timing, ignore_mismatch=False)
    if not reused:
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(
            f"TensorRT {trt.__version__} failed to build {graph.name} for {target.name}; "
            f"rerun with trtexec --verbose (line in README.md) to see why"
        )
    _save_atomically(engine, bytes(serialized))
    _save_atomically(tc_path, bytes(config.get_timing_cache().serialize()))
    return {
        "tensorrt": trt.__version__,
        "gpu": gpu["name"],
        "compute_capability": gpu["compute_capability"],
        "dla_core": p.dla_core,
        "path": p.path,
        "why": p.why,
        "builder_flags": list(p.flags),
        "tf32": not p.no_tf32,
        "workspace_mib": p.workspace_mib,
        "dynamic_batch": shapes,
        "timing_cache": {"file": str(tc_path), "reused": reused},
        "plan_header": plan_version(engine),
    }


def same_version(a: str, b: str) -> bool:
    """'10.3.0.26' (a plan header) and '10.3.0' (a Python package) name the same release."""
    pa, pb = str(a).split("."), str(b).split(".")
    n = max(3, min(len(pa), len(pb)))
    return pa[:n] == pb[:n]


def mismatch(built: dict, tensorrt: str, gpu: dict) -> str | None:
    """One line when an engine built as `built` says cannot run under `tensorrt` on `gpu`; None when it can.

    Engines are bound to the TensorRT version and the GPU they were built on (TensorRT support matrix:
    'serialized engines are not portable across platforms or TensorRT versions'; a plan from another
    version fails to deserialize with 'expecting library version X got Y')."""
    here = f"TensorRT {tensorrt} on {gpu['name']} (sm_{gpu['compute_capability'].replace('.', '')})"
    there = f"TensorRT {built['tensorrt']} on {built['gpu']} (sm_{str(built['compute_capability']).replace('.', '')})"
    if (
        not same_version(built["tensorrt"], tensorrt)
        or built["gpu"] != gpu["name"]
        or str(built["compute_capability"]) != gpu["compute_capability"]
    ):
        return f"{ENGINE} was built for {there}; this host has {here}: rebuild it here with `edgeffnet compile BUNDLE`"
    return None
