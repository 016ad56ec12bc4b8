"""The device farm on a loopback Ray cluster: a head and one node per target (copies of cpu.toml named
lab-a, lab-b, lab-c), every server bound to 127.0.0.1. A sweep across them, a resumed sweep, a node
killed in the middle of a task, a target nobody advertises, and `farm status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from farm_fixtures import LOOPBACK, descendants, loopback_farm, ray

import edgeffnet
from edgeffnet import bundle
from edgeffnet.core.errors import UserError
from edgeffnet.farm import cluster as farm_cluster
from edgeffnet.farm import device
from edgeffnet.farm import sweep as farm
from edgeffnet.measure import bench, records, report
from edgeffnet.specs import targets
from edgeffnet.workflows.sweep import Item

pytestmark = pytest.mark.farm  # a Ray cluster on 127.0.0.1

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("lab-a", "lab-b", "lab-c")
ITEMS = [Item("b0,res=64", "fp32")]
QUICK = bench.Settings(iterations=20, seconds=0.2, warmup=0)


@pytest.fixture(scope="module")
def lab_targets(tmp_path_factory) -> dict[str, Path]:
    """Three CPU profiles under other names: three 'devices' of different targets on this machine."""
    folder = tmp_path_factory.mktemp("targets")
    text = (REPO / "targets" / "cpu.toml").read_text()
    out = {}
    for name in (*TARGETS, "lab-z"):
        out[name] = folder / f"{name}.toml"
        out[name].write_text(text.replace('name = "cpu"', f'name = "{name}"', 1))
    return out


@pytest.fixture(scope="module")
def lab(lab_targets, tmp_path_factory):
    with loopback_farm(tmp_path_factory.mktemp("farm-cache")) as started:
        for name in TARGETS:
            started.add(name)
        yield started


def test_loopback_cluster_binds_127_0_0_1_only(lab):
    addresses = lab.listening_addresses()
    assert addresses, "no listening socket found for the cluster's processes"
    assert addresses <= LOOPBACK, addresses


def _records(out: Path) -> list[dict]:
    return [r.to_dict() for f in sorted((out / "bundles").rglob("bench/*.json")) if (r := records.load(f))]


def test_sweep_across_three_devices_and_resume(lab, lab_targets, tmp_path):
    out = tmp_path / "results"
    t0 = time.monotonic()
    result = farm.run(ITEMS, [str(lab_targets[t]) for t in TARGETS], out, ["latency", "throughput"], QUICK, lab.address)
    wall = time.monotonic() - t0
    assert not result["failed"], result["failed"]
    assert len(result["done"]) == len(TARGETS)
    node_of = {t: lab.devices[t][0].node_id for t in TARGETS}
    recs = _records(out)
    assert len(recs) == 2 * len(TARGETS)  # latency and throughput per device
    for r in recs:
        node = r["node"]
        assert node["target"] == r["target"] and node["node_id"] == node_of[r["target"]], node
        assert node["ip"] == "127.0.0.1"
        assert r["bundle"] == str((out / "bundles" / f"b0-res64-{r['target']}-fp32").resolve())
        assert r["verified_on_device"]["max_abs"] <= 1e-4
        assert r["stats"]["count"] >= QUICK.iterations
    summary = json.loads((out / "farm.json").read_text())
    assert [i["status"] for i in summary["items"]] == ["measured"] * len(TARGETS)
    # The device side ran with the bundle side of edgeffnet only.
    assert [i["heavy_modules"] for i in summary["items"]] == [[]] * len(TARGETS)
    # The report: one row per device and mode, each device its own series.
    rep = report.write(report.collect([out / "bundles"]), out)
    rows = rep["rows"]
    assert len(rows) == 2 * len(TARGETS) and sorted({r["mode"] for r in rows}) == ["latency", "throughput"]
    assert len({r["series"] for r in rows}) == len(TARGETS)
    assert all(node_of[r["target"]][:8] in r["device"] for r in rows)
    # The same bundle measured by two nodes that share a hostname (as on one machine): two rows.
    lat = next(r for r in recs if r["target"] == "lab-a" and r["mode"] == "latency")
    twin = dict(lat, node=dict(lat["node"], node_id="f" * 56), created=lat["created"])
    (tmp_path / "twin.json").write_text(json.dumps(twin))
    both = report.rows(
        report.collect([ITEMS[0].bundle_dir(out, "lab-a") / "bench" / "openvino-latency.json", tmp_path / "twin.json"])
    )
    assert len(both) == 2 and len({r["series"] for r in both}) == 2 and both[0]["bundle"] == both[1]["bundle"]
    print(f"three devices, {len(ITEMS)} item(s) each: {wall:.1f} s")

    # What a device sends back (a finished engine) replaces the workstation's copy whole; nothing may
    # land outside the bundle.
    dest = ITEMS[0].bundle_dir(out, "lab-a")
    job = farm.Job(ITEMS[0], targets.load(lab_targets["lab-a"]), dest)
    farm._apply(job, {"model.engine": b"plan"})
    assert (dest / "model.engine").read_bytes() == b"plan" and bundle.is_bundle(dest)
    assert len(list((dest / "bench").glob("*.json"))) == 2
    with pytest.raises(UserError, match="outside the bundle"):
        farm._apply(job, {"../escaped": b"x"})
    assert not (dest.parent / "escaped").exists() and not [p for p in dest.parent.iterdir() if p.name[0] == "."]
    (dest / "model.engine").unlink()

    # Resumed: nothing is measured again, the records stay as they were.
    before = {f: f.stat().st_mtime_ns for f in (out / "bundles").rglob("bench/*.json")}
    again = farm.run(ITEMS, [str(lab_targets[t]) for t in TARGETS], out, ["latency", "throughput"], QUICK, lab.address)
    assert len(again["skipped"]) == len(TARGETS) and not again["done"] and not again["failed"]
    skipped = json.loads((out / "farm.json").read_text())["items"]
    assert {i["target"]: (i["status"], i["node"]["node_id"]) for i in skipped} == {
        t: ("skipped", node_of[t]) for t in TARGETS
    }
    assert {f: f.stat().st_mtime_ns for f in (out / "bundles").rglob("bench/*.json")} == before


def test_target_nobody_advertises_fails_before_building(lab, lab_targets, tmp_path):
    out = tmp_path / "results"
    with pytest.raises(UserError, match="advertises lab-z.*farm join") as e:
        farm.run(ITEMS, [str(lab_targets["lab-a"]), str(lab_targets["lab-z"])], out, ["latency"], QUICK, lab.address)
    assert "\n" not in str(e.value)
    assert not (out / "bundles").exists()


def test_hanging_task_times_out_and_frees_the_device(lab, lab_targets, tmp_path):
    out = tmp_path / "results"
    endless = bench.Settings(iterations=10**9, seconds=600, warmup=0)
    t0 = time.monotonic()
    result = farm.run(ITEMS, [str(lab_targets["lab-a"])], out, ["latency"], endless, lab.address, timeout=5)
    assert time.monotonic() - t0 < 120
    ((item, why),) = result["failed"]
    assert "timed out after 5 s" in why
    (row,) = json.loads((out / "farm.json").read_text())["items"]
    assert row["status"] == "failed" and "timed out" in row["reason"]
    assert not list((ITEMS[0].bundle_dir(out, "lab-a") / "bench").glob("*.json"))
    # The cancelled task gave its device back: the next measurement runs.
    again = farm.run(ITEMS, [str(lab_targets["lab-a"])], out, ["latency"], QUICK, lab.address, timeout=120)
    assert len(again["done"]) == 1


def test_device_error_comes_back_as_one_line(lab, lab_targets, tmp_path):
    """A bundle whose artifact no longer matches its reference outputs fails verification on the device;
    the workstation reports the device's own message and writes no record."""
    import numpy as np

    out = tmp_path / "results"
    dest = ITEMS[0].bundle_dir(out, "lab-a")
    edgeffnet.build(ITEMS[0].spec, target=str(lab_targets["lab-a"]), precision="fp32", output=dest)
    ref = dict(np.load(dest / "reference.npz"))
    np.savez(dest / "reference.npz", **(ref | {"logits": ref["logits"] + 0.01}))
    result = farm.run(ITEMS, [str(lab_targets["lab-a"])], out, ["latency"], QUICK, lab.address, timeout=120)
    ((item, why),) = result["failed"]
    assert "FP32 tolerance" in why and "\n" not in why, why
    assert not list((dest / "bench").glob("*.json"))


