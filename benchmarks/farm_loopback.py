"""A device farm on one machine: a Ray head and three device nodes on 127.0.0.1 (targets lab-a, lab-b,
lab-c: copies of targets/cpu.toml), one sweep across them, lab-b's node killed in the middle of its first
task, then lab-b rejoined and the same sweep run again (it resumes), then the merged report.

    python benchmarks/farm_loopback.py -o /tmp/farm-demo

Prints the devices, the items, the wall times, the node killed and what became of its task, and the
report's rows. The three "devices" share this machine's cores, so the latencies test the plumbing, not
hardware. Everything it starts is stopped when it ends, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # 127.0.0.1 stays 127.0.0.1 (farm/cluster.py)
os.environ["PYTHONPATH"] = str(REPO)  # the nodes' workers import this checkout
sys.path.insert(0, str(REPO))

import ray
from ray.cluster_utils import Cluster

from edgeffnet.core import logs
from edgeffnet.farm import resource
from edgeffnet.farm import sweep as farm
from edgeffnet.measure import bench, report
from edgeffnet.workflows.sweep import Item

TARGETS = ("lab-a", "lab-b", "lab-c")


def task_pid(node) -> int | None:
    """The worker of NODE running the farm's device task (Ray titles it ray::measure)."""
    todo, seen = [node.all_processes["raylet"][0].process.pid], set()
    while todo:
        pid = todo.pop()
        seen.add(pid)
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::measure"):
                return pid
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split() if int(c) not in seen]
        except OSError:
            pass
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("farm-demo"))
    ap.add_argument("--spec", action="append", help="model specs (default b0,res=96 and lite0,res=96)")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum seconds per bench")
    args = ap.parse_args()
    specs = args.spec or ["b0,res=96", "lite0,res=96"]
    items = [Item(s, "fp32") for s in specs]
    log = logs.logger()
    log.addHandler(logs.console_handler(sys.stderr))
    log.propagate = False

    out: Path = args.output
    profiles = out / "targets"
    profiles.mkdir(parents=True, exist_ok=True)
    text = (REPO / "targets" / "cpu.toml").read_text()
    for name in TARGETS:
        (profiles / f"{name}.toml").write_text(text.replace('name = "cpu"', f'name = "{name}"', 1))
    paths = [str(profiles / f"{t}.toml") for t in TARGETS]
    settings = bench.Settings(iterations=100, seconds=args.seconds, warmup=0.5)

    temp_dir = tempfile.mkdtemp(prefix="efray-", dir="/tmp")
    cluster = Cluster(
        initialize_head=True,
        shutdown_at_exit=True,
        head_node_args=dict(node_ip_address="127.0.0.1", num_cpus=0, include_dashboard=False, temp_dir=temp_dir),
    )
    try:
        nodes = {}
        for name in TARGETS:
            nodes[name] = cluster.add_node(
                node_ip_address="127.0.0.1", num_cpus=1, temp_dir=temp_dir, resources={resource(name): 1}, wait=True
            )
        print(
            f"head {cluster.address}; devices: "
            + ", ".join(f"{t} node {n.node_id[:8]} 127.0.0.1" for t, n in nodes.items())
        )

        killed = {}

        def kill_lab_b():
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not killed:
                pid = task_pid(nodes["lab-b"])
                if pid:
                    time.sleep(1.0)  # inside the timed loop
                    os.kill(pid, signal.SIGKILL)
                    cluster.remove_node(nodes["lab-b"], allow_graceful=False)
                    killed["lab-b"] = (nodes["lab-b"].node_id, time.monotonic())
                time.sleep(0.1)

        watcher = threading.Thread(target=kill_lab_b, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        first = farm.run(items, paths, out, ["latency"], settings, cluster.address, timeout=600)
        watcher.join(timeout=5)
        print(
            f"\nsweep 1: {len(items)} items x {len(TARGETS)} devices in {time.monotonic() - t0:.1f} s: "
            f"{len(first['done'])} measured, {len(first['failed'])} failed"
        )
        if killed:
            node_id, when = killed["lab-b"]
            print(f"killed: lab-b node {node_id[:8]} at {when - t0:.1f} s, while it measured")
        for row in json.loads((out / "farm.json").read_text())["items"]:
            print(
                f"  {row['spec']:14s} {row['target']}: {row['status']}"
                + (f" by node {row['node']['node_id'][:8]}" if row.get("node") else "")
                + (f" ({row['reason']})" if row.get("reason") else "")
            )

        nodes["lab-b"] = cluster.add_node(
            node_ip_address="127.0.0.1", num_cpus=1, temp_dir=temp_dir, resources={resource("lab-b"): 1}, wait=True
        )
        print(f"\nlab-b rejoined as node {nodes['lab-b'].node_id[:8]}; the same sweep again:")
        t1 = time.monotonic()
        second = farm.run(items, paths, out, ["latency"], settings, cluster.address, timeout=600)
        print(
            f"sweep 2 in {time.monotonic() - t1:.1f} s: {len(second['skipped'])} skipped (measured before), "
            f"{len(second['done'])} measured, {len(second['failed'])} failed"
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)

    rep = report.write(report.collect([out / "bundles"]), out)
    print(f"\nreport: {out / 'report.html'}, report.md, report.csv, report.json")
    for r in rep["rows"]:
        print(
            f"  {r['model']:14s} {r['precision']} {r['mode']:10s} {r['device']:70s} p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms"
        )


if __name__ == "__main__":
    main()
