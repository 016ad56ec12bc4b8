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
    code = (
        "import sys\n"
        "for name in filter(None, sys.argv[1].split(',')):\n"
        "    sys.modules[name] = None\n"
        "sys.argv = ['edgeffnet', *sys.argv[2:]]\n"
        "from edgeffnet.cli import main\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)} | ({"EDGEFFNET_CACHE": str(cache)} if cache else {})
    return subprocess.run(
        [sys.executable, "-c", code, ",".join(missing), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines and lines[-1].startswith("edgeffnet: error:"), r.stderr
    return lines[-1]


# -- a device-side install without a runtime: one line naming the extra --------------------------------------


@pytest.mark.parametrize(
    "missing, args, extra",
    [
        (["onnxruntime"], ["bench", "{bundle}", "--baseline", "onnxruntime", *QUICK], "edgeffnet[onnxruntime]"),
        (["openvino"], ["bench", "{bundle}", *QUICK], "edgeffnet[openvino]"),
        (["openvino"], ["predict", "{bundle}", "{photo}"], "edgeffnet[openvino]"),
        (["torch"], ["bench", "{bundle}", "--baseline", "pytorch", *QUICK], "edgeffnet[build]"),
        (["ray"], ["farm", "join", "127.0.0.1:1", "--target", "cpu"], "edgeffnet[farm]"),
    ],
)
def test_a_missing_runtime_is_one_line_naming_its_extra(cpu_bundle, tmp_path, missing, args, extra):
    from edgeffnet.network.photos import load_photo

    load_photo("skimage:chelsea").save(tmp_path / "cat.png")
    args = [a.format(bundle=cpu_bundle, photo=tmp_path / "cat.png") for a in args]
    line = one_line_error(cli_without(missing, *args, cwd=tmp_path))
    assert extra in line and missing[0] in line.lower(), line


def test_the_backend_loader_names_the_extra_and_keeps_a_bug_a_traceback(monkeypatch):
    from edgeffnet import backends
    from edgeffnet.core.errors import UserError

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


@pytest.mark.parametrize(
    "args, words",
    [
        (["build", "b9"], "unknown model 'b9' (did you mean 'b7'?)"),
        (["build", "b0", "--target", "jetsonnano"], "unknown target 'jetsonnano' (did you mean 'jetson-nano'?)"),
        (
            ["build", "b0", "--weights", "pretrianed"],
            "--weights 'pretrianed' does not exist (did you mean 'pretrained'?)",
        ),
        (["build", "b0", "-p", "fp61"], "(did you mean 'fp16'?)"),
        (
            ["build", "b0", "--target", "jetson-nano", "-p", "int8"],
            "supports fp32, fp16, not int8; pass --precision fp16",
        ),
        (["sweep", "-m", "b0", "-p", "fp23", "--target", "cpu"], "not fp23 (did you mean 'fp32'?)"),
    ],
)
def test_an_option_error_comes_before_pytorch_is_imported_and_suggests_the_near_name(tmp_path, args, words):
    # Importing torch fails in this process: the error below can only come from checks made before it.
    line = one_line_error(cli_without(["torch"], *args, "-o", str(tmp_path / "out"), cwd=tmp_path))
    assert words in line, line
    assert not (tmp_path / "out").exists()


def test_did_you_mean_offers_only_a_close_name():
    from edgeffnet.core.suggest import did_you_mean

    assert did_you_mean("pretrianed", ["pretrained"]) == " (did you mean 'pretrained'?)"
    assert (
        did_you_mean("jetson-orin", ["cpu", "jetson-nano", "jetson-orin-nano"]) == " (did you mean 'jetson-orin-nano'?)"
    )
    assert did_you_mean("checkpoint.pth", ["pretrained"]) == ""


# -- what the profile refuses from the options alone: before the first stage, exit 2 -------------------------


def test_an_opset_the_profile_cannot_read_is_refused_before_the_first_stage(cache_dir, tmp_path):
    r = cli_without(
        [],
        "build",
        "b1",
        "--target",
        "jetson-nano",
        "--opset",
        "17",
        "-o",
        str(tmp_path / "b"),
        cwd=tmp_path,
        cache=cache_dir,
    )
    line = one_line_error(r)
    assert "target 'jetson-nano'" in line and "opset 17 is above 13" in line and "--opset 13" in line, line
    assert len(r.stderr.strip().splitlines()) == 1  # no stage ran (each logs a line)
    assert not (tmp_path / "b").exists()


def test_every_tensorrt_profile_refuses_an_opset_past_its_parser_from_its_own_data():
    from edgeffnet.backends.tensorrt import option_problems
    from edgeffnet.backends.tensorrt.plan import parse_version
    from edgeffnet.backends.tensorrt.rules import max_opset
    from edgeffnet.pipeline.options import BuildOptions
    from edgeffnet.specs import targets

    profiles = [t for t in targets.known().values() if t.backend == "tensorrt"]
    assert profiles
    for t in profiles:
        limit = max_opset(parse_version(t.options["tensorrt"]))
        assert option_problems(t, t.default_precision, BuildOptions(opset=limit)) == []
        (problem,) = option_problems(t, t.default_precision, BuildOptions(opset=limit + 1))
        assert f"opset {limit + 1} is above {limit}" in problem
        if "int8" in t.precisions:
            assert any("opset 13" in p for p in option_problems(t, "int8", BuildOptions(opset=12)))


# -- the Jetson bundle: what the device needs, no path of the build machine, a README that says it all -------


@pytest.fixture(scope="module")
def jetson_bundle(cache_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("jetson") / "orin"
    r = cli_without(
        [],
        "build",
        "lite0,res=64",
        "--target",
        "jetson-orin-nano",
        "-p",
        "fp16",
        "--views",
        "2",
        "-o",
        str(out),
        cwd=out.parent,
        cache=cache_dir,
    )
    assert r.returncode == 0, r.stderr
    return out, r


def test_a_tensorrt_bundle_keeps_what_the_device_needs_and_says_what_it_left_out(jetson_bundle):
    out, r = jetson_bundle
    m = json.loads((out / "manifest.json").read_text())
    assert m["graph"] == "model.fp16.onnx" and (out / "model.fp16.onnx").is_file()
    assert not (out / "model.onnx").exists() and not (out / "model.sim.onnx").exists()
    assert m["left_out"]["files"] == ["model.onnx", "model.sim.onnx"] and "stage cache" in m["left_out"]["why"]
    assert sorted(p.name for p in out.iterdir()) == sorted(m["files"])
    readme = (out / "README.md").read_text()
    assert "`model.onnx`, `model.sim.onnx`" in readme and "seeded random" in readme
    assert "/usr/src/tensorrt/bin/trtexec" in readme and '"$TRTEXEC" --onnx=model.fp16.onnx' in readme
    assert "left out of the bundle: model.onnx, model.sim.onnx" in r.stderr


def test_the_trtexec_lines_run_where_trtexec_is_off_path(jetson_bundle, tmp_path):
    """The README's two lines, run by sh with a stand-in trtexec only at JetPack's place (via TRTEXEC's
    default, redirected here) and none on PATH: the stand-in is what runs, with the graph's name."""
    out, _ = jetson_bundle
    lines = [
        ln.strip() for ln in (out / "README.md").read_text().splitlines() if "TRTEXEC" in ln and ln.startswith("    ")
    ]
    assert len(lines) == 2
    fake = tmp_path / "trtexec"
    fake.write_text('#!/bin/sh\necho "ran $0 $1"\n')
    fake.chmod(0o755)
    script = "\n".join(lines).replace("/usr/src/tensorrt/bin/trtexec", str(fake))
    r = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, cwd=out, timeout=30, env={"PATH": "/usr/bin:/bin"}
    )
    assert r.returncode == 0 and r.stdout.strip() == f"ran {fake} --onnx=model.fp16.onnx", r.stdout + r.stderr


def test_the_manifest_names_the_profile_without_a_path_of_the_build_machine(jetson_bundle):
    import hashlib

    from edgeffnet.specs import targets

    out, _ = jetson_bundle
    text = (out / "manifest.json").read_text()
    t = json.loads(text)["target"]
    profile = targets.load("jetson-orin-nano")
    assert t["profile"] == "jetson-orin-nano.toml"
    assert t["profile_sha256"] == hashlib.sha256(Path(profile.path).read_bytes()).hexdigest()
    assert str(Path(profile.path).parent) not in text and str(REPO) not in text


@pytest.mark.parametrize(
    "args, words",
    [
        (["bench", "{b}", *QUICK], "no TensorRT engine yet"),
        (["predict", "{b}", "{photo}"], "no TensorRT engine yet"),
        (["compile", "{b}"], "/usr/src/tensorrt/bin/trtexec"),
        (["eval", "{b}", "--data", "{photos}"], "FP32 graph model.sim.onnx"),
        (["cam", "{b}", "{photo}", "-o", "{tmp}/cam"], "FP32 graph model.sim.onnx"),
    ],
)
def test_every_reader_of_a_tensorrt_bundle_without_the_fp32_graphs_answers_in_one_line(
    jetson_bundle, tmp_path, args, words
):
    from edgeffnet.network.photos import load_photo

    out, _ = jetson_bundle
    (tmp_path / "photos").mkdir()
    load_photo("skimage:chelsea").save(tmp_path / "photos" / "cat.png")
    args = [
        a.format(b=out, photo=tmp_path / "photos" / "cat.png", photos=tmp_path / "photos", tmp=tmp_path) for a in args
    ]
    line = one_line_error(cli_without([], *args, cwd=tmp_path))
    assert words in line, line


# -- a long stage is never silent on a non-terminal output ---------------------------------------------------


def test_a_long_step_says_it_is_alive_on_a_console_that_is_not_a_terminal():
    import io
    import time

    from edgeffnet.core import logs

    log = logs.logger()
    piped, terminal = io.StringIO(), io.StringIO()
    terminal.isatty = lambda: True
    handlers = [logs.console_handler(piped), logs.console_handler(terminal)]
    for h in handlers:
        log.addHandler(h)
    try:
        with logs.heartbeat("stage precision", every=0.05):
            time.sleep(0.3)
        after = piped.getvalue()
        time.sleep(0.15)
    finally:
        for h in handlers:
            log.removeHandler(h)
    beats = after.splitlines()
    assert len(beats) >= 3 and all(b.startswith("stage precision: still running (") for b in beats), beats
    assert piped.getvalue() == after  # it stops with the block
    assert terminal.getvalue() == ""  # a terminal is left to its progress bars


# -- the report: figures a user cannot misread ---------------------------------------------------------------


def _records(tmp_path, *args, **kw):
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from test_report import record  # the report tests' synthetic bench record
    finally:
        sys.path.remove(str(REPO / "tests"))
    return record(tmp_path, *args, **kw)


def test_the_fidelity_cell_is_the_benched_artifacts_figure_with_the_bundles_worst_beside_it(tmp_path, monkeypatch):
    from edgeffnet.measure import report
    from edgeffnet.measure.report import fidelity

    rec = _records(tmp_path, "lite0", "int8")
    row = {"views": 200, "top5_overlap": 0.99, "confident_views": 142}
    qdq = row | {
        "artifact": "Q/DQ ONNX (onnxruntime)",
        "top1_agreement": 0.965,
        "cosine_mean": 0.997,
        "confident_top1_agreement": 0.986,
    }
    ir = row | {
        "artifact": "openvino CPU artifact",
        "top1_agreement": 0.99,
        "cosine_mean": 0.998,
        "confident_top1_agreement": 0.993,
    }
    # The bundle's manifest as the report reads it (a whole manifest is checked field by field on reading;
    # only its fidelity rows matter here).
    manifest = {"fidelity": {"rows": [qdq, ir]}, "stages": {"compile": {"fidelity": ir}}}
    # patched where the row's fidelity reads it
    monkeypatch.setattr(fidelity, "_manifest", lambda bundle_dir: manifest if bundle_dir == rec["bundle"] else {})
    cell = report.rows([rec])[0]["fidelity"]
    assert cell.startswith("openvino CPU artifact: agreement 99.0% (99.3% of 142 confident), cosine 0.998"), cell
    assert cell.endswith("bundle's worst: Q/DQ ONNX (onnxruntime) 96.5% (98.6% of 142 confident)"), cell
    assert report.rows([rec])[0]["top1_agreement"] == 0.99  # the numbers are the artifact's too


def test_the_machines_table_gives_each_precision_its_own_peak(tmp_path):
    from edgeffnet.measure import report

    fp32, int8 = _records(tmp_path, "b0", "fp32"), _records(tmp_path, "b0", "int8")
    fp32["peak"] = {"gflops": 96.0, "detail": "2 cores x 1.500 GHz x 32 FLOP/cycle (avx2 fma)"}
    int8["peak"] = {"gflops": 384.0, "detail": "2 cores x 1.500 GHz x 128 FLOP/cycle (avx2 fma, int8 x4)"}
    (machine,) = report.machines([fp32, int8])
    assert machine["peak"] == (
        "fp32: 2 cores x 1.500 GHz x 32 FLOP/cycle (avx2 fma); "
        "int8: 2 cores x 1.500 GHz x 128 FLOP/cycle (avx2 fma, int8 x4)"
    )


def test_nearly_equal_flops_share_a_tick_and_a_series_keeps_its_colour_in_both_plots(tmp_path):
    from edgeffnet.measure import report

    assert report.merged_ticks([0.772, 0.770, 1.4, 0.39]) == [0.39, 0.77, 1.4]
    recs = [
        _records(tmp_path, s, p, mode=m)
        for s in ("b0", "lite0", "b1")
        for p in ("fp32", "int8")
        for m in ("latency", "throughput")
    ]
    recs = [r for r in recs if not (r["mode"] == "throughput" and r["precision"] == "fp32")]  # fewer series there
    table = report.rows(recs)
    palette = report.colours(r["series"] for r in table)
    lat, tput = report.fits(table, "p50", "latency"), report.fits(table, "throughput_ips", "throughput")
    assert [f["series"] for f in tput if f["points"]] != [f["series"] for f in lat if f["points"]]
    seen = {}
    for fits, y in ((lat, "p50"), (tput, "throughput_ips")):
        fig = report.figure(fits, y, y, y, palette)
        ax = fig.axes[0]
        for line in ax.get_lines():
            if line.get_label() and not line.get_label().startswith("_"):
                name = line.get_label().split(" (slope")[0]
                seen.setdefault(name, set()).add(line.get_color())
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert not [a for a, b in zip(labels, labels[1:]) if abs(float(a) / float(b) - 1) < 0.05], labels
    assert all(len(c) == 1 for c in seen.values()) and len(seen) >= 3, seen


def test_the_device_cell_is_short_and_the_console_table_cuts_no_mode(tmp_path):
    import io

    from rich.console import Console

    from edgeffnet.measure import report

    recs = [_records(tmp_path, "b0", "fp32", mode=m) for m in ("latency", "throughput")]
    for r in recs:
        r["device"]["name"] = "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    rep = report.write(recs, tmp_path / "out")
    assert {r["device"] for r in rep["rows"]} == {"Intel Xeon Platinum 8481C (CPU)"}
    assert "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz" in (tmp_path / "out" / "report.md").read_text()  # Machines
    buf = io.StringIO()
    Console(file=buf, width=80, force_terminal=False).print(report.console_table(rep))
    text = buf.getvalue()
    assert " latency " in text and " throughput " in text, text


def test_baseline_records_join_a_report_only_when_asked_for(tmp_path):
    from edgeffnet.core.errors import UserError
    from edgeffnet.measure import report

    own = _records(tmp_path, "b0", "int8")
    base = _records(tmp_path, "b0", "int8", runtime="onnxruntime")
    assert base["baseline"] and not own["baseline"]
    from edgeffnet.measure import records

    for r in (own, base):
        records.save(Path(r["bundle"]), records.Record.from_dict(r))
    bundles = tmp_path / "bundles"
    assert {r["runtime"] for r in report.collect([bundles])} == {"openvino"}
    assert {r["runtime"] for r in report.collect([bundles], baselines=["onnxruntime"])} == {"openvino", "onnxruntime"}
    assert {r["runtime"] for r in report.collect([bundles], baselines=True)} == {"openvino", "onnxruntime"}
    (Path(own["bundle"]) / "bench" / "openvino-latency.json").unlink()
    with pytest.raises(UserError, match="only baseline records, onnxruntime: add --baselines"):
        report.collect([bundles])


def test_a_sweep_lists_every_report_file_and_keeps_a_later_bench_baseline_out(cache_dir, tmp_path):
    args = ["sweep", "--spec", "b0,res=64", "-p", "fp32", "--weights", "random", *QUICK, "-o", str(tmp_path / "s")]
    r = cli_without([], *args, cwd=tmp_path, cache=cache_dir)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("report: "))
    files = line.removeprefix("report: ").split(", ")
    assert {Path(f).name for f in files} >= {
        "report.html",
        "report.md",
        "report.csv",
        "report.json",
        "latency_vs_flops.png",
        "throughput_vs_flops.png",
    }
    assert all(Path(f).is_file() for f in files)
    (bundle,) = (tmp_path / "s" / "bundles").iterdir()
    assert cli_without([], "bench", str(bundle), "--baseline", "onnxruntime", *QUICK, cwd=tmp_path).returncode == 0
    r = cli_without([], *args, cwd=tmp_path, cache=cache_dir)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "s" / "report.json").read_text())["rows"]
    assert {row["runtime"] for row in rows} == {"openvino"}


