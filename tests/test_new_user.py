"""What a new user meets first (issue 21): a device-side install missing a runtime, option errors, the
profile's refusals before any work, and the TensorRT bundle a Jetson receives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgeffnet

REPO = Path(__file__).resolve().parents[1]
QUICK = ["-n", "2", "-s", "0", "--warmup", "0"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def cpu_bundle(cache_dir, tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEFFNET_CACHE", str(cache_dir))
        return edgeffnet.build("lite0,res=64", output=tmp_path_factory.mktemp("cpu") / "lite0", views=2).path


def cli_without(missing: list[str], *args: str, cwd: Path, cache: Path | None = None) -> subprocess.CompletedProcess:
    """`edgeffnet ARGS` in a fresh process where importing each of `missing` fails, as on an install
    without that runtime (None in sys.modules makes `import name` raise ModuleNotFoundError)."""
    code = ("import sys\n"
            "for name in filter(None, sys.argv[1].split(',')):\n"
            "    sys.modules[name] = None\n"
            "sys.argv = ['edgeffnet', *sys.argv[2:]]\n"
            "from edgeffnet.cli import main\n"
            "main()\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)} | ({"EDGEFFNET_CACHE": str(cache)} if cache else {})
    return subprocess.run([sys.executable, "-c", code, ",".join(missing), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines and lines[-1].startswith("edgeffnet: error:"), r.stderr
    return lines[-1]


# -- a device-side install without a runtime: one line naming the extra --------------------------------------


@pytest.mark.parametrize("missing, args, extra", [
    (["onnxruntime"], ["bench", "{bundle}", "--baseline", "onnxruntime", *QUICK], "edgeffnet[onnxruntime]"),
    (["openvino"], ["bench", "{bundle}", *QUICK], "edgeffnet[openvino]"),
    (["openvino"], ["predict", "{bundle}", "{photo}"], "edgeffnet[openvino]"),
    (["torch"], ["bench", "{bundle}", "--baseline", "pytorch", *QUICK], "edgeffnet[build]"),
    (["ray"], ["farm", "join", "127.0.0.1:1", "--target", "cpu"], "edgeffnet[farm]"),
])
def test_a_missing_runtime_is_one_line_naming_its_extra(cpu_bundle, tmp_path, missing, args, extra):
    from edgeffnet.photos import load_photo

    load_photo("skimage:chelsea").save(tmp_path / "cat.png")
    args = [a.format(bundle=cpu_bundle, photo=tmp_path / "cat.png") for a in args]
    line = one_line_error(cli_without(missing, *args, cwd=tmp_path))
    assert extra in line and missing[0] in line.lower(), line


def test_the_backend_loader_names_the_extra_and_keeps_a_bug_a_traceback(monkeypatch):
    from edgeffnet import backends
    from edgeffnet.errors import UserError

    monkeypatch.delitem(sys.modules, "edgeffnet.backends.onnxruntime", raising=False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"the onnxruntime backend needs onnxruntime, .*edgeffnet\[onnxruntime\]"):
        backends.get("onnxruntime")

    def broken(name):
        raise ModuleNotFoundError("No module named 'edgeffnet.backends.typo'", name="edgeffnet.backends.typo")

    monkeypatch.setattr(backends.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError):  # not an optional runtime: a bug, which keeps its traceback
        backends.get("openvino")


def test_a_report_without_matplotlib_writes_its_tables_and_says_which_extra_draws_plots(cpu_bundle, tmp_path):
    r = cli_without([], "bench", str(cpu_bundle), *QUICK, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli_without(["matplotlib"], "report", str(cpu_bundle), "-o", str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "edgeffnet[report]" in r.stderr and (tmp_path / "rep" / "report.csv").is_file()
    assert not list((tmp_path / "rep").glob("*.png"))


# -- option errors: answered before the build side is imported, with a suggestion for a near miss -----------


@pytest.mark.parametrize("args, words", [
    (["build", "b9"], "unknown model 'b9' (did you mean 'b7'?)"),
    (["build", "b0", "--target", "jetsonnano"], "unknown target 'jetsonnano' (did you mean 'jetson-nano'?)"),
    (["build", "b0", "--weights", "pretrianed"], "--weights 'pretrianed' does not exist (did you mean 'pretrained'?)"),
    (["build", "b0", "-p", "fp61"], "(did you mean 'fp16'?)"),
    (["build", "b0", "--target", "jetson-nano", "-p", "int8"], "supports fp32, fp16, not int8; pass --precision fp16"),
    (["sweep", "-m", "b0", "-p", "fp23", "--target", "cpu"], "not fp23 (did you mean 'fp32'?)"),
])
def test_an_option_error_comes_before_pytorch_is_imported_and_suggests_the_near_name(tmp_path, args, words):
    # Importing torch fails in this process: the error below can only come from checks made before it.
    line = one_line_error(cli_without(["torch"], *args, "-o", str(tmp_path / "out"), cwd=tmp_path))
    assert words in line, line
    assert not (tmp_path / "out").exists()


def test_did_you_mean_offers_only_a_close_name():
    from edgeffnet.suggest import did_you_mean

    assert did_you_mean("pretrianed", ["pretrained"]) == " (did you mean 'pretrained'?)"
    assert did_you_mean("jetson-orin", ["cpu", "jetson-nano", "jetson-orin-nano"]) == " (did you mean 'jetson-orin-nano'?)"
    assert did_you_mean("checkpoint.pth", ["pretrained"]) == ""


# -- what the profile refuses from the options alone: before the first stage, exit 2 -------------------------


def test_an_opset_the_profile_cannot_read_is_refused_before_the_first_stage(cache_dir, tmp_path):
    r = cli_without([], "build", "b1", "--target", "jetson-nano", "--opset", "17", "-o", str(tmp_path / "b"),
                    cwd=tmp_path, cache=cache_dir)
    line = one_line_error(r)
    assert "target 'jetson-nano'" in line and "opset 17 is above 13" in line and "--opset 13" in line, line
    assert len(r.stderr.strip().splitlines()) == 1  # no stage ran (each logs a line)
    assert not (tmp_path / "b").exists()


def test_every_tensorrt_profile_refuses_an_opset_past_its_parser_from_its_own_data():
    from edgeffnet import targets
    from edgeffnet.backends.tensorrt import option_problems
    from edgeffnet.backends.tensorrt.plan import parse_version
    from edgeffnet.backends.tensorrt.rules import max_opset
    from edgeffnet.pipeline.options import BuildOptions

    profiles = [t for t in targets.known().values() if t.backend == "tensorrt"]
    assert profiles
    for t in profiles:
        limit = max_opset(parse_version(t.options["tensorrt"]))
        assert option_problems(t, t.default_precision, BuildOptions(opset=limit)) == []
        (problem,) = option_problems(t, t.default_precision, BuildOptions(opset=limit + 1))
        assert f"opset {limit + 1} is above {limit}" in problem
        if "int8" in t.precisions:
            assert any("opset 13" in p for p in option_problems(t, "int8", BuildOptions(opset=12)))
