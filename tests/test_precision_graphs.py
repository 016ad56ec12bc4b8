"""Precision (issue 4): range methods, the FP16 graph, the Q/DQ INT8 graph, the fidelity gate, and the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from conftest import run_cli_process
from onnx import TensorProto, helper, numpy_helper

from edgeffnet.backends import onnxruntime as ort_backend
from edgeffnet.backends.openvino import encoding as ov_int8
from edgeffnet.core.errors import UserError
from edgeffnet.core.preprocess import Preprocess
from edgeffnet.core.verify import compare
from edgeffnet.pipeline import escalate
from edgeffnet.precision import calibration, fidelity, fp16, int8, qdq, ranges

SPEC = "lite0,res=96"
# The INT8 build held to 100% agreement escalates first (a ranking that compiles every layer's variant,
# then five more precision+compile rounds).
BUILD_TIMEOUT = 1800


# -- shared artifacts: one cache for the module, the real graph from a real build ---------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEFFNET_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def fp16_build(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "bundle"
    r = run_cli_process(
        "build",
        SPEC,
        "--weights",
        "pretrained",
        "--precision",
        "fp16",
        "--fidelity-views",
        "24",
        "-o",
        str(out),
        cache=cache_dir,
        timeout=BUILD_TIMEOUT,
    )
    assert r.returncode == 0, r.stderr
    return out, json.loads((out / "manifest.json").read_text()), r


@pytest.fixture(scope="module")
def fp32_graph(fp16_build) -> onnx.ModelProto:
    """The exported and simplified FP32 graph of pretrained Lite0 at 96 px (opset 13)."""
    return onnx.load(str(fp16_build[0] / "model.sim.onnx"))


@pytest.fixture(scope="module")
def recipe(fp16_build) -> Preprocess:
    return Preprocess.from_dict(fp16_build[1]["preprocess"])


@pytest.fixture(scope="module")
def photo_views(fp32_graph, recipe):
    """Verification-photo views and the FP32 graph's logits for them."""
    x = fidelity.views(16, recipe)
    return x, ort_backend.run_all(fp32_graph, x)


# -- range methods on synthetic histograms ------------------------------------------------------------------


def _stats(samples: np.ndarray) -> dict:
    amax = float(np.abs(samples).max())
    return {
        "tensors": ["t"],
        "absmax": np.array([amax]),
        "hist": np.array([ranges._histogram(samples, amax)]),
        "means": {},
    }


def _thresholds(samples: np.ndarray) -> dict[str, float]:
    s = _stats(samples)
    return {m: ranges.thresholds(s, m)["t"] for m in ranges.METHODS}


RNG = np.random.default_rng(0)
GAUSS_WITH_OUTLIERS = np.concatenate([RNG.standard_normal(400_000), [40.0, -35.0]])
UNIFORM = RNG.uniform(-3.0, 3.0, 400_000)
RELU_WITH_OUTLIER = np.concatenate([np.maximum(RNG.standard_normal(400_000), 0), [30.0]])


@pytest.mark.parametrize("samples", [GAUSS_WITH_OUTLIERS, UNIFORM, RELU_WITH_OUTLIER, RNG.laplace(0, 1, 200_000)])
def test_minmax_is_absmax_and_percentile_below_it(samples):
    t = _thresholds(samples)
    amax = np.abs(samples).max()
    assert t["minmax"] == pytest.approx(amax)
    assert 0 < t["percentile"] <= amax
    assert 0 < t["entropy"] <= amax
    # 99.99% of |x| lies below the percentile threshold (up to one histogram bin).
    assert t["percentile"] >= np.percentile(np.abs(samples), ranges.PERCENTILE) - amax / ranges.BINS


def test_entropy_clips_a_long_thin_tail():
    t = _thresholds(GAUSS_WITH_OUTLIERS)
    assert t["entropy"] < 0.25 * t["minmax"]  # two outliers at 40 do not set the range...
    assert t["entropy"] > np.percentile(np.abs(GAUSS_WITH_OUTLIERS), 99.9)  # ...but the body is kept
    t = _thresholds(RELU_WITH_OUTLIER)  # ReLU's spike at zero must not drag the threshold either way
    assert np.percentile(RELU_WITH_OUTLIER, 99.9) < t["entropy"] < 0.25 * t["minmax"]


def test_entropy_keeps_a_uniform_distribution():
    t = _thresholds(UNIFORM)
    assert t["entropy"] >= 0.95 * t["minmax"]
    assert t["percentile"] >= 0.99 * t["minmax"]


