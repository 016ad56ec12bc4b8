"""The backend contract and its boundary: a runner exposes extra outputs (RunSettings.outputs ->
run_outputs), nothing outside a runtime's folder imports that runtime, and the CPU's flags are read once."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import edgeffnet
from edgeffnet import backends
from edgeffnet.backends import FEATURES, RunSettings
from edgeffnet.backends import onnxruntime as ort_backend
from edgeffnet.backends.openvino import encoding
from edgeffnet.core import host
from edgeffnet.core.errors import UserError
from edgeffnet.workflows import cam

SPEC = "b0,res=64"
PACKAGE = Path(edgeffnet.__file__).resolve().parent


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("contract")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEFFNET_CACHE", str(root / "cache"))
        return {
            "fp32": edgeffnet.build(SPEC, output=root / "fp32", views=2),
            "int8": edgeffnet.build(
                SPEC, precision="int8", output=root / "int8", views=2, calib_size=32, fidelity_views=16
            ),
        }


@pytest.fixture(scope="module")
def feature_shape() -> tuple[int, ...]:
    """What the network's final global pooling reads, from PyTorch: (1, C, h, w)."""
    with torch.inference_mode():
        return tuple(edgeffnet.create_model(SPEC).features(torch.zeros(1, 3, 64, 64)).shape)


def _x(bundle) -> np.ndarray:
    return bundle.reference()[0][:1]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_extra_outputs_keep_the_logits_and_add_the_feature_map(bundles, feature_shape, runtime, precision):
    bundle = bundles[precision]
    backend = backends.get(runtime)
    plain = backend.load(bundle.path, bundle.target, precision, RunSettings(cpu_fallback=True))
    tapped = backend.load(bundle.path, bundle.target, precision, RunSettings(cpu_fallback=True, outputs=(FEATURES,)))
    assert isinstance(tapped, backends.OutputsRunner)
    x = _x(bundle)
    logits, named = tapped.run_outputs(x)
    assert list(named) == [FEATURES] and named[FEATURES].shape == feature_shape
    assert named[FEATURES].dtype == np.float32 and np.isfinite(named[FEATURES]).all()
    assert tapped.output_tensors[FEATURES]  # the tensor it resolved to, for the record
    np.testing.assert_allclose(logits, tapped.run(x), rtol=0, atol=1e-6)
    ref = plain.run(x)
    np.testing.assert_allclose(logits, ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    assert plain.run_outputs(x)[1] == {}  # nothing asked, nothing extra


def test_the_feature_map_is_what_the_classifier_pools(bundles):
    """FP32: the exposed tensor's spatial mean through the classifier gives the logits, so it is the map a
    class activation map needs, not some other pooled tensor (a squeeze-excitation's)."""
    bundle = bundles["fp32"]
    runner = backends.get("openvino").load(bundle.path, bundle.target, "fp32", RunSettings(outputs=(FEATURES,)))
    logits, named = runner.run_outputs(_x(bundle))
    w, b = cam._classifier(onnx.load(str(bundle.path / "model.sim.onnx")).graph)
    pooled = named[FEATURES].mean(axis=(2, 3))
    np.testing.assert_allclose(pooled @ w.T + b, logits, rtol=0, atol=1e-4 * max(1.0, float(np.abs(logits).max())))


def test_ort_exposes_a_graph_tensor_by_name_and_refuses_an_unknown_one(bundles):
    graph = bundles["fp32"].path / "model.sim.onnx"
    model = onnx.load(str(graph))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    runner = ort_backend.Runner(graph, literal=True, outputs=(conv.output[0], FEATURES))
    x = _x(bundles["fp32"])
    _, named = runner.run_outputs(x)
    assert list(named) == [conv.output[0], FEATURES]
    assert named[conv.output[0]].shape[:2] == (
        1,
        onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == conv.input[1])).shape[0],
    )
    assert runner.path == graph  # describe() still names the graph it runs
    with pytest.raises(UserError, match="no tensor 'nowhere'"):
        ort_backend.Runner(graph, outputs=("nowhere",))


