"""`edgeffnet compile BUNDLE`: finish a bundle whose engine was left pending, on the device that runs it.

A TensorRT bundle built on a workstation holds everything but the engine. Here, on a host with
TensorRT and the profile's GPU, the compile stage runs again: the engine is built, verified against the
bundle's own reference.npz with the precision's tolerance, and the manifest updated. The bundle is
rewritten as a whole (copied to a temporary directory beside it, renamed into place), so a failed
build or verification leaves it exactly as it was.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from pathlib import Path

import numpy as np

from . import bundle, host, targets
from .backends import tensorrt as trt_backend
from .errors import UserError
from .photos import to_input
from .preprocess import Preprocess
from .verify import check, compare, run_batched


def _verify(path: Path, manifest: dict, runner) -> dict:
    data = np.load(path / "reference.npz")
    x = to_input(data["views"], Preprocess.from_dict(manifest["preprocess"]))
    parity = compare(data["logits"], run_batched(runner.run, x, manifest["input"]["batch"]))
    check("compile", parity, manifest["precision"])
    return parity.as_dict()


def finish(bundle_dir: str | Path, echo=print) -> Path:
    path = Path(bundle_dir)
    manifest = bundle.read_manifest(path)
    t = manifest["target"]
    if t["backend"] != "tensorrt":
        raise UserError(f"{path} is a bundle for {t['name']} ({t['backend']}); its artifact was compiled when it "
                        f"was built, so there is nothing to compile")
    target, precision = targets.of_bundle(manifest), manifest["precision"]
    stage = manifest["stages"]["compile"]
    reason = trt_backend.pending_reason(target, precision)
    if reason:
        raise UserError(f"{reason}; run `edgeffnet compile {path}` on a {t['name']} with TensorRT, or inside "
                        f"{path}: {stage['trtexec']}")
    t0 = time.perf_counter()
    with bundle.staging(path) as tmp:
        shutil.copytree(path, tmp, dirs_exist_ok=True)
        info = trt_backend.compile(tmp / stage["graph"], tmp, target, precision)
        runner = trt_backend.load(tmp, target, precision)
        parity = _verify(tmp, manifest, runner)
        seconds = round(time.perf_counter() - t0, 3)
        summary = (f"tensorrt on {runner.device} ({runner.describe()['device_name']}), "
                   f"max|d| {parity['max_abs']:.1e}, cosine min {parity['cosine_min']:.6f}")
        manifest["stages"]["compile"] = {
            **info, "parity": parity, "verified_on": runner.describe(), "summary": summary, "seconds": seconds,
            "cached": False, "key": stage.get("key"), "finished_by": "edgeffnet compile",
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "finished_on": {"host": host.describe(), "tools": host.tools()}}
        manifest["files"] = sorted({p.name for p in tmp.iterdir() if not p.name.startswith(".")} | {bundle.MANIFEST})
        log = tmp / "build.log"
        with open(log, "a") as f:
            f.write(f"[edgeffnet compile {manifest['stages']['compile']['finished']}] compile {seconds:.2f}s  {summary}\n")
        bundle.write_manifest(tmp, manifest)
        echo(f"compile   {seconds:7.2f}s  {summary}")
    return path
