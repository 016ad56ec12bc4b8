"""`edgeffnet compile BUNDLE`: finish a bundle whose engine was left pending, on the device that runs it.

A TensorRT bundle built on a workstation holds everything but the engine. Here, on a host with
TensorRT and the profile's GPU, the compile stage runs again: the engine is built, verified against the
bundle's own reference.npz with the precision's tolerance, and the manifest updated. The bundle is
rewritten as a whole (copied to a temporary directory beside it, renamed into place), so a failed
build or verification leaves it exactly as it was.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from edgeffnet import bundle
from edgeffnet.bundle import Bundle
from edgeffnet.core import host, logs
from edgeffnet.core.errors import UserError
from edgeffnet.core.files import utc_now
from edgeffnet.core.layout import BUILD_LOG, ENGINE
from edgeffnet.core.untrusted import confined
from edgeffnet.core.verify import verify


def compile_on_device(bundle_or_path: Bundle | str | Path) -> Bundle:
    b = bundle_or_path if isinstance(bundle_or_path, Bundle) else Bundle.open(bundle_or_path)
    log = logs.logger()
    target, precision, manifest = b.target, b.precision, b.manifest
    if target.backend != "tensorrt":
        raise UserError(
            f"{b.path} is a bundle for {target.name} ({target.backend}); its artifact was compiled "
            f"when it was built, so there is nothing to compile"
        )
    from edgeffnet.backends import tensorrt as trt_backend

    stage = manifest.stages.get("compile")
    if not isinstance(stage, dict) or not isinstance(stage.get("graph"), str):
        raise UserError(
            f"{b.path}/manifest.json has no compile record naming its graph; rebuild the bundle with edgeffnet build"
        )
    confined(b.path, stage["graph"])  # a bundle's files are its own: the graph to compile too
    reason = trt_backend.pending_reason(target, precision)
    if reason:
        raise UserError(
            f"{reason}; run `edgeffnet compile {b.path}` on a {target.name} with TensorRT, or inside "
            f"{b.path}: {stage['trtexec']} (JetPack's trtexec is /usr/src/tensorrt/bin/trtexec)"
        )
    t0 = time.perf_counter()
    with bundle.staging(b.path) as tmp:
        shutil.copytree(b.path, tmp, dirs_exist_ok=True)
        info = trt_backend.compile_graph(confined(tmp, stage["graph"]), tmp, target, precision, b.random_weights)
        runner = trt_backend.load(tmp, target, precision)
        x, ref = Bundle(tmp, manifest).reference()
        parity = verify("compile", runner.run, x, ref, manifest.input["batch"], precision, not b.random_weights)
        seconds = round(time.perf_counter() - t0, 3)
        summary = (
            f"tensorrt on {runner.device} ({runner.describe()['device_name']}), "
            f"max|d| {parity['max_abs']:.1e}, cosine min {parity['cosine_min']:.6f}"
        )
        finished = utc_now()
        manifest.stages["compile"] = {
            **info,
            "artifact": ENGINE,
            "parity": parity,
            "verified_on": runner.describe(),
            "summary": summary,
            "seconds": seconds,
            "cached": False,
            "key": stage.get("key"),
            "finished_by": "edgeffnet compile",
            "finished": finished,
            "finished_on": {"host": host.describe(), "tools": host.tools()},
        }
        manifest.files = sorted({p.name for p in tmp.iterdir() if not p.name.startswith(".")} | {bundle.MANIFEST})
        with open(tmp / BUILD_LOG, "a") as f:
            f.write(f"[edgeffnet compile {finished}] compile {seconds:.2f}s  {summary}\n")
        bundle.write_manifest(tmp, manifest)
        log.info(f"compile   {seconds:7.2f}s  {summary}")
    return Bundle.open(b.path)
