"""search and fit on a loopback Ray cluster: a head, two build workers (each with its own stage cache) and
one device of the cpu target, every server on 127.0.0.1. One small search (b0 at phi=-4, a 4-candidate
grid, fp32) runs on the farm while one build worker is killed in the middle of a build; its results are
compared with the same search run here; the command line resumes it; a fit confirms on the device; a
task over its time limit is cancelled. One cluster for the module: CPU is scarce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from farm_fixtures import LOOPBACK, descendants, loopback_farm
from pretend_device import QUICK, QUICK_OPTIONS, SMALL_GRID_OPTIONS

from edgeffnet.core.errors import UserError
from edgeffnet.farm import cluster as farm_cluster
from edgeffnet.farm.search import FarmExecutor
from edgeffnet.search import evaluators, fit, trials

pytestmark = pytest.mark.farm  # a Ray cluster on 127.0.0.1

TIMEOUT = 900.0  # a build on two cores shared with other work: generous, bounded


def _plan(out: Path) -> trials.SearchPlan:
    # 4 candidates, 4 networks (the same small grid as the local CLI test)
    return trials.SearchPlan(
        phi=-4, step=0.25, tol=0.1, settings=QUICK, confirm_rounds=1, target="cpu", precision="fp32", out=out
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("farm-search")
    with loopback_farm(root / "cache-workstation") as started:
        started.add("cpu")
        for name in ("cache-a", "cache-b"):
            started.add_builder(root / name)
        yield started


def test_loopback_cluster_binds_127_0_0_1_only(lab):
    addresses = lab.listening_addresses()
    assert addresses and addresses <= LOOPBACK, addresses


def _building(node) -> int | None:
    """The worker of NODE running a build task (Ray titles it ray::build_candidate), if any."""
    raylet = node.all_processes["raylet"][0].process.pid
    for pid in descendants(raylet) - {raylet}:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::build_candidate"):
                return pid
        except OSError:
            pass
    return None


class Assassin(threading.Thread):
    """Kills the first build worker to finish a build while it runs its next one."""

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.lab, self.victim, self.stop = lab, None, threading.Event()

    def run(self):
        was = {n.node_id: False for n in self.lab.builders}
        finished = None
        deadline = time.monotonic() + 1800
        while not self.stop.is_set() and time.monotonic() < deadline:
            for node in self.lab.builders:
                pid = _building(node)
                if finished is None and was[node.node_id] and pid is None:
                    finished = node  # its first build is done
                elif node is finished and pid:
                    time.sleep(0.5)
                    self.lab.kill(node, also=[pid])
                    self.victim = node
                    return
                was[node.node_id] = pid is not None
            time.sleep(0.1)


def test_search_on_the_farm(lab, tmp_path):
    out = tmp_path / "farm"
    lines: list[str] = []
    assassin = Assassin(lab)
    assassin.start()
    t0 = time.monotonic()
    result = trials.run(
        _plan(out), evaluators.NoEvaluator(), echo=lines.append, executor=FarmExecutor(lab.address, TIMEOUT)
    )
    wall = time.monotonic() - t0
    assassin.stop.set()
    assassin.join(timeout=10)
    assert assassin.victim is not None, "no build worker was killed: the test did not test a lost worker"
    assert not result["failed"] and not result["interrupted"], result["failed"]
    rows = result["rows"]
    assert len(rows) == result["measured"] == 4
    builders = {n.node_id for n in lab.builders}
    device = lab.devices["cpu"][0].node_id
    built_on = [r["placement"]["built_on"]["node_id"] for r in rows]
    assert set(built_on) == builders  # both workers built candidates ...
    # ... the killed one only the one it finished; the build it was running was retried on the other
    assert built_on.count(assassin.victim.node_id) == 1
    assert {r["placement"]["timed_on"]["node_id"] for r in rows} == {device}
    for line in lines:  # the console says where each candidate was built and timed
        assert " [built on " in line and ", timed on " in line, line
    for r in rows:  # the files are the local search's: bundle, records, the paired paper's timing
        record = json.loads(Path(r["record"]).read_text())
        assert record["stats"]["p50_ms"] == r["p50_ms"] and record["model"]["spec"] == r["spec"]
        assert record["bundle"] == str(Path(r["bundle"]).resolve()) and record["node"]["node_id"] == device
        assert record["verified_on_device"]["max_abs"] <= 1e-4
        assert r["paper_p50_ms"] > 0
    assert not [p for p in (out / "bundles").iterdir() if p.name.startswith(".")]
    print(f"\nfarm search: 4 candidates in {wall:.1f} s; killed build worker {assassin.victim.node_id[:8]}")
    for r in rows:
        p = r["placement"]
        print(
            f"  {r['spec']:42s} built on {p['built_on']['name']} in {p['build_seconds']:6.1f} s, "
            f"timed on {p['timed_on']['name']} in {p['time_seconds']:5.1f} s, p50 {r['p50_ms']:.3f} ms"
        )

    # The same search here: the same candidates, networks and counts; the same state files.
    here = tmp_path / "here"
    t0 = time.monotonic()
    local = trials.run(_plan(here), evaluators.NoEvaluator(), echo=lambda m: None)
    print(f"local search: {time.monotonic() - t0:.1f} s")

    def shape(rs):
        return sorted(
            (
                r["spec"],
                r["network"],
                r["macs"],
                r["params"],
                r["resolution"],
                r["paper"],
                r["same_network_as"],
                json.dumps(r["fingerprint"], sort_keys=True),
            )
            for r in rs
        )

    assert shape(local["rows"]) == shape(rows)

    def names(folder):
        return sorted(p.name for p in folder.iterdir())

    assert names(here / "candidates") == names(out / "candidates")

    # The command line resumes the farm's search and confirms on the device. One candidate's result is
    # gone but its bundle is here (as after Ctrl-C between its build and its timing): timed, not rebuilt.
    lost = next(r for r in rows if not r["paper"])
    (out / "candidates" / f"{Path(lost['record']).stem}.json").unlink()
    env = dict(os.environ)
    args = [
        sys.executable,
        "-m",
        "edgeffnet.cli",
        "search",
        "--cluster",
        lab.address,
        "--target",
        "cpu",
        "-p",
        "fp32",
        *SMALL_GRID_OPTIONS,
        *QUICK_OPTIONS,
        "--confirm-rounds",
        "1",
        "-o",
        str(out),
    ]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 measured, 3 from disk" in done.stderr and "built on an earlier run (on disk)" in done.stderr
    summary = json.loads((out / "search.json").read_text())
    assert summary["cluster"] == lab.address and summary["comparison"]["rounds"] == 1
    assert {p["spec"] for p in summary["placement"]} == {r["spec"] for r in rows}
    again = next(p for p in summary["placement"] if p["spec"] == lost["spec"])
    assert "node_id" not in again["built_on"] and again["timed_on"]["node_id"] == device
    confirmed = json.loads(Path(summary["paper"]["bundle"], "bench", "openvino-latency.json").read_text())
    assert confirmed["node"]["node_id"] == device  # the confirm round ran on the device


class CtrlCAtTheSecond:
    """An evaluator through which Ctrl-C arrives while the second candidate is being scored."""

    kind = "ctrl-c"

    def __init__(self):
        self.calls = 0

    def identity(self) -> dict:
        return {"kind": self.kind}

    def __call__(self, spec, workdir):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return 0.5


def test_ctrl_c_keeps_what_finished_and_frees_the_farm(lab, tmp_path):
    out = tmp_path / "interrupted"
    result = trials.run(
        _plan(out), CtrlCAtTheSecond(), echo=lambda m: None, executor=FarmExecutor(lab.address, TIMEOUT)
    )
    assert result["interrupted"] and len(result["rows"]) == 1
    assert [p.stem for p in (out / "candidates").glob("*.json")] == [Path(result["rows"][0]["record"]).stem]
    deadline = time.monotonic() + 60  # what was in flight was cancelled: no build runs any more
    while time.monotonic() < deadline and any(_building(n) for n in lab.cluster.worker_nodes):
        time.sleep(0.5)
    assert not any(_building(n) for n in lab.cluster.worker_nodes)


def test_a_task_over_its_limit_is_cancelled(lab, tmp_path):
    plan = fit.FitPlan(phi_min=-3.25, phi_max=-3.2, settings=QUICK, target="cpu", precision="fp32", out=tmp_path)
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"build: timed out after 2 s .*cancelled"):
        fit.fit_family(plan, [1e4], executor=FarmExecutor(lab.address, timeout=2))
    assert time.monotonic() - t0 < 120


def test_fit_on_the_farm_confirms_on_the_device(lab, tmp_path):
    plan = fit.FitPlan(
        phi_min=-4, phi_max=-3.5, step=0.25, settings=QUICK, target="cpu", precision="fp32", out=tmp_path / "fit"
    )
    lines: list[str] = []
    (r,), failed = fit.fit_family(plan, [1e4], echo=lines.append, executor=FarmExecutor(lab.address, TIMEOUT))
    assert not failed and r["phi"] == -3.5 and r["capped_at_phi_max"] and r["confirmed"]
    device = lab.devices["cpu"][0].node_id
    assert r["placement"]["timed_on"]["node_id"] == device
    assert r["placement"]["built_on"]["node_id"] in {n.node_id for n in lab.cluster.worker_nodes}
    assert [line for line in lines if "(again)" in line and "timed on" in line]
    rows = [json.loads(p.read_text()) for p in (tmp_path / "fit" / "measured").glob("*.json")]
    assert len(rows) == 2  # phi=-4 and phi=-3.5, built on the farm
    again = next(x for x in rows if x.get("history"))
    assert again["placement"]["timed_on"]["node_id"] == device and len(again["history"]) == 1
    print("\nfit: " + "; ".join(lines))


def test_join_as_a_build_worker():
    cmd = farm_cluster.join_command("192.168.1.10:6379", None, "192.168.1.22", builds=3)
    assert cmd[2:4] == ["--address=192.168.1.10:6379", '--resources={"edgeffnet-build": 3}']
    both = farm_cluster.join_command("192.168.1.10:6379", "jetson", builds=1)
    assert both[3] == '--resources={"edgeffnet-target:jetson": 1, "edgeffnet-build": 1}'
    gib = 2**30
    assert farm_cluster.build_slots(16, 64 * gib) == 8  # one build per two cores ...
    assert farm_cluster.build_slots(16, 8 * gib) == 2  # ... and per 3 GiB
    assert farm_cluster.build_slots(1, 1 * gib) == 1  # at least one
    with pytest.raises(UserError, match="--target .*--build"):
        farm_cluster.join("127.0.0.1:6379", None)