def test_all_zero_tensor_gets_a_tiny_positive_range():
    s = _stats(np.zeros(1000))
    for m in ranges.METHODS:
        assert 0 < ranges.thresholds(s, m)["t"] <= 1e-6


# -- the FP16 graph ----------------------------------------------------------------------------------------


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _attr(node: onnx.NodeProto, name: str):
    a = next((a for a in node.attribute if a.name == name), None)
    return None if a is None else helper.get_attribute_value(a)


@pytest.fixture(scope="module")
def fp16_graph(fp32_graph) -> onnx.ModelProto:
    return fp16.to_fp16(fp32_graph)


def test_fp16_weights_are_half_and_io_stays_float(fp32_graph, fp16_graph):
    g = fp16_graph.graph
    n_float = sum(t.data_type == TensorProto.FLOAT for t in fp32_graph.graph.initializer)
    assert n_float > 50
    assert fp16.float_types(fp16_graph) == {"FLOAT16": n_float}
    for n in g.node:
        if n.op_type == "Constant" and _attr(n, "value").data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
            assert _attr(n, "value").data_type == TensorProto.FLOAT16
    assert [(v.name, v.type.tensor_type.elem_type) for v in g.input] == [("input", TensorProto.FLOAT)]
    assert [(v.name, v.type.tensor_type.elem_type) for v in g.output] == [("logits", TensorProto.FLOAT)]
    # Activations inside are float16: shape inference found no float32 tensor besides the edges.
    inner = {v.name: v.type.tensor_type.elem_type for v in g.value_info}
    assert inner and TensorProto.FLOAT not in inner.values()
    assert sum(t == TensorProto.FLOAT16 for t in inner.values()) > 50
    onnx.checker.check_model(fp16_graph, full_check=True)


def test_fp16_casts_sit_at_the_edges(fp16_graph):
    consumers, producers = _consumers(fp16_graph), _producers(fp16_graph)
    readers = consumers["input"]
    assert readers and all(n.op_type == "Cast" and _attr(n, "to") == TensorProto.FLOAT16 for n in readers)
    last = producers["logits"]
    assert last.op_type == "Cast" and _attr(last, "to") == TensorProto.FLOAT
    casts = [n for n in fp16_graph.graph.node if n.op_type == "Cast"]
    assert len(casts) == 2  # nothing kept in FP32: only the two edges


def test_fp16_follows_fp32_on_photos(fp16_graph, photo_views):
    x, ref = photo_views
    p = compare(ref, ort_backend.run_all(fp16_graph, x))
    assert p.cosine_min >= 0.999
    assert p.top1_agreement == 1.0


@pytest.mark.parametrize("kept", ["Gemm", "GlobalAveragePool", "Add"])
def test_fp16_keep_fp32_keeps_the_listed_ops_in_float(fp32_graph, kept, photo_views):
    model = fp16.to_fp16(fp32_graph, frozenset([kept]))
    onnx.checker.check_model(model, full_check=True)
    inits = {t.name: t for t in model.graph.initializer}
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input)}
    producers = _producers(model)
    nodes = [n for n in model.graph.node if n.op_type == kept]
    assert nodes
    for n in nodes:
        for i in n.input:
            if i in inits:
                assert inits[i].data_type == TensorProto.FLOAT, (kept, i)
            else:
                assert types.get(i) == TensorProto.FLOAT, (kept, i)
                assert producers[i].op_type == "Cast" or i == "input"
        for o in n.output:
            assert types.get(o) == TensorProto.FLOAT, (kept, o)
    # Everything not kept is still half.
    others = {i for n in model.graph.node if n.op_type not in (kept, "Cast") for i in n.input if i in inits}
    assert all(
        inits[i].data_type != TensorProto.FLOAT
        for i in others
        if inits[i].data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
    )
    x, ref = photo_views
    p = compare(ref, ort_backend.run_all(model, x))
    assert p.cosine_min >= 0.999 and p.top1_agreement == 1.0


# -- the Q/DQ graph ----------------------------------------------------------------------------------------


