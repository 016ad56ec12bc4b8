"""The latency harness: statistics, the timing loops (on a fake clock), peaks, the record, and a real bundle."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from conftest import build_tiny

from edgeffnet import bundle
from edgeffnet.backends import AsyncQueue
from edgeffnet.backends.pytorch import Runner as PyTorchRunner
from edgeffnet.core.errors import UserError
from edgeffnet.measure import bench, peak, timing
from edgeffnet.measure.records import Record
from edgeffnet.measure.statistics import percentile, statistics

SPEC = "lite0,res=96"


# -- statistics --------------------------------------------------------------------------------------


def test_statistics_are_nearest_rank_observations():
    samples = [float(i) for i in range(1, 101)]
    random.Random(0).shuffle(samples)
    st = statistics(samples)
    assert (st["p50_ms"], st["p90_ms"], st["p99_ms"]) == (50.0, 90.0, 99.0)
    assert (st["min_ms"], st["max_ms"], st["count"]) == (1.0, 100.0, 100)
    assert st["mean_ms"] == pytest.approx(50.5)
    assert st["std_ms"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    ten = statistics([float(i) for i in range(10, 0, -1)])
    assert (ten["p50_ms"], ten["p90_ms"], ten["p99_ms"]) == (5.0, 9.0, 10.0)  # p99 of 10 samples is the maximum
    one = statistics([3.5])
    assert one["p50_ms"] == one["p99_ms"] == 3.5 and one["std_ms"] == 0.0


def test_percentile_matches_benchmark_app():
    from openvino.tools.benchmark.benchmark import percentile as ov_percentile

    rng = np.random.default_rng(1)
    for n in (1, 7, 100, 1001):
        values = sorted(rng.lognormal(size=n).tolist())
        for p in (50, 90, 99):
            assert percentile(values, p) == ov_percentile(values, p)


# -- the loops, on a fake clock -------------------------------------------------------------------------


class FakeClock:
    """Time moves only when the 'model' runs: every call takes exactly `ms` milliseconds."""

    def __init__(self, ms: float = 2.0, fail_at: int | None = None):
        self.now, self.ms, self.calls, self.fail_at = 0, ms, 0, fail_at

    def __call__(self) -> int:
        return self.now

    def run(self) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        self.now += int(self.ms * 1e6)


def test_measure_meets_both_the_iteration_and_the_duration_minimum():
    c = FakeClock(2.0)
    m = timing.measure(c.run, timing.Limits(5, 0.1, 0.01), clock=c)
    assert m.count == 50 and len(m.samples_ms) == 50  # 100 ms of 2 ms calls outlasts 5 iterations
    assert set(m.samples_ms) == {2.0} and m.seconds == pytest.approx(0.1)
    assert c.calls == 5 + 50  # 10 ms of warm-up first, untimed
    c = FakeClock(2.0)
    m = timing.measure(c.run, timing.Limits(30, 0.01, 0), clock=c)
    assert m.count == 30 and not m.interrupted


def test_ctrl_c_keeps_what_was_measured():
    c = FakeClock(1.0, fail_at=9)  # call 1 is the warm-up, calls 2..8 are timed, call 9 is interrupted
    m = timing.measure(c.run, timing.Limits(100, 0, 0), clock=c)
    assert m.interrupted and m.count == 7 and m.samples_ms == [1.0] * 7


def test_measure_async_counts_only_after_warmup_and_drains_on_ctrl_c():
    done: list[float] = []
    state = {"started": 0, "drained": 0}

    def start():
        state["started"] += 1
        done.append(4.0)

    def wait():
        state["drained"] += 1

    m = timing.measure_async(AsyncQueue(start, wait, done, 1), timing.Limits(20, 0, 0))
    assert m.count == 20 and m.samples_ms == [4.0] * 20 and state["started"] == 21 and state["drained"] == 2

    def start_then_stop():
        if len(done) == 5:
            raise KeyboardInterrupt
        done.append(4.0)

    done.clear()
    m = timing.measure_async(AsyncQueue(start_then_stop, wait, done, 1), timing.Limits(20, 0, 0))
    assert m.interrupted and m.count == 5  # one warm-up request, then five timed before Ctrl-C on the sixth


# -- peaks ---------------------------------------------------------------------------------------------


def _cpu(monkeypatch, isa, cores=4, usable=4, zen4=False):
    monkeypatch.setattr(
        peak.host,
        "cpu",
        lambda: {"model": "test", "physical_cores": cores, "usable_cpus": usable, "isa": isa, "mhz": 3000.0},
    )
    monkeypatch.setattr(peak, "_max_clock_ghz", lambda: (3.0, "test"))
    monkeypatch.setattr(peak, "_amd_zen4", lambda: zen4)


def test_host_peak_by_isa(monkeypatch):
    _cpu(monkeypatch, ["avx2", "fma", "avx512f", "avx512_vnni"])
    assert peak.host_peak("fp32")["gflops"] == 4 * 3.0 * 64
    assert peak.host_peak("int8")["gflops"] == 4 * 3.0 * 64 * 4
    assert peak.host_peak("fp16", "f32")["gflops"] == 4 * 3.0 * 64  # fp16 weights computed in f32
    assert peak.host_peak("fp16", "bf16")["gflops"] == 4 * 3.0 * 64  # no bf16 instructions on this CPU
    _cpu(monkeypatch, ["avx2", "fma", "avx512f", "avx512_bf16"], zen4=True)
    assert peak.host_peak("fp32")["gflops"] == 4 * 3.0 * 32  # Zen 4 splits 512-bit FMAs
    assert peak.host_peak("fp16", "bf16")["gflops"] == 4 * 3.0 * 64
    assert peak.host_peak("int8")["gflops"] == 4 * 3.0 * 32 * 2  # no VNNI
    _cpu(monkeypatch, ["avx2", "fma"], cores=8, usable=2)
    assert peak.host_peak("fp32")["gflops"] == 2 * 3.0 * 32  # only the cores this process may use
    _cpu(monkeypatch, ["asimd"])
    assert peak.host_peak("fp32")["gflops"] == 4 * 3.0 * 16


def test_hidden_boost_clock_is_bounded_by_a_measured_matrix_product(monkeypatch):
    _cpu(monkeypatch, ["avx2", "fma"])
    monkeypatch.setattr(peak, "_max_clock_ghz", lambda: (2.0, peak.CPUINFO_CLOCK))
    monkeypatch.setattr(peak, "_sgemm_gflops", lambda: 300.0)  # 2.34 GHz at 4 cores x 32 FLOP/cycle
    p = peak.host_peak("fp32")
    assert p["gflops"] == 300.0 and "at least 2.344 GHz" in p["source"]
    assert peak.host_peak("int8")["gflops"] == 300.0 * 2  # the same clock for every precision
    monkeypatch.setattr(peak, "_sgemm_gflops", lambda: 200.0)  # below what the reported clock allows
    assert peak.host_peak("fp32")["gflops"] == 4 * 2.0 * 32
    monkeypatch.setattr(peak, "_max_clock_ghz", lambda: (2.0, "cpufreq cpuinfo_max_freq"))
    monkeypatch.setattr(peak, "_sgemm_gflops", lambda: pytest.fail("cpufreq's max clock needs no measurement"))
    assert peak.host_peak("fp32")["gflops"] == 4 * 2.0 * 32


def test_matrix_product_rate_is_measured():
    assert peak._sgemm_gflops.__wrapped__(128, 0.05) > 0.1


def test_profile_peak_numbers_and_host(monkeypatch):
    _cpu(monkeypatch, ["avx2", "fma"])
    m = {"target": {"name": "npu", "peak": {"int8": 11000, "fp16": 5500, "source": "datasheet"}, "options": {}}}
    assert peak.peak(m, "int8", baseline=False)["gflops"] == 11000
    assert peak.peak(m, "fp32", baseline=False) is None
    assert peak.peak(m, "int8", baseline=True)["gflops"] == 4 * 3.0 * 32  # baselines: this CPU in fp32
    m = {"target": {"name": "cpu", "peak": {"fp32": "host"}, "options": {"inference_precision": {"fp32": "f32"}}}}
    assert peak.peak(m, "fp32", baseline=False)["gflops"] == 4 * 3.0 * 32


# -- the record ----------------------------------------------------------------------------------------


def manifest(macs=500_000_000, batch=1, dynamic=False, peak_gflops=400.0):
    return {
        "created": "2026-01-01T00:00:00+00:00",
        "macs": macs,
        "flops": 2 * macs,
        "params": 1_000_000,
        "precision": "fp32",
        "num_classes": 1000,
        "spec": {"spec": "b0", "family": "efficientnet", "phi": None, "only": None, "resolution": 224},
        "scaling_check": None,
        "input": {"batch": None if dynamic else batch, "dynamic_batch": dynamic},
        "target": {
            "name": "test",
            "backend": "openvino",
            "device": "CPU",
            "peak": {"fp32": peak_gflops, "source": "test"},
            "options": {},
        },
    }


def fake_bundle(path, m):
    """What make_record reads of a Bundle: its path, precision and manifest."""
    from types import SimpleNamespace

    return SimpleNamespace(path=path, precision=m["precision"], manifest=SimpleNamespace(to_dict=lambda: m))


def test_record_numbers(tmp_path):
    m = timing.Measurement([10.0] * 9 + [30.0], seconds=0.12, count=10)
    r = bench.make_record(
        fake_bundle(tmp_path, manifest()),
        "openvino",
        bench.Settings(iterations=10),
        1,
        m,
        {"device": "CPU", "device_name": "Test CPU"},
    )
    assert r.p50_ms == 10.0 and r.p99_ms == 30.0 and r.stats["p50_ms"] == 10.0
    assert r.achieved_gflops == pytest.approx(2 * 0.5e9 / 0.010 / 1e9)  # 100 GFLOP/s at the median
    assert r.fraction_of_peak == pytest.approx(0.25)
    assert r.images_per_s == pytest.approx(10 / 0.12)
    assert r.device["name"] == "Test CPU" and r.model["macs"] == 500_000_000 and r.tools["numpy"]
    assert Record.from_dict(json.loads(json.dumps(r.to_dict()))) == r  # the JSON on disk reads back whole
    r = bench.make_record(
        fake_bundle(tmp_path, manifest()),
        "openvino",
        bench.Settings(mode="throughput"),
        4,
        timing.Measurement([20.0] * 50, seconds=1.0, count=50),
        {"device": "CPU"},
        requests=2,
    )
    assert r.images_per_s == 200 and r.achieved_gflops == pytest.approx(200 * 1.0)
    assert r.settings["requests"] == 2 and r.batch == 4
    b = bench.make_record(
        fake_bundle(tmp_path, manifest()),
        "onnxruntime",
        bench.Settings(),
        1,
        timing.Measurement([5.0], 0.005, 1),
        {"runtime": "onnxruntime"},
    )
    assert b.baseline and b.precision == "fp32" and b.device["kind"] == "CPU"
    row = {
        "artifact": "openvino CPU artifact",
        "views": 48,
        "top1_agreement": 0.5,
        "top5_overlap": 0.6,
        "cosine_mean": 0.93,
        "cosine_min": 0.8,
        "max_abs": 1.0,
    }
    random = manifest() | {
        "precision": "int8",
        "weights": {"source": "random", "random_init": True, "seed": 0},
        "fidelity": {"rows": [row | {"artifact": "Q/DQ", "top1_agreement": 0.7}, row]},
    }
    r = bench.make_record(
        fake_bundle(tmp_path, random),
        "openvino",
        bench.Settings(),
        1,
        timing.Measurement([5.0], 0.005, 1),
        {"device": "CPU"},
    )
    assert r.weights == {"source": "random", "random_init": True}  # what the bench measured computes
    assert r.fidelity == {k: row[k] for k in ("artifact", "views", "top1_agreement", "top5_overlap", "cosine_mean")}


def test_batch_rules():
    assert bench.batch_for(manifest(), bench.Settings()) == 1
    with pytest.raises(UserError, match="latency mode runs batch 1"):
        bench.batch_for(manifest(batch=2), bench.Settings())
    assert bench.batch_for(manifest(batch=2), bench.Settings(mode="throughput")) == 2
    assert bench.batch_for(manifest(dynamic=True), bench.Settings(mode="throughput", batch=8)) == 8
    with pytest.raises(UserError, match="dynamic-batch"):
        bench.batch_for(manifest(), bench.Settings(mode="throughput", batch=8))
    with pytest.raises(UserError):
        bench.Settings(iterations=0).check()
    with pytest.raises(UserError, match="unknown baseline"):
        bench.runtimes("openvino", ["tensorflow"])


# -- a real bundle -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(SPEC, tmp_path_factory.mktemp("bench"))


QUICK = dict(iterations=5, seconds=0, warmup=0)


def test_bench_saves_records_for_the_artifact_and_baselines(tiny):
    records, interrupted = bench.run(tiny, bench.Settings(**QUICK), ["pytorch", "onnxruntime"])
    assert not interrupted and [r.runtime for r in records] == ["openvino", "pytorch", "onnxruntime"]
    man = bundle.read_manifest(tiny)
    for r in records:
        saved = json.loads((tiny / "bench" / f"{r.runtime}-latency.json").read_text())
        assert (
            saved["stats"] == r.stats
            and r.saved_to == tiny / "bench" / f"{r.runtime}-latency.json"
            and saved["stats"]["count"] >= 5
        )
        assert len(saved["samples_ms"]) == saved["stats"]["count"]
        assert saved["model"]["macs"] == man["macs"] and saved["model"]["spec"] == SPEC
        assert saved["bundle_created"] == man["created"] and saved["batch"] == 1
        assert saved["achieved_gflops"] == pytest.approx(2 * man["macs"] / (saved["stats"]["p50_ms"] / 1e3) / 1e9)
    ov = records[0]
    assert ov.device["runner"]["settings"]["PERFORMANCE_HINT"] == "LATENCY" and ov.tools["openvino"]


def test_pytorch_baseline_is_the_bundles_model(tiny):
    import torch

    from edgeffnet.core.preprocess import Preprocess
    from edgeffnet.network.photos import to_input

    man = bundle.read_manifest(tiny)
    ref = np.load(tiny / "reference.npz")
    x = to_input(ref["views"], Preprocess.from_dict(man["preprocess"]))
    with torch.no_grad():
        got = PyTorchRunner(man, None).model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref["logits"], atol=1e-4)


def test_throughput_mode_uses_async_requests(tiny):
    records, _ = bench.run(tiny, bench.Settings(mode="throughput", **QUICK))
    r = records[0]
    assert r.mode == "throughput" and r.settings["requests"] >= 1 and r.images_per_s > 0
    assert r.device["runner"]["settings"]["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert (tiny / "bench" / "openvino-throughput.json").is_file()


def test_interrupted_run_is_saved_and_marked(tiny, monkeypatch):
    class Stops:
        device, calls = "CPU", 0

        def bound(self, x):
            def run():
                self.calls += 1
                if self.calls == 6:  # the cold first inference, one warm-up call, 3 timed
                    raise KeyboardInterrupt

            return run

        def queue(self, x):
            return None

        def describe(self):
            return {"runtime": "fake", "device": "CPU"}

    monkeypatch.setattr(bench, "load_runner", lambda *a: Stops())
    records, interrupted = bench.run(tiny, bench.Settings(**QUICK), ["onnxruntime"])
    assert interrupted and len(records) == 1  # the baseline after it is skipped
    saved = json.loads((tiny / "bench" / "openvino-latency.json").read_text())
    assert saved["interrupted"] and saved["stats"]["count"] == 3


def test_a_device_this_host_lacks_is_an_error_not_a_cpu_run(tiny, tmp_path):
    other = tmp_path / "npu-bundle"
    shutil.copytree(tiny, other, ignore=shutil.ignore_patterns("bench"))
    man = json.loads((other / "manifest.json").read_text())
    man["target"] |= {"name": "npu", "device": "NPU"}
    (other / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(UserError, match="NPU .*not present"):
        bench.run(other, bench.Settings(**QUICK))
    assert not (other / "bench").exists()


def test_cli_json_and_bad_input(tiny, tmp_path, cli):
    r = cli("bench", str(tiny), "-n", "3", "-s", "0", "--warmup", "0", "--json")
    assert r.returncode == 0, r.stderr
    (rec,) = json.loads(r.stdout)
    assert rec["record"] == "edgeffnet-bench" and rec["stats"]["count"] >= 3 and rec["runtime"] == "openvino"
    for args in (
        ["bench", str(tmp_path / "missing")],
        ["bench", str(tmp_path)],
        ["bench", str(tiny), "--baseline", "tf"],
        ["bench", str(tiny), "-n", "0"],
    ):
        r = cli(*args)
        assert r.returncode == 2 and r.stderr.startswith("edgeffnet: error:") and r.stderr.count("\n") == 1, r.stderr


def test_interleaved_p50_alternates_the_order_of_its_callables():
    order: list[str] = []
    p50 = timing.interleaved_p50({k: (lambda k=k: order.append(k)) for k in "abc"}, warmup=0, max_runs=4)
    assert set(p50) == set("abc") and all(v >= 0 for v in p50.values())
    assert order == list("abccbaabccba")  # no callable always runs first, or always right after another
