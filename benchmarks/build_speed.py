"""What the verified pipeline costs, and whether its IR is as fast as a plain one (issue 3).

1. Wall time per stage of the build pipeline (edgeffnet.pipeline: prepare, then run; no cache) against a plain torch.onnx.export -> onnxsim
   -> openvino.convert_model/save_model of the same model in the same process. Both sides start from the
   same already-imported libraries and build the same model (seeded random weights), so the difference is
   what verification and bookkeeping cost. Claim: pipeline <= 1.5x plain.
2. The pipeline's FP32 IR against the plain path's IR: edgeffnet's one timing loop
   (edgeffnet.measure.timing.interleaved_p50), in turns, f32 inference precision, p50 over 300 rounds.
   Claim: no slower (within 3%, the noise of a shared 2-core machine).
3. Why OpenVINO converts the ONNX graph rather than the PyTorch module: both IRs (the bundle's, from
   model.sim.onnx, and openvino.convert_model(module) of the same model) in the same loop, with their
   parity against PyTorch on the bundle's reference views.
4. With --subprocess: `edgeffnet build SPEC --no-cache` as a child process, its wall time and peak RSS
   (claim for B7: <= 10 minutes and <= 8 GB).

    python benchmarks/build_speed.py                 # B0, parts 1 and 2
    python benchmarks/build_speed.py --spec b7 --subprocess
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxsim
import openvino as ov
import torch

import edgeffnet
from edgeffnet import pipeline
from edgeffnet.backends.openvino.runner import Runner
from edgeffnet.measure.timing import interleaved_p50
from edgeffnet.pipeline.options import BuildOptions


def plain(spec: str, out: Path) -> dict:
    t = {}
    t0 = time.perf_counter()
    model = edgeffnet.create_model(spec)
    t["model"] = time.perf_counter() - t0
    res = model.spec.resolution
    t0 = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, res, res),),
            str(out / "plain.onnx"),
            dynamo=False,
            opset_version=13,
            input_names=["input"],
            output_names=["logits"],
        )
    t["export"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim, ok = onnxsim.simplify(onnx.load(str(out / "plain.onnx")))
    onnx.save(sim, str(out / "plain.sim.onnx"))
    t["simplify"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ov.save_model(ov.convert_model(str(out / "plain.sim.onnx")), str(out / "plain.xml"), compress_to_fp16=False)
    t["convert"] = time.perf_counter() - t0
    return t


def verified(spec: str, out: Path) -> dict:
    """The pipeline's stages, timed from the resolved context (what `plain` also starts from) to the bundle."""
    ctx = pipeline.prepare(spec, output=out / "bundle", options=BuildOptions(cache=False))
    t0 = time.perf_counter()
    b = pipeline.run(ctx)
    total = time.perf_counter() - t0
    return {"total": total, **{k: v["seconds"] for k, v in b.manifest.stages.items()}}


def torch_ir(spec: str, out: Path) -> Path:
    """The same model converted by openvino.convert_model straight from PyTorch (static input shape)."""
    model = edgeffnet.create_model(spec)
    res = model.spec.resolution
    ov.save_model(
        ov.convert_model(model, example_input=torch.zeros(1, 3, res, res), input=[(1, 3, res, res)]),
        str(out / "from_torch.xml"),
        compress_to_fp16=False,
    )
    return out / "from_torch.xml"


def timed_irs(xmls: dict[str, Path], iterations: int) -> dict[str, float]:
    """p50 ms of each IR on the CPU at f32, LATENCY hint, batch as compiled, in one interleaved loop."""
    runners = {k: Runner(xml, "CPU", "f32") for k, xml in xmls.items()}
    x = np.random.default_rng(0).standard_normal(next(iter(runners.values())).input_shape, dtype=np.float32)
    return interleaved_p50({k: r.bound(x) for k, r in runners.items()}, warmup=30, max_runs=iterations)


def parity(xml: Path, out: Path) -> float:
    """Max |logit difference| of an IR (f32) against the bundle's PyTorch reference views."""
    x, logits = edgeffnet.Bundle.open(out / "bundle").reference()
    ir = Runner(xml, "CPU", "f32")
    got = np.concatenate([ir.run(x[i : i + 1]) for i in range(len(x))])
    return float(np.abs(got - logits).max())


def child(spec: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "edgeffnet.cli", "build", spec, "--no-cache", "-o", f"{d}/bundle"],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        print(r.stderr.strip())
        print(
            f"{spec}: exit {r.returncode}, wall {wall / 60:.2f} min, peak RSS {rss_gb:.2f} GB "
            f"(claims: <= 10 min, <= 8 GB)"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="b0")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--subprocess", action="store_true", help="Measure a child `edgeffnet build` (time, RSS).")
    args = ap.parse_args()
    if args.subprocess:
        child(args.spec)
        return 0
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        edgeffnet.create_model(args.spec)  # warm imports and photo loading for both sides alike
        p = plain(args.spec, out)
        v = verified(args.spec, out)
        plain_total = sum(p.values())
        print(
            f"plain path ({args.spec}): "
            + ", ".join(f"{k} {s:.2f}s" for k, s in p.items())
            + f"; total {plain_total:.2f}s"
        )
        print(
            "verified pipeline: "
            + ", ".join(f"{k} {s:.2f}s" for k, s in v.items() if k != "total")
            + f"; total {v['total']:.2f}s"
        )
        ratio = v["total"] / plain_total
        print(f"pipeline / plain = {ratio:.2f}x (claim <= 1.5x)")
        from_torch = torch_ir(args.spec, out)
        lat = timed_irs(
            {"pipeline": out / "bundle" / "model.xml", "plain": out / "plain.xml", "from-pytorch": from_torch},
            args.iterations,
        )
        print(
            f"FP32 IR p50: pipeline {lat['pipeline']:.3f} ms, plain {lat['plain']:.3f} ms "
            f"(ratio {lat['pipeline'] / lat['plain']:.3f}; claim: no slower)"
        )
        print(
            f"OpenVINO IR converted from PyTorch: p50 {lat['from-pytorch']:.3f} ms "
            f"(ratio to the bundle's IR from ONNX {lat['from-pytorch'] / lat['pipeline']:.3f}); max|d| against "
            f"PyTorch: from ONNX {parity(out / 'bundle' / 'model.xml', out):.2e}, "
            f"from PyTorch {parity(from_torch, out):.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