def _task_pid(node) -> int | None:
    """The worker of NODE that is running the farm's device task (Ray titles it ray::measure)."""
    raylet = node.all_processes["raylet"][0].process.pid
    for pid in descendants(raylet) - {raylet}:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::measure"):
                return pid
        except OSError:
            pass
    return None


def test_device_killed_mid_task(lab, lab_targets, tmp_path):
    """lab-b has two devices: the one measuring dies, Ray retries the task on the other. lab-c's only
    device dies: its item is reported failed with the reason, and the sweep finishes."""
    spare = lab.add("lab-b")
    out = tmp_path / "results"
    victims = {"lab-b": None, "lab-c": lab.devices["lab-c"][0]}
    killed = {}

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(killed) < 2:
            for target in ("lab-b", "lab-c"):
                if target in killed:
                    continue
                for node in lab.devices[target]:
                    pid = _task_pid(node)
                    if pid and (victims[target] in (None, node)):
                        time.sleep(0.5)  # well inside the timed loop
                        lab.kill(node, also=[pid])
                        killed[target] = node.node_id
                        break
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    slow = bench.Settings(iterations=20, seconds=4.0, warmup=0)
    result = farm.run(ITEMS, [str(lab_targets[t]) for t in TARGETS], out, ["latency"], slow, lab.address, timeout=120)
    watcher.join(timeout=5)
    assert set(killed) == {"lab-b", "lab-c"}, f"the watcher killed {killed}"
    summary = {i["target"]: i for i in json.loads((out / "farm.json").read_text())["items"]}
    assert summary["lab-a"]["status"] == "measured"
    # lab-b: measured, by the device that survived.
    assert summary["lab-b"]["status"] == "measured"
    assert summary["lab-b"]["node"]["node_id"] != killed["lab-b"]
    assert summary["lab-b"]["node"]["node_id"] in {n.node_id for n in lab.devices["lab-b"]}
    # lab-c: a clear failure, nothing half-written.
    assert summary["lab-c"]["status"] == "failed"
    assert "lab-c" in summary["lab-c"]["reason"]
    assert [f for f, why in result["failed"]] == [ITEMS[0]]
    for target in TARGETS:
        dest = ITEMS[0].bundle_dir(out, target)
        assert bundle.is_bundle(dest)
    assert not list((ITEMS[0].bundle_dir(out, "lab-c") / "bench").glob("*.json"))
    recs = _records(out)
    assert {r["target"] for r in recs} == {"lab-a", "lab-b"}
    assert not [p for p in (out / "bundles").iterdir() if p.name.startswith(".")]
    assert spare.node_id  # the spare stays for the next test


