"""Record format 2: load time, the cold first inference, peak memory, the artifact's size and the device's state
(the probes on simulated /sys trees and without them), older records still read, busy records marked."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import build_tiny

from edgeffnet.core.errors import UserError
from edgeffnet.measure import bench, device_state, records, report
from edgeffnet.measure.records import Record

SPEC = "b0,res=64"


# -- the probes on simulated trees ----------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def fake_cpus(root: Path, clocks: dict[int, tuple[str, int, int, int, int]]) -> Path:
    """cpuN/cpufreq with (governor, cur, min, max, hardware max) in kHz, as the kernel lays it out."""
    for n, (gov, cur, low, high, hw) in clocks.items():
        d = root / f"cpu{n}" / "cpufreq"
        for name, v in (
            ("scaling_governor", gov),
            ("scaling_cur_freq", cur),
            ("scaling_min_freq", low),
            ("scaling_max_freq", high),
            ("cpuinfo_max_freq", hw),
        ):
            _write(d / name, str(v))
    (root / "cpuidle").mkdir(exist_ok=True)  # not a cpu
    return root


def test_cpu_frequency_governor_and_clocks_from_cpufreq(tmp_path):
    root = fake_cpus(
        tmp_path,
        {
            0: ("performance", 3_000_000, 1_000_000, 3_500_000, 3_700_000),
            1: ("performance", 2_000_000, 1_000_000, 3_500_000, 3_700_000),
            10: ("powersave", 1_000_000, 1_000_000, 3_500_000, 3_700_000),
        },
    )
    f = device_state.cpu_frequency(root)
    assert f["governors"] == {"performance": 2, "powersave": 1}
    assert f["cur_mhz"] == {"min": 1000.0, "mean": 2000.0, "max": 3000.0}
    assert f["max_mhz"] == 3700.0 and f["scaling_max_mhz"] == 3500.0 and f["pinned"] is False
    pinned = fake_cpus(tmp_path / "pinned", {0: ("schedutil", 2_201_600, 2_201_600, 2_201_600, 2_201_600)})
    assert device_state.cpu_frequency(pinned)["pinned"] is True


def test_temperatures_with_their_zone_types(tmp_path):
    _write(tmp_path / "thermal_zone0" / "type", "x86_pkg_temp")
    _write(tmp_path / "thermal_zone0" / "temp", "47500")
    _write(tmp_path / "thermal_zone1" / "type", "acpitz")  # a zone whose temp cannot be read is left out
    _write(tmp_path / "cooling_device0" / "type", "Processor")
    assert device_state.temperatures(tmp_path) == [{"zone": "thermal_zone0", "type": "x86_pkg_temp", "celsius": 47.5}]


def test_jetson_clocks_from_cpufreq_and_the_gpu_devfreq(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no jetson_clocks: read the clocks themselves
    cpus = fake_cpus(tmp_path / "cpu", {0: ("schedutil", 1_500_000, 1_500_000, 1_500_000, 1_500_000)})
    devfreq = tmp_path / "devfreq"
    _write(devfreq / "17000000.ga10b" / "min_freq", "306000000")
    _write(devfreq / "17000000.ga10b" / "max_freq", "918000000")
    assert device_state.jetson_clocks(cpus, devfreq) == {
        "on": False,
        "how": "cpufreq and GPU devfreq minimum == maximum",
    }
    _write(devfreq / "17000000.ga10b" / "min_freq", "918000000")
    assert device_state.jetson_clocks(cpus, devfreq)["on"] is True
    assert device_state.jetson_clocks(tmp_path / "missing", tmp_path / "missing") is None


def _tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_nvpmodel_is_parsed_and_a_hanging_tool_is_cut_off(tmp_path, monkeypatch):
    bin_ = tmp_path / "bin"
    monkeypatch.setenv("PATH", str(bin_))
    assert device_state.jetson_power_mode() is None  # no nvpmodel: not a Jetson
    _tool(bin_, "nvpmodel", 'echo "NV Power Mode: MAXN"; echo 0')
    assert device_state.jetson_power_mode() | {"raw": None} == {"name": "MAXN", "id": 0, "raw": None}
    _tool(bin_, "nvpmodel", "exec sleep 30")
    monkeypatch.setattr(device_state, "TOOL_TIMEOUT_S", 0.3)
    assert device_state.jetson_power_mode() is None  # bounded: the subprocess is killed at the timeout
    _tool(
        bin_,
        "jetson_clocks",
        'echo "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 '
        'CurrentFreq=2201600"; echo "GPU MinFreq=1300500000 MaxFreq=1300500000"',
    )
    assert device_state.jetson_clocks(tmp_path / "x", tmp_path / "x")["on"] is True


def test_a_machine_without_the_probes_gives_none(tmp_path, monkeypatch):
    missing = tmp_path / "missing"
    for name in ("CPU_ROOT", "THERMAL_ROOT", "DEVFREQ_ROOT", "PROC"):
        monkeypatch.setattr(device_state, name, missing)

    def no_loadavg():
        raise OSError("no load average here")

    monkeypatch.setattr(device_state.os, "getloadavg", no_loadavg)
    monkeypatch.setattr(device_state, "is_jetson", lambda: False)
    window = device_state.Window()
    state = window.close()
    for snap in (state["before"], state["after"]):
        assert snap == {"load_average": None, "cpus": os.cpu_count(), "cpu_frequency": None, "temperatures": None}
    assert device_state.jetson_clocks() is None and device_state.Memory().peak()["method"].startswith("getrusage")
    assert state["others_cpu_share"] is None and state["busy"] is None  # neither signal: not judged


def test_busy_rule():
    assert device_state.busy(None, None, 0.3, 2) is True and device_state.busy([9, 9, 9], None, 0.1, 2) is False
    assert device_state.busy([1.5, 1, 1], [1, 1, 1], None, 2) is True  # 0.75 per CPU queued before loading
    assert device_state.busy([0.2, 0, 0], [2.5, 1, 1], None, 2) is False  # our own threads, one per CPU at most
    assert device_state.busy([0.2, 0, 0], [3.5, 1, 1], None, 2) is True
    assert device_state.busy(None, None, None, 2) is None


def test_cpu_share_of_others_from_proc_stat(tmp_path, monkeypatch):
    """Others' share = the CPUs' busy time less this process's own CPU time, over the CPUs' total time."""
    proc = tmp_path / "proc"
    stat_ = proc / "stat"
    _write(stat_, "cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0 0 0\ncpu1 100 0 0 100 0 0 0 0 0 0")
    monkeypatch.setattr(device_state, "PROC", proc)
    monkeypatch.setattr(device_state, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(device_state.os, "sysconf", lambda name: 100)
    own = iter([10.0, 10.5])  # this process used 0.5 s of CPU between the two readings
    monkeypatch.setattr(device_state, "_own_cpu_seconds", lambda: next(own))
    window = device_state.Window()
    # 2 s on the two CPUs (200 ticks): 150 ticks busy, of which 50 this process's: others used 100 of 200
    _write(stat_, "cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 175 0 0 125 0 0 0 0 0 0\ncpu1 175 0 0 125 0 0 0 0 0 0")
    state = window.close()
    assert state["others_cpu_share"] == 0.5 and state["busy"] is True and state["usable_cpus"] == 2


def test_peak_memory_is_this_spans_and_says_how(tmp_path, monkeypatch):
    memory = device_state.Memory()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touched: resident
    peak = memory.peak()
    assert peak["peak_mib"] > peak["baseline_mib"] and peak["increase_mib"] > 0
    assert peak["peak_mib"] <= peak["process_max_rss_mib"] + 1
    del block
    proc = tmp_path / "proc"  # no clear_refs to write: the peak is the process's whole life, and it says so
    _write(proc / "self" / "status", "VmHWM:\t  2048 kB\nVmRSS:\t  1024 kB")
    (proc / "self" / "clear_refs").mkdir()
    m = device_state.Memory(proc)
    assert not m.reset and m.baseline_mib == 1.0 and m.peak()["method"].startswith("getrusage ru_maxrss")


# -- a real bench ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(SPEC, tmp_path_factory.mktemp("state"))


def test_every_record_has_start_memory_artifact_and_state(tiny):
    recs, interrupted = bench.run(tiny, bench.Settings(iterations=5, seconds=0, warmup=0), ["onnxruntime", "pytorch"])
    assert not interrupted
    sizes = {}
    for r in recs:
        assert r.format == records.RECORD_FORMAT == 2
        assert isinstance(r.load_ms, float) and r.load_ms > 0
        assert isinstance(r.first_inference_ms, float) and r.first_inference_ms >= 0
        m = r.memory
        assert m["peak_mib"] > m["baseline_mib"] and m["increase_mib"] == pytest.approx(
            m["peak_mib"] - m["baseline_mib"]
        )
        assert m["method"]
        s = r.device_state
        assert set(s) >= {"before", "after", "others_cpu_share", "busy", "busy_rule", "usable_cpus"}
        for snap in (s["before"], s["after"]):
            assert snap["load_average"] is None or (len(snap["load_average"]) == 3 and snap["load_average"][0] >= 0)
        assert s["busy"] in (True, False, None)
        saved = json.loads(r.saved_to.read_text())
        assert saved["load_ms"] == r.load_ms and saved["device_state"]["busy"] == s["busy"]
        sizes[r.runtime] = r.artifact
    assert sizes["openvino"]["files"] == {n: (tiny / n).stat().st_size for n in ("model.xml", "model.bin")}
    assert sizes["onnxruntime"]["files"] == {"model.sim.onnx": (tiny / "model.sim.onnx").stat().st_size}
    assert sizes["openvino"]["bytes"] == sum(sizes["openvino"]["files"].values())
    assert sizes["pytorch"] is None  # it builds its module from the spec and weights: no file of the bundle


def test_format_1_records_still_read_and_others_refused(tiny):
    recs, _ = bench.run(tiny, bench.Settings(iterations=3, seconds=0, warmup=0))
    d = recs[0].to_dict()
    old = {
        k: v
        for k, v in d.items()
        if k not in ("load_ms", "first_inference_ms", "memory", "artifact", "device_state", "rounds")
    } | {"format": 1}
    r = Record.from_dict(old)
    assert r.format == 1 and r.load_ms is None and r.device_state is None
    row = report.rows([r.to_dict()])[0]
    assert row["load_ms"] is None and row["busy"] is None
    with pytest.raises(UserError, match="record format 3"):
        Record.from_dict(d | {"format": 3})
    with pytest.raises(UserError, match="'load_ms' entry is not a number"):
        Record.from_dict(d | {"load_ms": "fast"})
    with pytest.raises(UserError, match="'device_state' entry is not an object"):
        Record.from_dict(d | {"device_state": [1]})


def test_the_report_shows_start_up_and_marks_busy_records(tiny, tmp_path):
    recs, _ = bench.run(tiny, bench.Settings(iterations=3, seconds=0, warmup=0), ["onnxruntime"], save_records=False)
    quiet, busy = (r.to_dict() for r in recs)
    quiet["device_state"]["busy"], busy["device_state"]["busy"] = False, True
    out = report.write([quiet, busy], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"| {SPEC} (busy) | random | fp32 | onnxruntime |" in md
    assert f"| {SPEC} | random | fp32 | openvino |" in md
    assert any(n.startswith("Measured on a busy machine") and f"{SPEC} fp32" in n for n in out["warnings"])
    start = md[md.index("## Start-up") :]
    for r in (quiet, busy):
        assert f"{r['load_ms']:.0f}" in start and f"{r['memory']['peak_mib']:.0f}" in start
    row = {r["runtime"]: r for r in out["rows"]}
    assert row["onnxruntime"]["busy"] is True and row["openvino"]["busy"] is False
    assert row["openvino"]["artifact_bytes"] == quiet["artifact"]["bytes"]
    assert "(busy)" in (tmp_path / "report" / "report.html").read_text()