def check_qdq(model: onnx.ModelProto, quantized: set[str] | None = None, excluded: set[str] = frozenset()) -> dict:
    """Assert the explicit-quantization rules on `model`; return counts. `quantized`: the Conv/Gemm nodes
    expected to read Q/DQ (None: every Conv/Gemm not in `excluded`)."""
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers, producers = _consumers(model), _producers(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    qs = [n for n in g.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in g.node if n.op_type == "DequantizeLinear"]
    assert qs and len(qs) == len(dqs)
    weight_q = activation_q = 0
    for q in qs:
        # Paired: the Q's only reader is a DQ with the same scale and zero point.
        readers = consumers[q.output[0]]
        assert len(readers) == 1 and readers[0].op_type == "DequantizeLinear", q.name
        dq = readers[0]
        assert list(dq.input[1:]) == list(q.input[1:]) and _attr(dq, "axis") == _attr(q, "axis")
        assert len(q.input) == 3, f"{q.name}: zero point must be explicit (int8), not the uint8 default"
        zp, scale = inits[q.input[2]], inits[q.input[1]]
        assert zp.dtype == np.int8 and not zp.any(), q.name
        assert scale.dtype == np.float32 and (scale > 0).all() and zp.shape == scale.shape
        if q.input[0] in inits:  # a weight: per output channel
            weight_q += 1
            w = inits[q.input[0]]
            users = consumers[dq.output[0]]
            assert users and all(u.op_type in ("Conv", "Gemm") and u.input[1] == dq.output[0] for u in users)
            for u in users:
                axis = 0 if u.op_type == "Conv" or _attr(u, "transB") else 1
                assert _attr(q, "axis") == axis, (u.name, u.op_type)
                assert scale.shape == (w.shape[axis],)
                amax = np.abs(w).max(axis=tuple(a for a in range(w.ndim) if a != axis))
                live = amax > 0  # BatchNorm folding leaves a few all-zero channels: any positive scale does
                np.testing.assert_allclose(scale[live], amax[live] / 127, rtol=1e-6)
        else:  # an activation: one scalar scale
            activation_q += 1
            assert scale.shape == () and _attr(q, "axis") is None, q.name
    for dq in dqs:
        assert producers[dq.input[0]].op_type == "QuantizeLinear"
    weighted = [n for n in g.node if n.op_type in ("Conv", "Gemm")]
    for n in weighted:
        reads_dq = [i in producers and producers[i].op_type == "DequantizeLinear" for i in n.input[:2]]
        if n.name in excluded or (quantized is not None and n.name not in quantized):
            assert reads_dq == [False, False], f"excluded {n.name} must read float"
            assert n.input[1] in inits and inits[n.input[1]].dtype == np.float32
        else:
            assert reads_dq == [True, True], f"quantized {n.name} must read DequantizeLinear on inputs 0 and 1"
    onnx.checker.check_model(model)
    return {"weights": weight_q, "activations": activation_q, "weighted": len(weighted)}


def _tiny(trans_b: int) -> onnx.ModelProto:
    """Conv -> Relu -> depthwise Conv -> residual Add -> pool -> Gemm (transB as given) -> Gemm (transB=1)."""
    rng = np.random.default_rng(trans_b)
    init = [
        numpy_helper.from_array(a.astype(np.float32), name)
        for name, a in {
            "w1": rng.standard_normal((4, 3, 3, 3)),
            "b1": rng.standard_normal(4),
            "w2": rng.standard_normal((4, 1, 3, 3)) * np.array([1, 10, 0.1, 3]).reshape(4, 1, 1, 1),
            "b2": rng.standard_normal(4),
            "fc1": rng.standard_normal((4, 6) if not trans_b else (6, 4)),
            "fc1_b": rng.standard_normal(6),
            "fc2": rng.standard_normal((5, 6)),
        }.items()
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=4),
        helper.make_node("Add", ["r1", "c2"], ["s"]),
        helper.make_node("GlobalAveragePool", ["s"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc1", "fc1_b"], ["h"], transB=trans_b),
        helper.make_node("Gemm", ["h", "fc2"], ["logits"], transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 5])],
        init,
    )
    return qdq.name_nodes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))


