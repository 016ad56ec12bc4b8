"""TensorRT targets: profiles, refusals, pending-engine bundles, trtexec lines per version, TensorRT's graph rules.

TensorRT is not installable here, so nothing below imports or imitates it, except the engine tests at the
end, which build real engines and skip, naming the reason, where tensorrt is not importable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from edgeffnet.backends.tensorrt.engine import PLAN_TAG, mismatch, plan_version
from edgeffnet.backends.tensorrt.plan import parse_version, plan, trtexec_line
from edgeffnet.backends.tensorrt.rules import violations
from edgeffnet.core.errors import UserError
from edgeffnet.specs import targets

JETSONS = [
    "jetson-nano",
    "jetson-tx2",
    "jetson-xavier-nx",
    "jetson-agx-xavier",
    "jetson-orin-nano",
    "jetson-orin-nx",
    "jetson-agx-orin",
]
TRT_PROFILES = JETSONS + ["gpu"]
GRAPH = {"fp32": "model.sim.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
SPEC = "lite0,res=96"


# -- profiles ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRT_PROFILES)
def test_profile_loads_and_every_fact_has_a_source(name):
    t = targets.load(name)
    assert t.backend == "tensorrt" and t.device == "GPU" and t.default_precision in t.precisions
    assert t.peak.get("source") and t.memory.get("source")
    sources = t.options["sources"]
    facts = [k for k in t.options if k not in ("sources", "dla_core", "dynamic_batch")]
    assert facts and all(sources.get(k) for k in facts), (
        f"{name}: facts without a source: {[k for k in facts if not sources.get(k)]}"
    )
    assert "estimate" in sources["workspace_mib"]  # a choice of ours, and it says so
    parse_version(t.options["tensorrt"])


@pytest.mark.parametrize("name", JETSONS)
def test_derived_peaks_say_estimate(name):
    assert "estimate" in targets.load(name).peak["source"]


@pytest.mark.parametrize(
    "name, cc, tensorrt, dla",
    [
        ("jetson-nano", "5.3", "8.2.1", 0),
        ("jetson-tx2", "6.2", "8.2.1", 0),
        ("jetson-xavier-nx", "7.2", "8.5.2", 2),
        ("jetson-agx-xavier", "7.2", "8.5.2", 2),
        ("jetson-orin-nano", "8.7", "10.3", 0),
        ("jetson-orin-nx", "8.7", "10.3", 2),
        ("jetson-agx-orin", "8.7", "10.3", 2),
    ],
)
def test_jetson_facts(name, cc, tensorrt, dla):
    o = targets.load(name).options
    assert (o["compute_capability"], o["tensorrt"], o["dla_cores"]) == (cc, tensorrt, dla)
    assert ("dla_core" in o) == (dla > 0)


def test_gpu_profile_is_turing_and_newer_on_tensorrt_10():
    o = targets.load("gpu").options
    assert o["min_compute_capability"] == "7.5" and parse_version(o["tensorrt"])[0] == 10


def test_jetson_alias_is_orin_nano_and_the_file_says_why():
    t = targets.load("jetson")
    assert t.name == "jetson-orin-nano"
    assert "`jetson` names this profile" in Path(t.path).read_text()


@pytest.mark.parametrize("name", ["jetson-nano", "jetson-tx2"])
def test_int8_refused_on_nano_and_tx2_naming_the_precisions(name):
    with pytest.raises(UserError, match=r"supports fp32, fp16, not int8; pass --precision fp16"):
        targets.load(name).check_precision("int8")


# -- trtexec lines ---------------------------------------------------------------------------------------


def _line(name: str, precision: str, version: str | None = None, dims=(1, 3, 96, 96)) -> str:
    t = targets.load(name)
    if version:
        t = dataclasses.replace(t, options={**t.options, "tensorrt": version})
    p = plan(t, precision, parse_version(t.options["tensorrt"]))
    return trtexec_line(p, GRAPH[precision], "input", list(dims), t)


@pytest.mark.parametrize(
    "name, precision, version, expected",
    [
        # 8.0-8.3: --workspace, --buildOnly, precision flags
        (
            "jetson-nano",
            "fp16",
            "8.0.1",
            "trtexec --onnx=model.fp16.onnx --saveEngine=model.engine --fp16 "
            "--workspace=512 --timingCacheFile=timing.cache --buildOnly",
        ),
        (
            "jetson-nano",
            "fp16",
            None,
            "trtexec --onnx=model.fp16.onnx --saveEngine=model.engine --fp16 "
            "--workspace=512 --timingCacheFile=timing.cache --buildOnly",
        ),
        (
            "jetson-tx2",
            "fp32",
            None,
            "trtexec --onnx=model.sim.onnx --saveEngine=model.engine "
            "--workspace=1024 --timingCacheFile=timing.cache --buildOnly",
        ),
        # 8.4/8.5: --memPoolSize, still --buildOnly; the Q/DQ graph needs --int8; DLA with GPU fallback
        (
            "jetson-xavier-nx",
            "int8",
            None,
            "trtexec --onnx=model.int8.onnx --saveEngine=model.engine --int8 "
            "--memPoolSize=workspace:1024 --timingCacheFile=timing.cache --useDLACore=0 --allowGPUFallback --buildOnly",
        ),
        (
            "jetson-agx-xavier",
            "fp32",
            None,
            "trtexec --onnx=model.sim.onnx --saveEngine=model.engine "
            "--memPoolSize=workspace:2048 --timingCacheFile=timing.cache --buildOnly",
        ),
        # 8.6 (JetPack 6.0): --skipInference
        (
            "jetson-orin-nano",
            "fp16",
            "8.6.2",
            "trtexec --onnx=model.fp16.onnx --saveEngine=model.engine --fp16 "
            "--memPoolSize=workspace:1024 --timingCacheFile=timing.cache --skipInference",
        ),
        # 10.x: strongly typed precision graphs; fp32 without TF32 on sm_87; DLA builds keep the flag
        (
            "jetson-orin-nano",
            "fp16",
            None,
            "trtexec --onnx=model.fp16.onnx --saveEngine=model.engine --stronglyTyped "
            "--memPoolSize=workspace:1024 --timingCacheFile=timing.cache --skipInference",
        ),
        (
            "jetson-orin-nano",
            "int8",
            None,
            "trtexec --onnx=model.int8.onnx --saveEngine=model.engine --stronglyTyped "
            "--memPoolSize=workspace:1024 --timingCacheFile=timing.cache --skipInference",
        ),
        (
            "jetson-orin-nano",
            "fp32",
            None,
            "trtexec --onnx=model.sim.onnx --saveEngine=model.engine --noTF32 "
            "--memPoolSize=workspace:1024 --timingCacheFile=timing.cache --skipInference",
        ),
        (
            "jetson-agx-orin",
            "fp16",
            None,
            "trtexec --onnx=model.fp16.onnx --saveEngine=model.engine --fp16 "
            "--memPoolSize=workspace:4096 --timingCacheFile=timing.cache --useDLACore=0 --allowGPUFallback --skipInference",
        ),
        (
            "jetson-orin-nx",
            "fp32",
            None,
            "trtexec --onnx=model.sim.onnx --saveEngine=model.engine --noTF32 "
            "--memPoolSize=workspace:2048 --timingCacheFile=timing.cache --skipInference",
        ),
        (
            "gpu",
            "int8",
            None,
            "trtexec --onnx=model.int8.onnx --saveEngine=model.engine --stronglyTyped "
            "--memPoolSize=workspace:4096 --timingCacheFile=timing.cache --skipInference",
        ),
        # 11.x: no precision flags at all, strong typing is not a flag any more
        (
            "gpu",
            "int8",
            "11",
            "trtexec --onnx=model.int8.onnx --saveEngine=model.engine "
            "--memPoolSize=workspace:4096 --timingCacheFile=timing.cache --skipInference",
        ),
        (
            "gpu",
            "fp16",
            "11.4",
            "trtexec --onnx=model.fp16.onnx --saveEngine=model.engine "
            "--memPoolSize=workspace:4096 --timingCacheFile=timing.cache --skipInference",
        ),
        (
            "gpu",
            "fp32",
            "11",
            "trtexec --onnx=model.sim.onnx --saveEngine=model.engine --noTF32 "
            "--memPoolSize=workspace:4096 --timingCacheFile=timing.cache --skipInference",
        ),
    ],
)
def test_trtexec_line_per_tensorrt_version(name, precision, version, expected):
    assert _line(name, precision, version) == expected


def test_dynamic_batch_gets_min_opt_max_shapes_from_the_profile():
    line = _line("jetson-orin-nano", "fp16", dims=(None, 3, 96, 96))
    assert "--minShapes=input:1x3x96x96 --optShapes=input:8x3x96x96 --maxShapes=input:16x3x96x96" in line


@pytest.mark.parametrize("version", ["8.2", "8.5", "8.6", "10.0", "10.3", "11.0"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_flags_that_cannot_coexist_never_do(version, precision):
    line = _line("gpu", precision, version).split()
    major = parse_version(version)[0]
    if "--stronglyTyped" in line:
        assert not {"--fp16", "--int8"} & set(line)
    if major >= 10:
        assert not any(a.startswith("--workspace=") for a in line) and "--buildOnly" not in line
    if major >= 11:
        assert not {"--fp16", "--int8", "--stronglyTyped"} & set(line)


# -- TensorRT's graph rules ---------------------------------------------------------------------------------


def _model(nodes, inits, opset=13, inputs=None, outputs=None, domain_opsets=()):
    inputs = inputs or [helper.make_tensor_value_info("x", T.FLOAT, [1, 4, 8, 8])]
    outputs = outputs or [helper.make_tensor_value_info("y", T.FLOAT, None)]
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domain_opsets]
    return helper.make_model(g, opset_imports=opsets)


def _qdq_conv(
    zero=0,
    zero_type=np.int8,
    weight_axis=0,
    per_channel_activation=False,
    opset=13,
    pair_activation=True,
    weight_op="Conv",
):
    """x -> Q/DQ -> Conv(W -> Q/DQ per channel) -> y: what the precision stage writes, with one knob per rule."""
    w = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32)
    channels = w.shape[weight_axis]
    act_scale = np.full(4, 0.1, np.float32) if per_channel_activation else np.array(0.1, np.float32)
    act_zero = np.zeros(act_scale.shape, zero_type) + zero
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(act_scale, "s"),
        numpy_helper.from_array(act_zero.astype(zero_type), "z"),
        numpy_helper.from_array(np.full(channels, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(channels, zero_type) + zero, "wz"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_x", axis=1)]
    if pair_activation:
        nodes.append(helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"], name="dq_x", axis=1))
    nodes += [
        helper.make_node("QuantizeLinear", ["W", "ws", "wz"], ["Wq"], name="q_w", axis=weight_axis),
        helper.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["Wdq"], name="dq_w", axis=weight_axis),
        helper.make_node(weight_op, ["xdq" if pair_activation else "xq", "Wdq"], ["y"], name="conv"),
    ]
    return _model(nodes, inits, opset)


def _fp16_conv(opset=13, half=T.FLOAT16):
    w = numpy_helper.from_array(np.ones((8, 4, 3, 3), np.float16), "W")
    if half != T.FLOAT16:
        w = helper.make_tensor("W", half, [8, 4, 3, 3], [0] * 288)
    nodes = [
        helper.make_node("Cast", ["x"], ["xh"], to=half, name="to_half"),
        helper.make_node("Conv", ["xh", "W"], ["yh"], name="conv"),
        helper.make_node("Cast", ["yh"], ["y"], to=T.FLOAT, name="to_float"),
    ]
    return _model(nodes, [w], opset)


@pytest.mark.parametrize("version", ["8.2", "8.5", "10.3", "11"])
def test_valid_fp16_and_qdq_graphs_pass(version):
    assert violations(_qdq_conv(), version) == []
    assert violations(_fp16_conv(), version) == []


def test_nonzero_zero_point_is_asymmetric():
    problems = violations(_qdq_conv(zero=3), "10.3")
    assert any("zero point is not 0" in p for p in problems)


def test_uint8_quantization_is_refused():
    problems = violations(_qdq_conv(zero_type=np.uint8), "8.5")
    assert any("UINT8" in p for p in problems)
    m = _qdq_conv()
    for n in m.graph.node:  # no zero point: ONNX's default output type is uint8
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            del n.input[2]
    assert any("no zero point" in p for p in violations(m, "10.3"))


def test_conv_weight_must_be_quantized_along_axis_0():
    problems = violations(_qdq_conv(weight_axis=1), "10.3")
    assert problems == ["Conv 'conv': weight 'W' is quantized along axis 1; TensorRT needs its output-channel axis 0"]


def test_activations_are_quantized_per_tensor():
    problems = violations(_qdq_conv(per_channel_activation=True), "10.3")
    assert any("activation per channel" in p for p in problems)


@pytest.mark.parametrize(
    "opset, version, ok",
    [
        (13, "8.2", True),
        (17, "8.2", False),
        (17, "8.5", True),
        (18, "8.5", False),
        (20, "10.3", True),
        (21, "10.3", False),
        (25, "11", True),
    ],
)
def test_opset_limit_of_each_parser(opset, version, ok):
    problems = [p for p in violations(_fp16_conv(opset), version) if p.startswith("opset")]
    assert (problems == []) == ok, problems


def test_every_quantize_needs_its_dequantize():
    problems = violations(_qdq_conv(pair_activation=False), "10.3")
    assert any("QuantizeLinear 'q_x' feeds Conv 'conv'" in p for p in problems)
    m = _qdq_conv()
    m.graph.node.remove(next(n for n in m.graph.node if n.name == "q_x"))
    m.graph.node[0].input[0] = "x"  # dq_x now reads the float input directly
    assert any("neither a QuantizeLinear output nor a constant" in p for p in violations(m, "10.3"))


def test_types_the_parser_lacks():
    assert any("BFLOAT16" in p for p in violations(_fp16_conv(half=T.BFLOAT16), "8.2"))
    assert violations(_fp16_conv(half=T.BFLOAT16), "10.3") == []
    assert any("FLOAT8E5M2" in p for p in violations(_fp16_conv(half=T.FLOAT8E5M2), "10.3"))


def test_non_onnx_operators_are_refused():
    m = _fp16_conv()
    m.graph.node[1].domain = "com.microsoft"
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    problems = violations(m, "10.3")
    assert any("not an ONNX operator" in p for p in problems) and any("com.microsoft" in p for p in problems)


def test_gemm_weight_axis_follows_transB():
    def gemm(axis, trans_b):
        w = np.ones((10, 4) if trans_b else (4, 10), np.float32)
        n_out = 10
        inits = [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.full(n_out, 0.1, np.float32), "ws"),
            numpy_helper.from_array(np.zeros(n_out, np.int8), "wz"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["W", "ws", "wz"], ["Wq"], name="q_w", axis=axis),
            helper.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["Wdq"], name="dq_w", axis=axis),
            helper.make_node("Gemm", ["x", "Wdq"], ["y"], name="fc", transB=trans_b),
        ]
        return _model(nodes, inits, inputs=[helper.make_tensor_value_info("x", T.FLOAT, [1, 4])])

    assert violations(gemm(0, 1), "8.5") == [] and violations(gemm(1, 0), "8.5") == []
    assert violations(gemm(1, 1), "8.5") == [
        "Gemm 'fc': weight 'W' is quantized along axis 1; TensorRT needs its output-channel axis 0"
    ]


# -- engine facts ------------------------------------------------------------------------------------------


def test_engine_from_another_version_or_gpu_gets_one_line_saying_what_it_was_built_for():
    built = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    here = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
    msg = mismatch(built, "10.7.0", here)
    assert (
        msg.startswith(
            "model.engine was built for TensorRT 10.3.0 on Orin (sm_87); this host has "
            "TensorRT 10.7.0 on NVIDIA GeForce RTX 4090 (sm_89)"
        )
        and "\n" not in msg
    )
    assert mismatch(built, "10.3.0.30", {"name": "Orin", "compute_capability": "8.7"}) is None
    assert "TensorRT 10.3.0 on Orin" in mismatch(built, "10.3.0", {"name": "Orin", "compute_capability": "8.9"})


def test_plan_header_version_is_read_without_deserializing(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(struct.pack("<II", PLAN_TAG, 0) + bytes(16) + bytes([10, 3, 0, 26]) + b"rest")
    assert plan_version(engine) == "10.3.0.26"
    engine.write_bytes(b"not a plan" * 4)
    assert plan_version(engine) is None


# -- bundles from real builds -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A stage cache of this module's own: the later builds reuse the first one's graph/export/simplify."""
    return {**os.environ, "EDGEFFNET_CACHE": str(tmp_path_factory.mktemp("cache"))}


