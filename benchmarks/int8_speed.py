"""INT8 on the cpu target: how much faster than FP32, and against NNCF's defaults (issue 4).

For each spec: build (through the cache) the FP32 and the INT8 bundle, quantize the same FP32 IR with
NNCF's defaults on the same calibration data, then time the three IRs in edgeffnet's one timing loop
(edgeffnet.measure.timing.interleaved_p50: in turns, synchronous, batch 1, p50 over 300 rounds; f32
inference precision, which INT8 layers ignore).
Claims: INT8 <= 0.55x FP32 for Lite0 and B0; B0 INT8 no slower than NNCF's defaults.

    python benchmarks/int8_speed.py                      # lite0 (pretrained) and b0 (random init)
    python benchmarks/int8_speed.py --iterations 500
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov

import edgeffnet
from edgeffnet.backends.openvino.runner import Runner
from edgeffnet.core.preprocess import Preprocess
from edgeffnet.measure.timing import interleaved_p50
from edgeffnet.pipeline.options import BuildOptions
from edgeffnet.precision import calibration

SPECS = [("lite0", "pretrained"), ("b0", None)]


def nncf_defaults(fp32_graph: Path, data: np.ndarray, out: Path) -> Path:
    import nncf

    model = ov.convert_model(io.BytesIO(fp32_graph.read_bytes()))  # a path string is split at commas
    q = nncf.quantize(model, nncf.Dataset([data[i : i + 1] for i in range(len(data))]))
    ov.save_model(q, str(out), compress_to_fp16=False)
    return out


def timed_irs(xmls: dict[str, Path], iterations: int) -> dict[str, float]:
    """p50 ms of each IR on the CPU at f32, LATENCY hint, batch as compiled, in one interleaved loop."""
    runners = {k: Runner(xml, "CPU", "f32") for k, xml in xmls.items()}
    x = np.random.default_rng(0).standard_normal(next(iter(runners.values())).input_shape, dtype=np.float32)
    return interleaved_p50({k: r.bound(x) for k, r in runners.items()}, warmup=30, max_runs=iterations)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--out", default=None, help="Keep the bundles here (default: a temporary directory).")
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="int8-speed-"))
    ok = True
    for spec, weights in SPECS:
        bundles = {}
        for precision in ("fp32", "int8"):
            bundles[precision] = edgeffnet.build(
                spec, precision=precision, weights=weights, output=root / f"{spec}-{precision}", allow_drop=True
            )
        manifest = bundles["int8"].manifest.to_dict()
        cal = calibration.load(None, BuildOptions().calib_size, Preprocess.from_dict(manifest["preprocess"]))
        nncf_xml = nncf_defaults(bundles["fp32"].path / "model.sim.onnx", cal.data, root / f"{spec}-nncf.xml")
        p50 = timed_irs(
            {
                "fp32": bundles["fp32"].path / "model.xml",
                "int8": bundles["int8"].path / "model.xml",
                "nncf-defaults": nncf_xml,
            },
            args.iterations,
        )
        route = manifest["stages"]["compile"].get("int8_route")
        ratio = p50["int8"] / p50["fp32"]
        vs_nncf = p50["int8"] / p50["nncf-defaults"]
        fid = (manifest.get("fidelity") or {}).get("rows", [])
        print(
            f"{spec}: p50 fp32 {p50['fp32']:.3f} ms, int8 {p50['int8']:.3f} ms (route {route}), "
            f"NNCF defaults {p50['nncf-defaults']:.3f} ms"
        )
        print(f"  int8/fp32 = {ratio:.3f} (claim <= 0.55); int8/NNCF-defaults = {vs_nncf:.3f} (claim <= 1.0 for b0)")
        for r in fid:
            print(
                f"  fidelity {r['artifact']}: top-1 {r['top1_agreement']:.1%}, top-5 {r['top5_overlap']:.1%}, "
                f"cosine {r['cosine_mean']:.5f} over {r['views']} views"
            )
        ok &= ratio <= 0.55 and (spec != "b0" or vs_nncf <= 1.0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