@pytest.mark.parametrize("trans_b", [0, 1])
def test_qdq_on_a_small_graph_gemm_axis_follows_trans_b(trans_b, cache_dir):
    model = _tiny(trans_b)
    x = np.random.default_rng(5).uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32)
    stats, _ = int8.statistics(model, x, calibration._digest(x))
    p = qdq.plan(model, eltwise=False)
    assert set(p.nodes) == {"Conv_0", "Conv_2", "Gemm_6", "Gemm_7"} and p.others == ("GlobalAveragePool_4",)
    assert set(p.activations) == {"input", "r1", "f", "h", "s"}
    q = qdq.quantize(model, p, ranges.thresholds(stats, "minmax"), stats["means"])
    counts = check_qdq(q)
    assert counts == {"weights": 4, "activations": 5, "weighted": 4}
    gemm_q = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "fc1")
    assert _attr(gemm_q, "axis") == (0 if trans_b else 1)
    ref = ort_backend.run_all(model, x)
    got = ort_backend.run_all(q, x)
    assert compare(ref, got).cosine_min > 0.99
    # By default residual Adds are quantized too, on both inputs.
    p_add = qdq.plan(model)
    assert "Add_3" in p_add.others and {"r1", "c2"} <= set(p_add.activations)
    add = next(
        n for n in qdq.quantize(model, p_add, ranges.thresholds(stats, "minmax")).graph.node if n.op_type == "Add"
    )
    assert list(add.input) == ["r1_dq", "c2_dq"]


def test_qdq_shares_one_pair_per_tensor(cache_dir):
    model = _tiny(1)
    x = np.random.default_rng(6).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    stats, _ = int8.statistics(model, x, calibration._digest(x))
    q = qdq.quantize(model, qdq.plan(model), ranges.thresholds(stats, "minmax"))
    # r1 feeds the depthwise Conv and the Add: both read the same DequantizeLinear.
    qs = [n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r1"]
    assert len(qs) == 1
    assert {n.op_type for n in _consumers(q)["r1_dq"]} == {"Conv", "Add"}


def _exposed(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    return m


def test_openvino_encoding_makes_nonnegative_activations_uint8(cache_dir):
    model = _tiny(1)
    x = np.random.default_rng(7).uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32)
    stats, _ = int8.statistics(model, x, calibration._digest(x))
    th = ranges.thresholds(stats, "minmax")
    q = qdq.quantize(model, qdq.plan(model), th)
    positive = ov_int8.nonnegative(q)
    assert {"r1", "r1_q", "r1_dq"} <= positive and not {"input", "c2", "s", "f", "h"} & positive

    u, changed = ov_int8.unsigned_where_nonnegative(q)
    assert changed == ["r1"]
    inits = {t.name: numpy_helper.to_array(t) for t in u.graph.initializer}
    for n in u.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            unsigned = n.input[0] in ("r1", "r1_q")
            assert inits[n.input[2]].dtype == (np.uint8 if unsigned else np.int8) and not inits[n.input[2]].any()
    assert np.isclose(inits["r1_scale"], th["r1"] / 255)
    assert numpy_helper.to_array(next(t for t in q.graph.initializer if t.name == "r1_scale")) == np.float32(
        th["r1"] / 127
    )  # the input graph is untouched
    # The uint8 pair rounds r1 to steps of threshold/255: half the int8 pair's error bound.
    for graph, levels in ((q, 127), (u, 255)):
        r1, r1_dq = ort_backend.Runner(_exposed(graph, ["r1", "r1_dq"]).SerializeToString()).session.run(
            ["r1", "r1_dq"], {"input": x[:2]}
        )
        assert np.abs(r1_dq - r1).max() <= th["r1"] / levels / 2 * 1.001
    ref = ort_backend.run_all(model, x)
    finer, coarser = compare(ref, ort_backend.run_all(u, x)), compare(ref, ort_backend.run_all(q, x))
    assert finer.cosine_mean >= coarser.cosine_mean > 0.98  # seeded: finer steps on r1, closer logits


@pytest.fixture(scope="module")
def calibrated(fp32_graph, recipe, cache_dir):
    model = qdq.name_nodes(fp32_graph)
    cal = calibration.load(None, 16, recipe)
    stats, _ = int8.statistics(model, cal.data, cal.sha256)
    return model, stats


def test_qdq_of_the_real_graph(calibrated, photo_views):
    model, stats = calibrated
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    gemm = next(n.name for n in model.graph.node if n.op_type == "Gemm")
    excluded = {convs[0], convs[5], gemm}  # the stem, a middle conv, the classifier
    p = qdq.plan(model, frozenset(excluded))
    assert not excluded & set(p.nodes) and len(p.nodes) == len(convs) - 2
    q = qdq.quantize(model, p, ranges.thresholds(stats, "percentile"), stats["means"])
    counts = check_qdq(q, set(p.nodes), excluded)
    assert counts["weights"] == len(p.nodes) and counts["activations"] == len(p.activations)
    x, ref = photo_views
    # literal: ORT's extended level turns DequantizeLinear->Conv into its own per-tensor int8 weights, which
    # is ORT's arithmetic, not the graph's (cosine 0.67 here with it, against > 0.98 read as written).
    parity = compare(ref, ort_backend.run_all(q, x, literal=True))
    assert parity.cosine_mean > 0.98 and parity.top1_agreement >= 0.75


def test_openvino_encoding_of_the_real_graph_covers_every_relu6_output(calibrated):
    model, stats = calibrated
    clips = {n.output[0] for n in model.graph.node if n.op_type == "Clip"}
    positive = ov_int8.nonnegative(model)
    assert clips <= positive and not {n.output[0] for n in model.graph.node if n.op_type in ("Conv", "Add")} & positive
    p = qdq.plan(model)
    q = qdq.quantize(model, p, ranges.thresholds(stats, "minmax"), stats["means"])
    _, changed = ov_int8.unsigned_where_nonnegative(q)
    assert set(changed) == {t for t in p.activations if t in positive} and clips & set(changed)


def test_bias_correction_changes_quantized_conv_biases_only(calibrated):
    model, stats = calibrated
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    excluded = {convs[0].name, convs[3].name}
    p = qdq.plan(model, frozenset(excluded))
    th = ranges.thresholds(stats, "minmax")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    original = {n.name: inits[n.input[2]] for n in convs}

    def biases(q):
        qi = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
        return {n.name: qi[n.input[2]] for n in q.graph.node if n.op_type == "Conv"}

    corrected, plain = biases(qdq.quantize(model, p, th, stats["means"])), biases(qdq.quantize(model, p, th))
    for name, b in original.items():
        np.testing.assert_array_equal(plain[name], b)  # no statistics, no correction
        if name in excluded:
            np.testing.assert_array_equal(corrected[name], b)
        else:
            assert corrected[name].shape == b.shape
            assert np.abs(corrected[name] - b).max() < 0.05 * max(np.abs(b).max(), 1e-3) + 1e-2
    changed = [n for n in p.nodes if n in original and not np.array_equal(corrected[n], original[n])]
    assert len(changed) >= 0.9 * len([n for n in p.nodes if n in original])


# -- the fidelity gate -------------------------------------------------------------------------------------


def _row(agreement: float, artifact: str = "Q/DQ ONNX (onnxruntime)") -> dict:
    return {
        "artifact": artifact,
        "views": 200,
        "top1_agreement": agreement,
        "top5_overlap": 0.96,
        "cosine_mean": 0.9971,
        "cosine_min": 0.95,
        "max_abs": 1.5,
        "confident_prob": 0.3,
        "confident_views": 150,
        "confident_top1_agreement": agreement,
    }


def test_gate_fails_trained_weights_below_the_threshold():
    rows = [_row(0.99), _row(0.965, "openvino CPU artifact")]
    with pytest.raises(fidelity.FidelityTooLow) as e:
        fidelity.gate(rows, trained=True, min_agreement=0.98, allow_drop=False)
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, UserError) and e.value.exit_code == 1
    for part in ("96.5%", "200", "98%", "openvino CPU artifact", "--allow-drop"):
        assert part in msg
    with pytest.raises(fidelity.FidelityTooLow) as e:
        fidelity.gate([_row(0.99)], trained=True, min_agreement=0.995, allow_drop=False)
    assert "99.5%" in str(e.value)