def edgeffnet(env, *args):
    return subprocess.run([sys.executable, "-m", "edgeffnet.cli", *args], capture_output=True, text=True, env=env)


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - the PyPI placeholder raises on import; so does a broken install
        return False
    return True


@pytest.fixture(scope="module")
def pending(env, tmp_path_factory):
    """Build `SPEC --target jetson-orin-nano` per precision once; every bundle test reads the same bundles."""
    made = {}

    def get(precision):
        if precision not in made:
            out = tmp_path_factory.mktemp("bundles") / f"orin-{precision}"
            made[precision] = (
                out,
                edgeffnet(env, "build", SPEC, "--target", "jetson-orin-nano", "-p", precision, "-o", str(out)),
            )
        return made[precision]

    return get


def _not_here(reason: str) -> bool:
    """Why an Orin Nano engine cannot be built here: no TensorRT, or (with TensorRT) not an sm_87 GPU."""
    return (
        reason.startswith("tensorrt is not importable")
        or "not jetson-orin-nano's sm_87" in reason
        or (_tensorrt_importable() and "pycuda" in reason)
    )


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_pending_engine_bundle_on_a_host_that_is_not_the_device(pending, precision):
    out, r = pending(precision)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    c = m["stages"]["compile"]
    expected = _line("jetson-orin-nano", precision)
    assert c["pending"] is True and _not_here(c["pending_reason"])
    assert c["trtexec"] == expected and c["graph"] == GRAPH[precision] == m["graph"]
    assert c["tensorrt_rules"] == {"checked_for": "10.3", "violations": []}
    assert not any(p.suffix in (".engine", ".plan", ".trt") for p in out.iterdir())  # nothing poses as an engine
    readme = (out / "README.md").read_text()
    assert '"$TRTEXEC" ' + expected.removeprefix("trtexec ") in readme and "edgeffnet compile BUNDLE" in readme
    assert "engine pending" in r.stderr and "edgeffnet compile BUNDLE" in r.stderr


