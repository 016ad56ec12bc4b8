"""The unlabelled INT8 gate (confident-view agreement + mean cosine), OpenVINO's route choice, escalation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeffnet.backends.openvino import encoding
from edgeffnet.core.errors import UserError
from edgeffnet.graph.onnx_index import GraphIndex
from edgeffnet.pipeline import escalate
from edgeffnet.pipeline import int8_routes as routes
from edgeffnet.precision import fidelity


def _logits(top_prob: np.ndarray, classes: int = 10) -> np.ndarray:
    """Logits whose softmax puts `top_prob` on class 0 and spreads the rest evenly over the others."""
    rest = (1 - top_prob) / (classes - 1)
    p = np.concatenate([top_prob[:, None], np.repeat(rest[:, None], classes - 1, axis=1)], axis=1)
    return np.log(p).astype(np.float32)


def test_confident_mask_is_the_softmax_top1_probability():
    ref = _logits(np.array([0.2, 0.29, 0.31, 0.9]))
    assert fidelity.confident(ref).tolist() == [False, False, True, True]
    assert fidelity.confident(ref + 7.0).tolist() == [False, False, True, True]  # softmax ignores a shift


def test_report_counts_agreement_on_all_and_on_confident_views():
    probs = np.array([0.15] * 10 + [0.8] * 40)  # 10 near-ties, 40 confident views
    ref = _logits(probs)
    got = ref.copy()
    got[:6, 1] = ref[:6, 0] + 0.1  # 6 near-ties flip to class 1
    got[10, 2] = ref[10, 0] + 0.1  # one confident view flips too
    row = fidelity.report(ref, got, "hand-made")
    assert row["views"] == 50 and row["confident_views"] == 40
    assert row["top1_agreement"] == pytest.approx(43 / 50)
    assert row["confident_top1_agreement"] == pytest.approx(39 / 40)
    assert row["confident_prob"] == fidelity.CONFIDENT_PROB


def _row(agreement, confident_agreement, confident_views=120, cosine=0.996, artifact="openvino CPU artifact"):
    return {
        "artifact": artifact,
        "views": 200,
        "top1_agreement": agreement,
        "top5_overlap": 0.97,
        "cosine_mean": cosine,
        "cosine_min": 0.95,
        "max_abs": 1.0,
        "confident_prob": fidelity.CONFIDENT_PROB,
        "confident_views": confident_views,
        "confident_top1_agreement": confident_agreement,
    }


def test_near_ties_do_not_fail_a_build_but_confident_flips_do():
    v = fidelity.gate([_row(0.93, 1.0)], trained=True, min_agreement=0.98, allow_drop=False)
    assert v["passed"] and v["judged_agreement"] == 1.0 and v["top1_agreement"] == 0.93
    assert "120 of 200 views" in v["judged_on"]
    with pytest.raises(fidelity.FidelityTooLow) as e:
        fidelity.gate([_row(0.99, 0.975)], trained=True, min_agreement=0.98, allow_drop=False)
    msg = str(e.value)
    assert isinstance(e.value, UserError) and e.value.exit_code == 1 and "\n" not in msg
    for part in ("97.5%", "120 of 200 views", "99.0% over all 200 views", "98%", "--allow-drop"):
        assert part in msg


def test_low_cosine_fails_even_when_every_label_survives():
    with pytest.raises(fidelity.FidelityTooLow) as e:
        fidelity.gate([_row(1.0, 1.0, cosine=0.943)], trained=True, min_agreement=0.98, allow_drop=False)
    assert "0.9430" in str(e.value) and f"{fidelity.MIN_COSINE:g}" in str(e.value)
    v = fidelity.gate([_row(1.0, 1.0, cosine=0.943)], trained=True, min_agreement=0.98, allow_drop=True)
    assert v["gated"] and not v["passed"]


def test_too_few_confident_views_judges_all_views():
    few = fidelity.MIN_CONFIDENT_VIEWS - 1
    with pytest.raises(fidelity.FidelityTooLow) as e:
        fidelity.gate([_row(0.95, 1.0, confident_views=few)], trained=True, min_agreement=0.98, allow_drop=False)
    assert f"all 200 views (only {few} confident)" in str(e.value)


def test_the_worst_row_is_the_one_that_fails():
    rows = [_row(0.97, 1.0, artifact="Q/DQ ONNX (onnxruntime)"), _row(0.99, 1.0, cosine=0.95)]
    v = fidelity.gate(rows, trained=True, min_agreement=0.98, allow_drop=True)
    assert v["worst"] == "openvino CPU artifact" and not v["passed"]


# -- OpenVINO's route choice -------------------------------------------------------------------------------


def test_vnni_flags():
    assert not encoding.has_vnni({"avx", "avx2", "fma"})
    assert encoding.has_vnni({"avx2", "avx512_vnni"}) and encoding.has_vnni({"avx2", "avx_vnni"})
    assert encoding.has_vnni({"neon", "asimd"})  # not an AVX2 x86: nothing to work around


def test_choice_is_fidelity_first_then_latency():
    assert routes.choose({"a": 0.99, "b": 0.996}, {"a": 1.0, "b": 2.0}) == ("b", "closer to FP32 (mean cosine)")
    chosen, why = routes.choose({"a": 0.9950, "b": 0.9960, "c": 0.94}, {"a": 1.0, "b": 2.0, "c": 0.5})
    assert chosen == "a" and "fastest" in why  # within the gap of the best; c is faster but far off


def _conv_graph() -> onnx.ModelProto:
    """x -> Q/DQ (per tensor) -> Conv with a per-channel Q/DQ weight."""
    w = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.float32(0.1), "xs"),
        numpy_helper.from_array(np.int8(0), "z"),
        numpy_helper.from_array((np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32), "ws"),
        numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "z"], ["xdq"]),
        helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wdq"], axis=0),
        helper.make_node("Conv", ["xdq", "wdq"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_seven_bit_weights_rescale_only_dense_per_channel_weight_scales():
    m = _conv_graph()
    out, changed = encoding.seven_bit_weights(m)
    assert changed == 1
    before = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert np.allclose(after["ws"], before["ws"] * 127 / 63) and after["xs"] == before["xs"]
    w = after["w"]
    codes = np.round(w / after["ws"][:, None, None, None])
    assert np.abs(codes).max() <= 63  # 2 * 255 * 63 fits pmaddubsw's int16 sums
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    conv.attribute.append(helper.make_attribute("group", 3))  # depthwise-like: keeps 8 bits
    assert encoding.seven_bit_weights(m)[1] == 0


# -- escalation --------------------------------------------------------------------------------------------


def test_escalation_applies_only_to_gated_int8_builds():
    class Ctx:
        def __init__(self, precision, trained, allow_drop):
            self.precision, self.trained = precision, trained
            self.options = type("O", (), {"allow_drop": allow_drop})()

    assert escalate.applies(Ctx("int8", True, False))
    assert not escalate.applies(Ctx("int8", False, False))  # random weights are not gated
    assert not escalate.applies(Ctx("int8", True, True))  # the user accepted the drop
    assert not escalate.applies(Ctx("fp16", True, False))


def test_escalation_keeps_the_top_ranked_layers_until_the_gate_passes(monkeypatch, tmp_path):
    """Stages stubbed: the gate passes once 3 layers beyond the sensitivity pass's are float."""
    import logging
    from dataclasses import dataclass, field

    from edgeffnet.core.artifact import Artifact
    from edgeffnet.pipeline.options import BuildOptions

    @dataclass(frozen=True)
    class Ctx:
        options: BuildOptions
        dir: object
        precision: str = "int8"
        trained: bool = True
        fixed_batch: int = 1
        keep_float: tuple = ()
        target: object = type("T", (), {"backend": "openvino"})()
        log: logging.Logger = logging.getLogger("test")
        preprocess: object = None
        calibration: object = field(
            default_factory=lambda: type("C", (), {"tuning": lambda self, p: np.zeros((2, 1))})()
        )

    graph = Artifact(
        "precision",
        tmp_path / "g.onnx",
        {
            "method": "entropy",
            "kept_float": [{"node": "k"}],
            "sensitivity_ranking": [
                {"node": n, "cosine_gain": g}
                for n, g in (("a", 0.3), ("k", 0.2), ("b", 0.1), ("c", 0.05), ("d", -0.01))
            ],
        },
    )
    seen = []
    monkeypatch.setattr(escalate.stages, "precision", lambda c, store, sim: (seen.append(c), graph)[1])
    monkeypatch.setattr(escalate.stages, "compile", lambda c, store, g: g)

    def verdict(c, g, comp):
        if len(c.keep_float) < 4:
            raise fidelity.FidelityTooLow(f"{len(c.keep_float)} float: misses")
        return {"passed": True}

    monkeypatch.setattr(escalate.stages, "fidelity_verdict", verdict)
    monkeypatch.setattr(escalate, "artifact_maker", lambda ctx, compiled: None)  # the recorded ranking, no OpenVINO
    runner = type("R", (), {"device": "CPU", "bound": lambda self, x: lambda: None})()
    monkeypatch.setattr("edgeffnet.backends.get", lambda name: type("B", (), {"load": staticmethod(lambda *a: runner)}))
    ctx = Ctx(options=BuildOptions(), dir=tmp_path)
    c, g, comp, v = escalate.escalate(ctx, None, None, graph, graph, fidelity.FidelityTooLow("first miss"))
    assert [s.keep_float for s in seen] == [("k", "a"), ("k", "a", "b", "c")]  # steps 1, 3 (d helps nothing)
    assert all(s.options.calib_method == "entropy" for s in seen)  # the first build's method stays
    e = v["escalation"]
    assert [k["node"] for k in e["kept_float"]] == ["a", "b", "c"] and e["steps"][-1] == {"layers": 3, "passed": True}
    assert e["latency_p50_ms"]["before"] > 0 and e["latency_cost"] > 0
    with pytest.raises(
        fidelity.FidelityTooLow, match="after keeping up to 3 of the most damaging layers in float; the limit is 15"
    ):
        monkeypatch.setattr(
            escalate.stages,
            "fidelity_verdict",
            lambda c, g, comp: (_ for _ in ()).throw(fidelity.FidelityTooLow("misses")),
        )
        escalate.escalate(ctx, None, None, graph, graph, fidelity.FidelityTooLow("first miss"))