@pytest.mark.parametrize("runtime", ["tensorrt", "pytorch"])
def test_runtimes_without_extra_outputs_refuse_them(bundles, runtime):
    bundle = bundles["fp32"]
    with pytest.raises(UserError, match="output"):
        backends.get(runtime).load(bundle.path, bundle.target, "fp32", RunSettings(outputs=(FEATURES,)))


# -- the boundary ----------------------------------------------------------------------------------

# Each runtime may be imported only inside its own backend.
HOME = {"onnxruntime": "backends/onnxruntime.py", "openvino": "backends/openvino/", "tensorrt": "backends/tensorrt/"}
# Calls that compile or load with a runtime (ov.Core's, ONNX Runtime's, TensorRT's): only backends make them.
LOADING_CALLS = {"InferenceSession", "compile_model", "read_model", "convert_model", "deserialize_cuda_engine", "Core"}
# What may reach around the contract, and why: (file, runtime or call). Each entry would be work to do,
# not a permission; the test fails when an entry is no longer needed, so the list only shrinks.
ALLOWED: set[tuple[str, str]] = set()  # nothing reaches around the contract


def _runtime(module: str | None) -> str | None:
    top = (module or "").split(".")[0]
    return top if top in HOME else None


def _reaches(tree: ast.AST) -> set[str]:
    """Runtimes this module imports (statements, importlib calls) and loading calls it makes."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {r for a in node.names if (r := _runtime(a.name))}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (r := _runtime(node.module)):
            found.add(r)
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name in LOADING_CALLS:
                found.add(name)
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                if r := _runtime(str(node.args[0].value)):
                    found.add(r)
    return found


def _outside_home(rel: str, what: str) -> bool:
    if what in HOME:
        return not rel.startswith(HOME[what])
    return not rel.startswith("backends/")


def test_no_runtime_is_used_outside_its_backend():
    seen = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for what in _reaches(ast.parse(path.read_text(), rel)):
            if _outside_home(rel, what):
                seen.add((rel, what))
    assert seen - ALLOWED == set(), "use the backend contract (edgeffnet.backends) instead"
    assert ALLOWED - seen == set(), "no longer needed: take it off the allow-list"


def test_the_scan_sees_each_way_of_reaching_a_runtime():
    code = (
        "import openvino as ov\nfrom tensorrt import Logger\nimport importlib\n"
        "importlib.import_module('onnxruntime.tools')\nov.Core().compile_model(m, 'CPU')\n"
    )
    assert _reaches(ast.parse(code)) == {"openvino", "tensorrt", "onnxruntime", "Core", "compile_model"}
    assert _reaches(ast.parse("from .backends import onnxruntime as ort_backend\nimport onnx\n")) == set()


# -- the CPU's flags ---------------------------------------------------------------------------------


@pytest.fixture
def fake_cpuinfo(monkeypatch):
    """host._cpuinfo replaced by a text that counts its reads; host's caches cleared before and after."""
    reads = []

    def use(text: str) -> list:
        monkeypatch.setattr(host, "_cpuinfo", lambda: reads.append(1) or text)
        return reads

    host.cpu_flags.cache_clear()
    host.cpu.cache_clear()
    yield use
    host.cpu_flags.cache_clear()
    host.cpu.cache_clear()


def test_cpu_flags_are_read_once_and_every_isa_rule_asks_host(fake_cpuinfo):
    reads = fake_cpuinfo("model name : test cpu\nflags : fpu avx2 fma\n")
    assert host.cpu_flags() == {"fpu", "avx2", "fma"}
    assert not encoding.has_vnni() and not encoding.has_vnni()  # AVX2 without VNNI, from host's flags
    assert host.cpu_flags() == {"fpu", "avx2", "fma"}
    assert len(reads) == 1
    assert host.cpu()["isa"] == ["avx2", "fma"]


@pytest.mark.parametrize(
    "text,vnni",
    [("flags : avx2 avx512_vnni\n", True), ("Features : fp asimd\n", True), ("", True), ("flags : avx avx2\n", False)],
)
def test_has_vnni_follows_hosts_flags(fake_cpuinfo, text, vnni):
    fake_cpuinfo(text)
    assert encoding.has_vnni() is vnni