def test_cli_status_and_resumed_sweep(lab, lab_targets, tmp_path):
    env = dict(os.environ)
    cli = [sys.executable, "-m", "edgeffnet.cli"]
    st = subprocess.run(
        [*cli, "farm", "status", lab.address, "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert st.returncode == 0, st.stderr
    nodes = json.loads(st.stdout)
    by_target = {t: n for n in nodes for t in n["targets"]}
    assert set(by_target) >= {"lab-a", "lab-b"}
    assert by_target["lab-a"]["versions"]["openvino"] and by_target["lab-a"]["versions"]["ray"] == ray.__version__
    assert by_target["lab-a"]["ip"] == "127.0.0.1"

    # Measured through the API, then the same sweep from the command line: it resumes and reports.
    out = tmp_path / "results"
    two = [lab_targets["lab-a"], lab_targets["lab-b"]]
    first = farm.run(ITEMS, list(map(str, two)), out, ["latency"], QUICK, lab.address)
    assert len(first["done"]) == 2
    args = [
        *cli,
        "sweep",
        "--cluster",
        lab.address,
        "--spec",
        ITEMS[0].spec,
        "-p",
        "fp32",
        "--mode",
        "latency",
        "-t",
        ",".join(map(str, two)),
        "-n",
        "20",
        "-s",
        "0.2",
        "--warmup",
        "0",
        "-o",
        str(out),
    ]
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("measured before, skipped") == 2
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert sorted(r["target"] for r in rows) == ["lab-a", "lab-b"]
    assert (out / "report.html").is_file()


def test_join_command_advertises_the_profile_name(lab_targets):
    cmd = farm_cluster.join_command("192.168.1.10:6379", "lab-a", "192.168.1.21", True, ["--num-cpus", "2"])
    assert cmd[1:] == [
        "start",
        "--address=192.168.1.10:6379",
        '--resources={"edgeffnet-target:lab-a": 1}',
        "--disable-usage-stats",
        "--node-ip-address=192.168.1.21",
        "--block",
        "--num-cpus",
        "2",
    ]
    for bad in (["--resources", "{}"], ["--head"]):
        with pytest.raises(UserError, match="sets --address and --resources"):
            farm_cluster.join_command("192.168.1.10:6379", "lab-a", extra=bad)
    for bad in ("192.168.1.10", "host:port", ":6379"):
        with pytest.raises(UserError, match="bad cluster address"):
            farm_cluster.split_address(bad)
    with pytest.raises(UserError, match="unknown target"):
        farm_cluster.join("127.0.0.1:6379", "no-such-board")


def test_device_refuses_an_archive_that_leaves_the_bundle(tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (tmp_path / "bundle").mkdir()
    with pytest.raises(UserError, match="leads outside"):  # refused from the headers, before any is written
        device.unpack(buf.getvalue(), tmp_path / "bundle")
    assert not (tmp_path / "escaped.txt").exists()