def test_require_engine_turns_pending_into_an_error(env, pending, tmp_path):
    pending("fp32")  # fills the stage cache: the refusal must hold for a cached pending stage too
    out = tmp_path / "required"
    r = edgeffnet(env, "build", SPEC, "--target", "jetson-orin-nano", "-p", "fp32", "--require-engine", "-o", str(out))
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("edgeffnet: error: --require-engine:") and _not_here(last.split("not built: ", 1)[1])
    assert not out.exists()


def test_compile_command_off_the_device_names_the_trtexec_line(env, pending):
    out, _ = pending("fp32")
    before = (out / "manifest.json").read_bytes()
    r = edgeffnet(env, "compile", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and _not_here(lines[0].removeprefix("edgeffnet: error: "))
    assert _line("jetson-orin-nano", "fp32") in lines[0]
    assert (out / "manifest.json").read_bytes() == before


def test_predict_on_a_pending_bundle_says_how_to_finish(env, pending, tmp_path):
    from PIL import Image

    out, _ = pending("fp32")
    Image.new("RGB", (64, 48), (200, 40, 30)).save(tmp_path / "red.png")
    r = edgeffnet(env, "predict", str(out), str(tmp_path / "red.png"))
    assert r.returncode == 2 and "no TensorRT engine yet" in r.stderr and "edgeffnet compile" in r.stderr


def test_compile_command_refuses_other_backends(env, pending, tmp_path):
    m = json.loads((pending("fp16")[0] / "manifest.json").read_text())
    m["target"] |= {"name": "cpu", "backend": "openvino", "device": "CPU"}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    r = edgeffnet(env, "compile", str(tmp_path))
    assert r.returncode == 2 and "nothing to compile" in r.stderr


def test_build_refuses_a_graph_the_devices_parser_cannot_read(env, tmp_path):
    r = edgeffnet(
        env, "build", SPEC, "--target", "jetson-nano", "-p", "fp32", "--opset", "17", "-o", str(tmp_path / "b")
    )
    assert r.returncode == 2  # refused from the options, before the first stage (tests/test_new_user.py)
    assert "opset 17 is above 13" in r.stderr.strip().splitlines()[-1]


def test_int8_for_the_nano_is_refused_before_any_work(env, tmp_path):
    r = edgeffnet(env, "build", SPEC, "--target", "jetson-nano", "-p", "int8", "-o", str(tmp_path / "b"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "edgeffnet: error: target 'jetson-nano' (NVIDIA Jetson Nano 4GB (Maxwell sm_53, JetPack 4.6, TensorRT 8.2) "
        "through TensorRT) supports fp32, fp16, not int8; pass --precision fp16"
    ]


# -- real engines: only where TensorRT is -------------------------------------------------------------------


def require_tensorrt():
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"tensorrt is not importable: {type(e).__name__}: {e}")


@pytest.fixture(scope="module")
def engine_bundle(env, tmp_path_factory):
    require_tensorrt()
    out = tmp_path_factory.mktemp("engines") / "gpu-fp16"
    r = edgeffnet(env, "build", SPEC, "--target", "gpu", "-p", "fp16", "--require-engine", "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_engine_is_built_verified_and_recorded(engine_bundle):
    c = json.loads((engine_bundle / "manifest.json").read_text())["stages"]["compile"]
    assert c["pending"] is False and (engine_bundle / "model.engine").is_file()
    e = c["engine"]
    assert e["tensorrt"] and e["gpu"] and e["compute_capability"] and e["path"].startswith("strongly typed")
    assert c["parity"]["top1_agreement"] == 1.0 and c["verified_on"]["runtime"] == "tensorrt"


def test_engine_built_elsewhere_is_refused_in_one_line(engine_bundle, tmp_path):
    import shutil

    from edgeffnet.backends import tensorrt as trt_backend

    copy = tmp_path / "copy"
    shutil.copytree(engine_bundle, copy)
    facts = json.loads((copy / "model.engine.json").read_text())
    (copy / "model.engine.json").write_text(
        json.dumps({**facts, "tensorrt": "8.2.1", "gpu": "NVIDIA Tegra X1", "compute_capability": "5.3"})
    )
    (copy / "model.engine").write_bytes(b"a plan from elsewhere")
    with pytest.raises(UserError, match=r"built for TensorRT 8\.2\.1 on NVIDIA Tegra X1 \(sm_53\)"):
        trt_backend.load(copy, targets.load("gpu"), "fp16")


def test_compile_command_rebuilds_and_verifies_the_engine(env, engine_bundle):
    r = edgeffnet(env, "compile", str(engine_bundle))
    assert r.returncode == 0, r.stderr
    c = json.loads((engine_bundle / "manifest.json").read_text())["stages"]["compile"]
    assert c["finished_by"] == "edgeffnet compile" and c["parity"]["top1_agreement"] == 1.0
