"""Self-distillation of the Q/DQ graph (precision/distill.py): the torch interpreter, the tuning, the choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgeffnet.backends import onnxruntime as ort_backend
from edgeffnet.core.preprocess import imagenet_recipe
from edgeffnet.core.verify import compare
from edgeffnet.graph.simplify import simplify
from edgeffnet.network.export import export_onnx
from edgeffnet.network.photos import calibration_photos, to_input, views
from edgeffnet.network.reference import create_model
from edgeffnet.precision import distill, qdq, ranges


def _graphs(spec: str, tmp: Path) -> tuple[onnx.ModelProto, onnx.ModelProto, np.ndarray]:
    """FP32 and Q/DQ graphs of `spec` (random weights, 96 px) and 24 calibration-photo views."""
    model = create_model(spec, seed=0)
    export_onnx(model, tmp / "m.onnx", 96, 1, False, 13)
    simplify(tmp / "m.onnx", tmp / "m.sim.onnx")
    fp32 = qdq.name_nodes(onnx.load(str(tmp / "m.sim.onnx")))
    recipe = imagenet_recipe(96)
    x = to_input(views(calibration_photos(), 24, recipe), recipe)
    stats = ranges.collect(fp32, qdq.candidates(fp32), x)
    return fp32, qdq.quantize(fp32, qdq.plan(fp32), ranges.thresholds(stats, "minmax"), stats["means"]), x


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return _graphs("lite0,res=96", tmp_path_factory.mktemp("distill"))


@pytest.mark.parametrize("spec", ["lite0,res=96", "b0,res=96"])  # Clip/ReLU6 graphs and SiLU/SE graphs
def test_interpreter_runs_the_qdq_graph_as_onnxruntime_does(spec, graphs, tmp_path):
    fp32, q, x = graphs if spec.startswith("lite0") else _graphs(spec, tmp_path)
    with torch.no_grad():
        ours_fp32 = distill.QDQGraph(fp32)(torch.from_numpy(x)).numpy()
        ours_q = distill.QDQGraph(q)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours_fp32, ort_backend.run_all(fp32, x), atol=1e-3, rtol=0)
    # Quantized: a rounding tie decided differently by a last-bit difference moves one value by a whole
    # step, so the two agree far more closely with each other than either does with FP32, not to the bit.
    ref, theirs = ort_backend.run_all(fp32, x), ort_backend.run_all(q, x, literal=True)
    between = compare(theirs, ours_q)
    assert 1 - between.cosine_mean < 0.5 * (1 - compare(ref, theirs).cosine_mean) + 1e-5
    assert between.top1_agreement >= 0.9


def test_distillation_lowers_its_loss_and_keeps_tensorrt_rules(graphs):
    fp32, q, x = graphs
    teacher = ort_backend.run_all(fp32, x)
    spread = teacher.std(axis=1, keepdims=True)

    def loss(model):
        return float((((ort_backend.run_all(model, x, literal=True) - teacher) / spread) ** 2).mean())

    tuned = distill.distill(q, teacher, x, steps=8, batch=6)
    assert tuned.learned["activation_scales"] > 0 and tuned.learned["biases"] > 0
    assert loss(tuned.model) < loss(q)
    onnx.checker.check_model(tuned.model, full_check=True)
    assert [n.op_type for n in tuned.model.graph.node] == [n.op_type for n in q.graph.node]
    before = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in tuned.model.graph.initializer}
    assert before.keys() == after.keys()
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert any(k.endswith("_scale") for k in changed)
    weight_scales = {n.input[1] for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in before}
    for n in tuned.model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale, zero = after[n.input[1]], after[n.input[2]]
        assert zero.dtype == np.int8 and not zero.any()  # int8, symmetric, zero point 0
        assert scale.dtype == np.float32 and np.all(scale > 0)
        if n.input[1] in weight_scales:  # a weight: one scale per output channel, as calibrated
            assert scale.shape == before[n.input[1]].shape and scale.ndim == 1
            np.testing.assert_array_equal(scale, before[n.input[1]])
        else:
            assert scale.ndim == 0
    weights = {n.input[1] for n in q.graph.node if n.op_type in ("Conv", "Gemm")}
    assert not {k for k in changed if k in weights}  # weights themselves never move


def test_tune_keeps_the_untuned_graph_when_held_out_views_say_so(graphs, monkeypatch):
    fp32, q, x = graphs

    def scored(worse):  # the held-out score, made worse for one of the two graphs
        return lambda m, xs, ref: {"views": len(xs), "top1_agreement": 1.0, "cosine_mean": 0.5 if worse(m) else 0.9}

    monkeypatch.setattr(distill, "score", scored(lambda m: m is not q))
    kept, record = distill.tune(q, fp32, x[:8], x[8:12], "test views", steps=1)
    assert (
        kept is q and record["kept"] == "untuned" and record["tuned"]["cosine_mean"] < record["untuned"]["cosine_mean"]
    )
    monkeypatch.setattr(distill, "score", scored(lambda m: m is q))
    kept, record = distill.tune(q, fp32, x[:8], x[8:12], "test views", steps=1)
    assert kept is not q and record["kept"] == "tuned" and record["steps"] == 1


def test_held_out_views_are_not_calibration_views():
    from edgeffnet.precision import calibration

    recipe = imagenet_recipe(64)
    cal = calibration.load(None, 40, recipe)
    train, held, what = cal.distillation_split(recipe, count=8)
    assert len(held) == 8 and "calibration photos" in what
    # Every fourth photo is held out: none of its views is distilled on (whole photos, not crops of them).
    photos = len(calibration_photos())
    held_photos = {i for i in range(photos) if i % calibration.HELD_OUT_EVERY == calibration.HELD_OUT_EVERY - 1}
    assert held_photos and len(train) < len(cal.data)
    assert np.array_equal(train, cal.data[[i % photos not in held_photos for i in range(len(cal.data))]])
    flat = cal.data.reshape(len(cal.data), -1)
    assert all(np.abs(flat - h.reshape(1, -1)).max(axis=1).min() > 1e-3 for h in held)