def test_gate_passes_with_allow_drop_and_above_the_threshold():
    v = fidelity.gate([_row(0.9)], trained=True, min_agreement=0.98, allow_drop=True)
    assert v["gated"] and not v["passed"] and v["top1_agreement"] == 0.9
    v = fidelity.gate([_row(0.98), _row(1.0)], trained=True, min_agreement=0.98, allow_drop=False)
    assert v["gated"] and v["passed"] and v["judged_agreement"] == 0.98


def test_gate_does_not_judge_random_init():
    v = fidelity.gate([_row(0.0)], trained=False, min_agreement=0.98, allow_drop=False)
    assert v["gated"] is False and "random" in v["reason"]


# -- end to end through the CLI ----------------------------------------------------------------------------


@pytest.mark.slow
def test_fp16_build_agrees_fully(fp16_build):
    out, manifest, run = fp16_build
    rows = manifest["fidelity"]["rows"]
    assert len(rows) == 2 and all(r["views"] == 24 for r in rows)
    assert all(r["top1_agreement"] == 1.0 and r["cosine_min"] >= 0.999 for r in rows)
    pre = manifest["stages"]["precision"]
    assert pre["graph"] == "model.fp16.onnx" and (out / "model.fp16.onnx").is_file()
    assert pre["initializers"] == {"FLOAT16": fp16.float_types(onnx.load(str(out / "model.sim.onnx")))["FLOAT"]}
    assert "fidelity against FP32" in run.stderr