def _three_convs() -> onnx.ModelProto:
    """input -> Conv c1 -> Relu -> Conv c2 -> Relu -> Conv c3 -> GlobalAveragePool -> Flatten (8 outputs)."""
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "input"
    for i, (cin, cout) in enumerate(((3, 8), (8, 8), (8, 8)), 1):
        inits += [
            numpy_helper.from_array(rng.normal(0, 0.5, (cout, cin, 3, 3)).astype(np.float32), f"w{i}"),
            numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], name=f"c{i}", pads=[1] * 4))
        prev = f"c{i}"
        if i < 3:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"r{i}"))
            prev = f"r{i}"
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["logits"], name="flat"),
    ]
    graph = helper.make_graph(
        nodes,
        "three",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_ranking_on_the_artifact_follows_what_the_artifact_does():
    """An artifact that mangles c2 whenever c2 is int8 (as OpenVINO's 7-bit route hurts some layers more
    than ONNX Runtime shows) puts c2 first, whatever ONNX Runtime's own ranking says."""
    from edgeffnet.backends import onnxruntime as ort_backend
    from edgeffnet.precision import int8

    model = _three_convs()
    x = np.random.default_rng(1).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    stats, _ = int8.statistics(model, x, "three-convs", use_cache=False)

    def make(graph, means):
        g = onnx.ModelProto()
        g.CopyFrom(graph)
        w2 = next(n.input[1] for n in g.graph.node if n.name == "c2")
        for n in g.graph.node:  # c2's weights sign-flipped on half its channels where they are quantized
            if n.op_type == "DequantizeLinear" and n.output[0] == w2:
                scale = numpy_helper.to_array(next(t for t in g.graph.initializer if t.name == n.input[1]))
                flip = np.where(np.arange(8) % 2, -1, 1).astype(np.float32)
                g.graph.initializer.append(numpy_helper.from_array(scale * flip, "w2_flipped"))
                n.input[1] = "w2_flipped"
        return lambda v: ort_backend.run_all(g, v, literal=True)

    ranking = escalate.rank_on_artifact(model, stats, "minmax", (), x, make)
    assert sorted(n for n, _ in ranking) == ["c1", "c2", "c3"]
    assert ranking[0][0] == "c2" and ranking[0][1] > 10 * max(abs(g) for _, g in ranking[1:])
    assert "c2" not in [n for n, _ in escalate.rank_on_artifact(model, stats, "minmax", ("c2",), x, make)]


def _dense_layers_graph() -> tuple[onnx.ModelProto, np.ndarray]:
    """x -> 1x1 Conv (bias) -> Relu -> 1x1 Conv (no bias) -> y, trained-looking weights, and the
    per-channel input means it is calibrated with (positive, as after an activation)."""
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(size=(8, 6, 1, 1)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    w2 = rng.normal(size=(5, 8, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 3, 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
    )
    mean = (rng.integers(30, 90, 6) * np.float32(4 / 127)).astype(np.float32)  # on x's quantization grid below
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), mean


def test_seven_bit_weights_with_means_keep_the_mean_output_of_eight_bit_weights():
    from edgeffnet.backends import onnxruntime as ort_backend
    from edgeffnet.precision import qdq

    model, mean = _dense_layers_graph()
    x = np.broadcast_to(mean[None, :, None, None], (1, 6, 3, 3)).astype(np.float32)  # the input at its mean
    p = qdq.plan(model)
    means = {"x": mean}  # r1's mean unknown: conv2 keeps its bias (it has none)
    eight = qdq.quantize(model, p, {"x": 4.0, "r1": 40.0}, means)
    seven, changed = encoding.seven_bit_weights(eight, means)
    uncorrected, _ = encoding.seven_bit_weights(eight)
    assert changed == 2

    def first_layer(m):
        out = onnx.ModelProto()
        out.CopyFrom(m)
        del out.graph.output[:]
        out.graph.output.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, [1, 8, 3, 3]))
        return ort_backend.run_all(out, x, literal=True)

    y8, y7, y7_raw = first_layer(eight), first_layer(seven), first_layer(uncorrected)
    assert np.abs(y7 - y8).max() < 1e-4 and np.abs(y7_raw - y8).max() > 1e-3  # 7-bit rounding's mean shift removed
    conv2 = next(n for n in seven.graph.node if n.name == "conv2")
    assert len(conv2.input) == 2  # no input mean for r1: no bias made up
    names = [t.name for t in seven.graph.initializer]
    assert "w1_bias_w7" in names and "w1_bias_corrected" not in names  # the replaced 8-bit bias goes


