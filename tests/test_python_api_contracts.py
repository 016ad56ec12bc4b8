"""The house: the Python API, the backend contract, the typed options, the shared helpers, and the
bundle side that imports no PyTorch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

import edgeffnet
from edgeffnet import backends
from edgeffnet.backends import AsyncQueue, Runner
from edgeffnet.bundle import Bundle, Manifest
from edgeffnet.core import files
from edgeffnet.core.errors import UserError
from edgeffnet.core.verify import run_batched
from edgeffnet.graph.onnx_index import GraphIndex
from edgeffnet.measure.records import Record
from edgeffnet.pipeline.options import BuildOptions

SPEC = "b0,res=64"
HEAVY = ("torch", "onnxsim", "nncf", "onnx")


def _modules_after(code: str) -> set[str]:
    """Which of HEAVY a fresh interpreter has imported after running `code`."""
    probe = f"import sys\n{code}\nprint('MODULES:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("MODULES:"))
    return set(filter(None, line.removeprefix("MODULES:").split(",")))


def test_import_edgeffnet_leaves_torch_out():
    assert _modules_after("import edgeffnet") == set()


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["targets"],
        ["bench", "--help"],
        ["predict", "--help"],
        ["report", "--help"],
        ["compile", "--help"],
        ["build", "--help"],
    ],
)
def test_bundle_side_commands_import_no_build_side(args):
    code = (
        f"from edgeffnet.cli import cli\ntry:\n    cli({args!r}, standalone_mode=False)\nexcept SystemExit:\n    pass"
    )
    assert _modules_after(code) == set()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("house")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEFFNET_CACHE", str(root / "cache"))
        return edgeffnet.build(SPEC, output=root / "b0", views=2)


def test_build_returns_a_bundle_that_runs(built):
    assert isinstance(built, Bundle) and built.precision == "fp32" and built.target.name == "cpu"
    again = Bundle.open(built.path)
    assert again.manifest == built.manifest and isinstance(again.manifest, Manifest)
    assert again.manifest.spec["spec"] == SPEC and again.manifest.stages["compile"]["artifact"] == "model.xml"
    runner = again.runner()
    assert isinstance(runner, Runner)
    x, ref = again.reference()
    np.testing.assert_allclose(run_batched(runner.run, x, again.manifest.input["batch"]), ref, atol=1e-4)
    assert "Bundle(" in repr(again)


def test_manifest_round_trips_and_old_formats_get_one_line(built, tmp_path):
    d = json.loads((built.path / "manifest.json").read_text())
    assert Manifest.from_dict(d).to_dict() == d  # the JSON on disk reads back to the same JSON
    with pytest.raises(UserError, match="bundle format 0.*rebuild"):
        Manifest.from_dict(d | {"bundle_format": 0})
    broken = {k: v for k, v in d.items() if k != "macs"}
    with pytest.raises(UserError, match="lacks macs.*rebuild"):
        Manifest.from_dict(broken)
    later = Manifest.from_dict(d | {"eval": {"top1": 0.7}})  # a key a later edgeffnet adds is kept
    assert later.to_dict()["eval"] == {"top1": 0.7}


def test_bench_api_returns_a_record(built):
    rec = edgeffnet.bench(built, iterations=3, seconds=0, warmup=0, save=False)
    assert isinstance(rec, Record) and rec.mode == "latency" and rec.stats["count"] >= 3
    assert rec.p50_ms <= rec.p90_ms <= rec.p99_ms and rec.p50_ms > 0 and rec.images_per_s > 0
    assert Record.from_dict(rec.to_dict()) == rec and not (built.path / "bench").exists()
    tput = edgeffnet.bench(built.path, mode="throughput", iterations=4, seconds=0, warmup=0, save=False)
    assert tput.settings["requests"] >= 1 and tput.images_per_s > 0
    with pytest.raises(UserError, match="--seconds"):
        edgeffnet.bench(built, seconds=float("nan"))


def test_every_backend_has_both_roles_and_declares_its_queue(built):
    for name in backends.NAMES:
        module = backends.get(name)
        assert callable(module.compile) and callable(module.load), name
    x = built.reference()[0][:1]
    ov = built.runner(backends.RunSettings(hint="THROUGHPUT"))
    assert isinstance(ov.queue(x), AsyncQueue)
    ort = backends.get("onnxruntime").load(built.path, built.target, "fp32")
    assert isinstance(ort, Runner) and ort.queue(x) is None and ort.describe()["graph"] == "model.sim.onnx"
    with pytest.raises(UserError, match="unknown backend"):
        backends.get("tflite")


def test_options_hold_every_default_once_and_refuse_bad_values():
    o = BuildOptions()
    assert (o.opset, o.views, o.calib_size, o.min_agreement) == (13, 8, 300, 0.98)
    assert o.fidelity_view_count(trained=True) == 200 and o.fidelity_view_count(trained=False) == 48
    assert "calib" not in o.manifest_dict("fp32") and o.manifest_dict("int8")["calib_size"] == 300
    for bad in (
        dict(views=0),
        dict(batch=1.5),
        dict(min_agreement=float("nan")),
        dict(calib_size=-1),
        dict(calib_method="median"),
        dict(num_classes=0),
    ):
        with pytest.raises(UserError):
            BuildOptions(**bad)
    with pytest.raises(UserError, match="unknown build option 'view'"):
        BuildOptions.from_kwargs({"view": 3})


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    target = tmp_path / "a.json"
    files.atomic_write_json(target, {"x": 1})
    files.atomic_write_text(target, "replaced")
    assert target.read_text() == "replaced" and [p.name for p in tmp_path.iterdir()] == ["a.json"]

    class Boom(Exception):
        pass

    class Exploding:
        def encode(self):
            raise Boom

    with pytest.raises(Boom):
        files.atomic_write_text(target, Exploding())
    assert target.read_text() == "replaced" and len(list(tmp_path.iterdir())) == 1
    assert files.utc_now().endswith("+00:00")


def test_graph_index_finds_producers_readers_and_constants():
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    g = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["y"], name="mul"),
            helper.make_node("Relu", ["y"], ["z"], name="relu"),
            helper.make_node("Add", ["y", "z"], ["out"], name="add"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
        [w],
    )
    index = GraphIndex(helper.make_model(g))
    assert index.producer["y"].name == "mul" and [n.name for n in index.reader_nodes("y")] == ["relu", "add"]
    assert [(n.name, k) for n, k in index.readers["z"]] == [("add", 1)]
    assert index.array("w").tolist() == [1.0, 2.0] and index.rank("w") == 1 and index.outputs == {"out"}


def test_build_log_comes_from_the_logger(built):
    log = (built.path / "build.log").read_text()
    assert all(f"] {stage}" in log for stage in ("reference", "export", "simplify", "compile"))
    assert "bundle complete" in log


def test_cli_build_prints_the_path_and_logs_to_stderr(built, tmp_path):
    env = dict(os.environ, EDGEFFNET_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "cli"
    r = subprocess.run(
        [sys.executable, "-m", "edgeffnet.cli", "build", SPEC, "--views", "2", "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and "bundle complete" in r.stderr