@pytest.fixture(scope="module")
def int8_runs(fp16_build, cache_dir, tmp_path_factory):
    """The same INT8 build twice: held to 100% agreement (fails), then with --allow-drop and --distill (a bundle)."""
    base = tmp_path_factory.mktemp("int8")
    args = [
        "build",
        SPEC,
        "--weights",
        "pretrained",
        "--precision",
        "int8",
        "--calib-size",
        "32",
        "--fidelity-views",
        "96",
        "--min-agreement",
        "1.0",
    ]
    failed = run_cli_process(*args, "-o", str(base / "strict"), cache=cache_dir, timeout=BUILD_TIMEOUT)
    kept = run_cli_process(
        *args, "--allow-drop", "--distill", "-o", str(base / "kept"), cache=cache_dir, timeout=BUILD_TIMEOUT
    )
    return base, failed, kept


@pytest.mark.slow
def test_int8_build_below_threshold_fails_with_one_line_and_no_bundle(int8_runs):
    base, failed, _ = int8_runs
    assert failed.returncode == 1, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("edgeffnet: error: INT8 of ") and "misses the gate" in last
    assert "over all 96 views" in last and "needs 100%" in last and "--allow-drop" in last
    # A trained model is escalated before it fails: its most damaging layers back in float, re-measured.
    own = ov_int8.host_route(ov_int8.has_vnni())  # the route this CPU's layers are ranked on
    assert "escalation:" in failed.stderr and f"layers ranked on OpenVINO CPU, route {own} in" in failed.stderr
    assert re.search(r"after keeping up to \d+ of the most damaging layers in float; the limit is 15\)", last), last
    # The table comes first, so the user sees every row the gate judged, not only the worst.
    table = failed.stderr[failed.stderr.index("fidelity against FP32") :]
    assert "Q/DQ ONNX (onnxruntime)" in table and "openvino CPU artifact" in table
    assert not (base / "strict").exists()
    assert not [p for p in base.iterdir() if p.name.startswith(".strict")]  # no half-written staging dir
    assert failed.stdout == ""  # NNCF's progress bars (the OpenVINO route choice) go to stderr, never stdout


@pytest.mark.slow
def test_int8_build_with_allow_drop_records_everything(int8_runs):
    base, failed, kept = int8_runs
    assert kept.returncode == 0, kept.stderr
    out = base / "kept"
    m = json.loads((out / "manifest.json").read_text())
    fid = m["fidelity"]
    assert [r["artifact"] for r in fid["rows"]] == ["Q/DQ ONNX (onnxruntime)", "openvino CPU artifact"]
    assert all(r["views"] == 96 for r in fid["rows"])
    assert fid["gated"] and not fid["passed"] and fid["min_agreement"] == 1.0
    assert fid["judged_agreement"] < 1.0 and fid["worst"] in [r["artifact"] for r in fid["rows"]]
    assert all(r["confident_views"] <= r["views"] for r in fid["rows"])

    pre = m["stages"]["precision"]
    assert pre["method"] in ranges.METHODS and set(pre["method_scores"]) == set(ranges.METHODS)
    nodes = {n.name for n in onnx.load(str(out / "model.sim.onnx")).graph.node}
    assert isinstance(pre["kept_float"], list) and len(pre["kept_float"]) <= int8.MAX_FLOAT_LAYERS
    assert all(k["node"] in nodes for k in pre["kept_float"])
    cal = pre["calibration"]
    assert cal["source"].startswith("default") and cal["views"] == 32 and cal["requested"] == 32
    assert len(cal["sha256"]) == 64 and {"skipped", "converted", "warnings"} <= set(cal)

    graph = onnx.load(str(out / pre["graph"]))
    kept_names = {k["node"] for k in pre["kept_float"]}
    check_qdq(graph, excluded=kept_names)  # a self-distilled graph keeps every rule
    sd = pre["self_distillation"]  # both graphs scored on held-out views, the better one kept
    assert {"untuned", "tuned", "held_out"} <= set(sd) and sd["tuned"]["views"] == sd["untuned"]["views"] > 0
    better = sd["tuned"]["cosine_mean"] > sd["untuned"]["cosine_mean"]
    assert sd["kept"] == ("tuned" if better else "untuned")

    comp = m["stages"]["compile"]
    assert comp["int8_route"] in comp["int8_routes"]
    own = "qdq-onnx" if ov_int8.has_vnni() else "qdq-onnx-w7"  # the Q/DQ encoding this CPU runs well
    expected = {"qdq-onnx", own, "nncf"} | ({f"{own}-all-int8"} if pre["kept_float"] else set())
    assert set(comp["int8_routes"]) == expected and comp["cpu_vnni"] == ov_int8.has_vnni()
    assert comp["uint8_activations"] > 0
    for route in comp["int8_routes"].values():
        assert route["latency_p50_ms"] > 0 and 0.9 < route["tuning_cosine_mean"] <= 1.0 + 1e-6