def test_route_graphs_add_an_all_int8_route_only_where_layers_were_kept_float(tmp_path):
    from types import SimpleNamespace

    from edgeffnet.precision import int8, qdq, ranges

    model, _ = _dense_layers_graph()
    onnx.save(model, str(tmp_path / "model.sim.onnx"))
    data = np.random.default_rng(2).uniform(0, 2, (16, 6, 3, 3)).astype(np.float32)
    ctx = SimpleNamespace(
        dir=tmp_path,
        keep_float=(),
        options=SimpleNamespace(cache=False),
        calibration=SimpleNamespace(data=data, sha256="test"),
    )
    stats, _ = int8.statistics(model, data, "test", use_cache=False)
    named = qdq.name_nodes(onnx.load(str(tmp_path / "model.sim.onnx")))
    kept = qdq.quantize(
        named, qdq.plan(named, frozenset({"conv1"})), ranges.thresholds(stats, "minmax"), stats["means"]
    )
    onnx.save(kept, str(tmp_path / "model.int8.onnx"))
    record = {"method": "minmax", "kept_float": [{"node": "conv1"}]}

    graphs, described = routes.route_graphs(ctx, tmp_path / "model.int8.onnx", record, vnni=False)
    assert set(graphs) == {"qdq-onnx", "qdq-onnx-w7", "qdq-onnx-w7-all-int8"} and set(described) >= set(graphs)

    def weight_is_quantized(g, conv):
        index = GraphIndex(g)
        node = next(n for n in g.graph.node if n.name == conv)
        return index.producer.get(node.input[1]) is not None

    assert not weight_is_quantized(graphs["qdq-onnx-w7"], "conv1")
    full = graphs["qdq-onnx-w7-all-int8"]
    assert weight_is_quantized(full, "conv1") and weight_is_quantized(full, "conv2")
    w1_scale = next(numpy_helper.to_array(t) for t in full.graph.initializer if t.name == "w1_wscale")
    assert np.allclose(w1_scale, np.abs(numpy_helper.to_array(model.graph.initializer[0])).reshape(8, -1).max(1) / 63)

    graphs, _ = routes.route_graphs(ctx, tmp_path / "model.int8.onnx", record, vnni=True)
    assert set(graphs) == {"qdq-onnx", "qdq-onnx-all-int8"}
    assert set(
        routes.route_graphs(ctx, tmp_path / "model.int8.onnx", {"method": "minmax", "kept_float": []}, vnni=True)[0]
    ) == {"qdq-onnx"}
    # An escalation builds only the host's own route, the one its layers were ranked on, with them in float.
    ctx.keep_float = ("conv1",)
    escalated = {"method": "minmax", "kept_float": []}
    for vnni, own in ((True, "qdq-onnx"), (False, "qdq-onnx-w7")):
        graphs, described = routes.route_graphs(ctx, tmp_path / "model.int8.onnx", escalated, vnni)
        assert set(graphs) == set(described) == {own} and routes.host_route(vnni) == own
        assert not weight_is_quantized(graphs[own], "conv1") and weight_is_quantized(graphs[own], "conv2")


def test_a_route_with_float_layers_leaves_the_latency_race_to_its_as_faithful_all_int8_twin():
    cos = {"qdq-onnx": 0.90, "qdq-onnx-w7": 0.9955, "qdq-onnx-w7-all-int8": 0.9944, "nncf": 0.95}
    assert routes.float_twins(cos) == {"qdq-onnx-w7"}
    cos["qdq-onnx-w7-all-int8"] = 0.990  # clearly less faithful: the float layers earn their time
    assert routes.float_twins(cos) == set()
    assert routes.float_twins({"qdq-onnx": 0.99, "nncf": 0.99}) == set()