# -- INT8 time: no run whose figures are already known ------------------------------------------------------


def test_the_method_choice_runs_each_graph_once_and_reuses_a_given_fp32_reference(monkeypatch):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edgeffnet.precision import int8

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1] * 4),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["logits"], name="flat"),
        ],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.normal(0, 1, (8, 3, 8, 8)).astype(np.float32)
    stats, _ = int8.statistics(model, x, "test", use_cache=False)
    runs = []
    real = int8._Evaluator._run
    monkeypatch.setattr(int8._Evaluator, "_run", staticmethod(lambda m, v: (runs.append(m), real(m, v))[1]))

    result = int8.quantize_model(model, stats, x, None, sensitivity=False)
    assert len(runs) == 1 + len(int8.METHODS)  # FP32 once, each method's graph once, the chosen one not again
    assert result.tuning["cosine_mean"] == result.method_scores[result.method]["cosine_mean"]
    runs.clear()
    ref = real(model, x)
    again = int8.quantize_model(model, stats, x, None, sensitivity=False, tuning_ref=ref)
    assert len(runs) == len(int8.METHODS) and again.method_scores == result.method_scores


def test_nncf_calibrates_on_at_most_its_sample_count_spread_over_the_set(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import nncf
    import numpy as np
    import openvino as ov

    from edgeffnet.pipeline import int8_routes

    (tmp_path / "model.sim.onnx").write_bytes(b"graph")
    data = np.arange(300, dtype=np.float32).reshape(300, 1, 1, 1)  # view i holds the value i
    ctx = SimpleNamespace(dir=tmp_path, fixed_batch=1, calibration=SimpleNamespace(data=data))
    seen = {}

    def quantize(model, dataset, subset_size):
        seen["values"] = [float(s.ravel()[0]) for s in dataset.get_inference_data()]
        seen["subset_size"] = subset_size
        return model

    monkeypatch.setattr(nncf, "quantize", quantize)
    monkeypatch.setattr(ov, "convert_model", lambda source: "fp32 model")
    monkeypatch.setattr(ov, "save_model", lambda model, path, compress_to_fp16: None)
    int8_routes._nncf_ir(ctx, tmp_path / "model.xml")
    values = seen["values"]
    assert len(values) == seen["subset_size"] == int8_routes.NNCF_SAMPLES
    assert values[0] == 0 and values[-1] >= 290 and values == sorted(values)  # spread over the whole set