def stricter_gate(rows: list[dict]) -> float:
    """A gate half a view above the worst row's judged agreement: the build that reached `rows` misses it on
    any CPU (the figures depend on the ISA: with VNNI OpenVINO takes the 8-bit route, which passed a fixed
    0.95 gate first time), and one more view agreeing on that row passes it."""

    def judged(row: dict) -> tuple[float, int]:
        agreement, on = fidelity.judged_agreement(row)
        return agreement, row["views"] if on.startswith("all ") else row["confident_views"]

    agreement, views = min(judged(r) for r in rows)
    assert agreement < 1.0, f"every judged view agrees ({rows}): no gate above that can be missed"
    return agreement + 0.5 / views


def test_the_stricter_gate_is_missed_by_the_rows_it_was_computed_from():
    rows = [
        {
            "artifact": a,
            "views": 200,
            "top1_agreement": t,
            "cosine_mean": 0.999,
            "confident_views": 150,
            "confident_prob": fidelity.CONFIDENT_PROB,
            "confident_top1_agreement": c,
        }
        for a, t, c in (("ort", 0.96, 0.98), ("ov", 0.955, 144 / 150))
    ]
    gate = stricter_gate(rows)
    assert 144 / 150 < gate < 145 / 150
    assert not fidelity.passes(rows[1], gate) and fidelity.passes(rows[0], gate)


@pytest.fixture(scope="module")
def escalated(fp16_build, cache_dir, tmp_path_factory):
    """The INT8 build measured once without a gate, then held to a gate just above what it reached."""
    base = tmp_path_factory.mktemp("escalated")
    args = ["build", SPEC, "--weights", "pretrained", "--precision", "int8", "--calib-size", "32"]
    first = run_cli_process(
        *args,
        "--min-agreement",
        "1.0",
        "--allow-drop",
        "-o",
        str(base / "first"),
        cache=cache_dir,
        timeout=BUILD_TIMEOUT,
    )
    assert first.returncode == 0, first.stderr
    rows = json.loads((base / "first" / "manifest.json").read_text())["fidelity"]["rows"]
    gate = stricter_gate(rows)
    # The stages are the first build's, from the cache (the gate is not part of any stage's key).
    r = run_cli_process(
        *args, "--min-agreement", repr(gate), "-o", str(base / "bundle"), cache=cache_dir, timeout=BUILD_TIMEOUT
    )
    return base / "bundle", r, gate


