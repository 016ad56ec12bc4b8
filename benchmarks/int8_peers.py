"""edgeffnet INT8 against its peers on the cpu target, same views, same run (issue 11, ask 6).

    python benchmarks/int8_peers.py                      # lite0 and lite1, pretrained
    python benchmarks/int8_peers.py --specs lite0 --views 100 --json peers.json

Four INT8 models of each pretrained spec, all run by OpenVINO's CPU plugin (the cpu target):
  edgeffnet     the bundle `edgeffnet build SPEC --weights pretrained -p int8` writes (its chosen route)
  nncf          nncf.quantize with its defaults
  nncf-ac       nncf.quantize_with_accuracy_control, max 1 point drop of top-1 agreement with FP32, bounded
                (AC_LIMITS): ranking on the 16 validation views it finds most damaged, one ranking worker,
                at most 6 groups of layers back in float
  ort-static    onnxruntime.quantization.quantize_static: QDQ, int8 symmetric activations and weights,
                per-channel weights, then read by OpenVINO like any Q/DQ graph
Every quantizer gets edgeffnet's default calibration set (the same views, the same preprocessing);
nncf-ac validates on the calibration set's tuning views with FP32's top-1 as labels. Fidelity is judged
on the verification views, which neither calibration nor validation sees: top-1 agreement with FP32
(ONNX Runtime on model.sim.onnx) over all views and over the views where FP32 is confident (top-1
probability >= precision/fidelity.CONFIDENT_PROB), and mean cosine of the logits. Latency is p50 of batch 1,
the FP32 IR and the four INT8 IRs timed in turns (measure/timing.py interleaved_p50).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import edgeffnet
from edgeffnet.backends import onnxruntime as ort_backend
from edgeffnet.core.errors import FidelityTooLow
from edgeffnet.core.preprocess import Preprocess
from edgeffnet.measure.timing import interleaved_p50
from edgeffnet.pipeline.options import BuildOptions
from edgeffnet.precision import calibration, fidelity


def compiled(model):
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 0})


def outputs(cm, x: np.ndarray) -> np.ndarray:
    req = cm.create_infer_request()
    return np.concatenate([np.array(req.infer({0: x[i : i + 1]})[0]) for i in range(len(x))])


# nncf's defaults rank every quantizer group on every validation view (compile + validate per group), re-rank
# after each step that made the drop worse, and revert layers until none is left: over 10 minutes per model
# on 2 cores. These bounds rank on the 16 views it finds most damaged and stop after 6 reverted groups: the
# whole script (edgeffnet's build and all four quantizers) then took 19 min for lite0, 24 for lite1, at 224 px
# on 2 cores shared with other work.
AC_LIMITS = {"ranking_subset_size": 16, "num_ranking_workers": 1, "max_num_iterations": 6}


def nncf_models(
    fp32_onnx: Path, cal: np.ndarray, val_x: np.ndarray, val_labels: np.ndarray, with_ac: bool = True
) -> dict:
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    model = ov.convert_model(io.BytesIO(fp32_onnx.read_bytes()))
    cal_set = nncf.Dataset([cal[i : i + 1] for i in range(len(cal))])
    val_set = nncf.Dataset(list(zip(val_x, val_labels)), lambda item: item[0][None])

    def agreement(cm, items) -> float:
        req = cm.create_infer_request()
        return float(np.mean([np.argmax(req.infer({0: x[None]})[0]) == y for x, y in items]))

    with contextlib.redirect_stdout(sys.stderr):
        out = {"nncf": nncf.quantize(model, cal_set, subset_size=len(cal))}
        if with_ac:  # ranks every quantizer by re-validation: the slowest part of this script by far
            out["nncf-ac"] = nncf.quantize_with_accuracy_control(
                model,
                cal_set,
                val_set,
                agreement,
                max_drop=0.01,
                drop_type=nncf.DropType.ABSOLUTE,
                subset_size=len(cal),
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(**AC_LIMITS),
            )
    return out


def ort_static(fp32_onnx: Path, cal: np.ndarray, out: Path):
    import openvino as ov
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": cal[i : i + 1]} for i in range(len(cal))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(fp32_onnx),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return ov.convert_model(io.BytesIO(out.read_bytes()))


def row(ref: np.ndarray, got: np.ndarray) -> dict:
    r = fidelity.report(ref, got, "")
    return {k: r[k] for k in ("top1_agreement", "confident_top1_agreement", "confident_views", "cosine_mean")}


def peers(spec: str, views: int, work: Path, with_ac: bool = True) -> dict:
    import openvino as ov

    # As a user builds it: gated, escalated if it misses; a build that still misses is kept to compare.
    try:
        bundle = edgeffnet.build(spec, weights="pretrained", precision="int8", target="cpu", output=work / spec)
        gate = "passed"
    except FidelityTooLow:
        bundle = edgeffnet.build(
            spec, weights="pretrained", precision="int8", target="cpu", output=work / f"{spec}-kept", allow_drop=True
        )
        gate = "missed"
    recipe = Preprocess.from_dict(bundle.manifest.preprocess)
    sim = bundle.path / "model.sim.onnx"
    cal = calibration.load(None, BuildOptions().calib_size, recipe)
    tuning = cal.tuning(recipe)
    x = fidelity.views(views, recipe)
    ref = ort_backend.run_all(sim, x)
    models = {
        "fp32": ov.convert_model(io.BytesIO(sim.read_bytes())),
        "edgeffnet": ov.Core().read_model(str(bundle.path / "model.xml")),
    }
    models.update(nncf_models(sim, cal.data, tuning, ort_backend.run_all(sim, tuning).argmax(axis=1), with_ac))
    models["ort-static"] = ort_static(sim, cal.data, work / f"{spec}.ort-static.onnx")
    cms = {k: compiled(m) for k, m in models.items()}
    rows = {k: row(ref, outputs(cm, x)) for k, cm in cms.items() if k != "fp32"}
    reqs = {k: cm.create_infer_request() for k, cm in cms.items()}
    one = {0: x[:1]}
    lat = interleaved_p50({k: (lambda r=r: r.infer(one)) for k, r in reqs.items()})
    for k in rows:
        rows[k] |= {"latency_p50_ms": lat[k], "vs_fp32": lat[k] / lat["fp32"]}
    compile_record = bundle.manifest.stages["compile"]
    escalation = (bundle.manifest.fidelity or {}).get("escalation")
    return {
        "spec": spec,
        "gate": gate,
        "escalation": escalation,
        "views": len(x),
        "calibration_views": len(cal.data),
        "validation_views": len(tuning),
        "fp32_latency_p50_ms": lat["fp32"],
        "edgeffnet_route": compile_record.get("int8_route"),
        "edgeffnet_kept_float": [k["node"] for k in bundle.manifest.stages["precision"].get("kept_float", [])],
        "rows": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", default="lite0,lite1")
    ap.add_argument("--views", type=int, default=200, help="verification views for fidelity")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument(
        "--no-accuracy-control",
        action="store_true",
        help="leave out nncf-ac (it re-validates once per quantizer it ranks: minutes per model)",
    )
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="int8-peers-") as tmp:
        for spec in args.specs.split(","):
            r = peers(spec, args.views, Path(tmp), not args.no_accuracy_control)
            results.append(r)
            print(
                f"\n{spec}: {r['views']} verification views, {r['calibration_views']} calibration views, "
                f"FP32 p50 {r['fp32_latency_p50_ms']:.2f} ms (OpenVINO CPU); edgeffnet route {r['edgeffnet_route']}, "
                f"gate {r['gate']}, escalated layers "
                f"{len(r['escalation']['kept_float']) if r['escalation'] else 0}"
            )
            print(f"{'quantizer':12s} {'top-1':>7s} {'confident':>15s} {'cosine':>8s} {'p50 ms':>7s} {'/FP32':>6s}")
            for k, v in r["rows"].items():
                sure = f"{v['confident_top1_agreement']:.1%} of {v['confident_views']}"
                print(
                    f"{k:12s} {v['top1_agreement']:7.1%} {sure:>15s} {v['cosine_mean']:8.4f} "
                    f"{v['latency_p50_ms']:7.2f} {v['vs_fp32']:6.2f}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