@pytest.mark.slow
def test_int8_build_that_misses_is_escalated_until_it_passes_and_records_the_cost(escalated):
    """The miss is forced on any CPU; whether keeping up to 15 layers in float then meets a gate one view
    above the first build depends on the numerics, so both ends are checked. Measured on a 2-core EPYC
    with VNNI (route qdq-onnx): the OpenVINO row rose from 97.0% to 98.5% of 197 confident views while
    ONNX Runtime's row of the same re-quantized graph moved between 96.4% and 97.0%, so the gate (which
    every row must meet) stayed missed through all five steps. The stubbed escalation test
    (tests/test_int8_gate.py) checks the passing end with fixed figures."""
    out, r, gate = escalated
    own = ov_int8.host_route(ov_int8.has_vnni())  # the route this CPU's layers are ranked on
    assert "escalation: INT8 of " in r.stderr and "misses the gate" in r.stderr, r.stderr
    assert f"layers ranked on OpenVINO CPU, route {own} in" in r.stderr
    if r.returncode != 0:  # every step tried, then one line, and no bundle
        assert r.returncode == 1, r.stderr
        for k in escalate.STEPS:
            assert f"escalation: {k} layer(s) in float still misses the gate" in r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("edgeffnet: error: INT8 of ") and f"needs {gate * 100:g}%" in last
        assert last.endswith(
            f"(after keeping up to {escalate.MAX_LAYERS} of the most damaging layers in float; "
            f"the limit is {escalate.MAX_LAYERS})"
        ), last
        assert not out.exists()
        return
    m = json.loads((out / "manifest.json").read_text())
    f = m["fidelity"]
    e = f["escalation"]
    assert f["gated"] and f["passed"] and f["min_agreement"] == gate
    assert all(fidelity.passes(row, f["min_agreement"]) for row in f["rows"])
    assert f"OpenVINO CPU, route {own}," in e["ranked_by"] and e["limit"] == escalate.MAX_LAYERS
    # Every step before the last missed, the last passed, and the steps follow escalate.STEPS.
    assert [s["layers"] for s in e["steps"]] == list(escalate.STEPS[: len(e["steps"])])
    assert [s["passed"] for s in e["steps"]] == [False] * (len(e["steps"]) - 1) + [True]
    assert all("misses the gate" in s["message"] for s in e["steps"][:-1])
    # What stayed in float is in the graph as float, after the sensitivity pass's own layers.
    names = [k["node"] for k in e["kept_float"]]
    pre = m["stages"]["precision"]
    assert len(names) == e["steps"][-1]["layers"] and pre["escalated_float"][-len(names) :] == names
    check_qdq(onnx.load(str(out / pre["graph"])), excluded=set(pre["escalated_float"]))
    gains = [k["rank_cosine_gain"] for k in e["kept_float"]]
    assert gains == sorted(gains, reverse=True) and gains[-1] > 0
    # Its latency cost, measured against the artifact that missed.
    lat = e["latency_p50_ms"]
    assert lat["before"] > 0 and e["latency_cost"] == pytest.approx(lat["escalated"] / lat["before"], abs=2e-3)


@pytest.mark.slow
def test_build_with_an_unreadable_calibration_folder_is_one_line(fp16_build, cache_dir, tmp_path):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "notes.txt").write_text("no images here")
    r = run_cli_process(
        "build",
        SPEC,
        "--weights",
        "pretrained",
        "--precision",
        "int8",
        "--calib",
        str(tmp_path / "calib"),
        "-o",
        str(tmp_path / "out"),
        cache=cache_dir,
        timeout=BUILD_TIMEOUT,
    )
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("edgeffnet: error: no readable image in calibration folder") and "1 files skipped" in last
    assert not (tmp_path / "out").exists()


def test_eltwise_plan_quantizes_squeeze_excitation_mul_but_not_silu():
    """SiLU (x * sigmoid(x)) fuses into its conv and stays float; SE's x * sigmoid(y) gets Q/DQ inputs."""
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(np.random.default_rng(1).normal(size=(4, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["sc"], name="silu_sigmoid"),
        helper.make_node("Mul", ["c", "sc"], ["a"], name="silu_mul"),
        helper.make_node("GlobalAveragePool", ["a"], ["p"], name="squeeze"),
        helper.make_node("Conv", ["p", "w2"], ["e"], name="excite"),
        helper.make_node("Sigmoid", ["e"], ["g"], name="gate"),
        helper.make_node("Mul", ["a", "g"], ["output"], name="se_mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "se",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    p = qdq.plan(model)
    assert "se_mul" in p.others and "silu_mul" not in p.others
    assert {"a", "g"} <= set(p.activations) and "sc" not in p.activations
    assert "se_mul" not in qdq.plan(model, eltwise=False).others


@pytest.mark.slow
def test_random_weight_int8_graph_follows_its_fp32(cache_dir, tmp_path_factory):
    """A latency study's INT8 graph must compute what its FP32 computes (random init with residual branches
    near the identity, as training leaves them); the outputs mean nothing, the arithmetic still must."""
    out = tmp_path_factory.mktemp("random-int8") / "b0"
    r = run_cli_process(
        "build", "b0,res=96", "--precision", "int8", "-o", str(out), cache=cache_dir, timeout=BUILD_TIMEOUT
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["weights"]["random_init"] and not m["fidelity"]["gated"]
    assert m["stages"]["precision"]["self_distillation"] == {
        "kept": "untuned",
        "reason": "skipped: random-init weights",
    }
    rows = m["fidelity"]["rows"]
    cosines = {row["artifact"]: row["cosine_mean"] for row in rows}
    # The INT8 graph itself; OpenVINO's compiled artifact (its own int8 kernels) is reported beside it and the
    # report says where a row falls below 0.9.
    assert len(rows) == 2 and cosines["Q/DQ ONNX (onnxruntime)"] >= 0.9, cosines
