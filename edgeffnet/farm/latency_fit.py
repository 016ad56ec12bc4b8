"""`edgeffnet latency fit --cluster ADDRESS --target T`: every device of T collects and fits its own model.

One task per device node that offers T, pinned to that node (its target's resource and Ray's node
affinity): the node builds, times and fits on itself (latency_tasks.collect_and_fit), so each model
describes the device that timed it. The workstation keeps a copy of each device's model and data under
its own cache, at `latency/<the device's key>/<precision>/` (the key from the identity the node sent),
so `--latency-model FILE` and `latency predict` find them as they find a local model.

Devices that are alike (the same CPU, cores, runtime and profile: a rack of one board, or a node on the
workstation itself) share a key, and with it one folder: their data are merged (each row once) and the
newest model is kept (by its `created` time; the later arrival when equal). A model fitted elsewhere
is not refitted here.

Faults are tasks.Pool's: a task over its time limit (per network of the design) is cancelled, a task
whose node left is given up with that reason, and Ray re-runs a task whose worker died (the collection
resumes). Ctrl-C cancels every task; what the devices measured stays on them, and a rerun resumes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from edgeffnet.core import logs
from edgeffnet.core.errors import UserError
from edgeffnet.core.untrusted import UntrustedFileError
from edgeffnet.farm import cluster, describe, latency_tasks, resource, tasks
from edgeffnet.farm.tasks import RETRIES, TASK_TIMEOUT
from edgeffnet.latency import device as latency_device
from edgeffnet.latency import store
from edgeffnet.latency.model import LatencyModel
from edgeffnet.search.latency_collect import Collection
from edgeffnet.specs import targets

WAIT = 1.0  # seconds one look at the tasks in flight may block


def devices_of(ray, address: str, target: str) -> list[dict]:
    """The live nodes that offer TARGET; refused in one line where none does."""
    found = [n for n in cluster.nodes(ray) if target in n["targets"]]
    if not found:
        offered = ", ".join(f"{t} ({n})" for t, n in sorted(cluster.capacity(ray).items())) or "no targets"
        raise UserError(
            f"no device in the cluster at {address} advertises {target} (it offers {offered}); on such a "
            f"device run `edgeffnet farm join {address} --target {target}`"
        )
    return found


def keep(res: dict, target: str, precision: str) -> dict:
    """A device's model and rows, kept under this machine's cache by the device's key. Returns what the
    output line says: {"key", "folder", "added", "model" (held-out errors or None), "kept": why}."""
    ident = res.get("identity")
    name = res.get("node", {}).get("name", "a device")
    if not isinstance(ident, dict) or ident.get("target") != target:  # the key names a folder: no other target
        raise UserError(f"{name} sent an identity for another target than {target}")
    folder = latency_device.folder(ident, precision)
    folder.mkdir(parents=True, exist_ok=True)
    added, bad = store.merge(latency_device.data_path(ident, precision), res.get("rows") or [], name)
    out = {"key": latency_device.key(ident), "folder": str(folder), "added": added, "bad_rows": bad, "model": None}
    if res.get("model") is None:
        out["kept"] = f"not fitted: {res.get('fit_error')}"
        return out
    fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".json.tmp", dir=folder)
    os.close(fd)
    try:
        Path(tmp).write_text(json.dumps(res["model"], indent=1) + "\n")
        model = LatencyModel.load(tmp, here=ident, precision=precision)  # checked as any model file is
        dest = latency_device.model_path(ident, precision)
        try:
            older = LatencyModel.load(dest).created if dest.is_file() else ""
        except UntrustedFileError:
            older = ""  # a damaged copy is replaced
        if model.created >= older:
            os.replace(tmp, dest)
            out["kept"] = "kept"
        else:
            out["kept"] = f"a newer model of this key was kept ({older})"
        out["model"] = model.errors
    except UntrustedFileError as e:
        out["kept"] = f"its model was refused: {e}"
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def line(node: dict) -> str:
    """One device's line: node, key, networks measured/skipped/failed, held-out errors."""
    if node.get("error"):
        return f"{node['name']}: failed: {node['error']}"
    s, k = node["summary"], node["kept"]
    head = f"{node['name']}: {k['key']}: {s['measured']} measured, {s['skipped']} skipped, {len(s['failed'])} failed"
    if k["model"] is None:
        return f"{head}; {k['kept']}"
    h = k["model"].get("held_out") or {}
    tail = "" if k["kept"] == "kept" else f" ({k['kept']})"
    return (
        f"{head}; held-out RMSE {h.get('rmse_pct', float('nan')):.1f}% "
        f"({h.get('within_10pct', float('nan')):.0%} within +-10%){tail}"
    )


def collect(
    collection: Collection,
    address: str,
    per_network_timeout: float = TASK_TIMEOUT,
    connect_timeout: float = cluster.CONNECT_TIMEOUT_S,
    echo=None,
) -> dict:
    """COLLECTION measured and fitted on every device of its target. Returns {"devices": [{"name",
    "node_id", "summary", "kept"} or {"name", "node_id", "error"}], "interrupted": bool, "pending": [names]};
    ECHO gets each device's line as it ends."""
    echo = echo or (lambda m: None)
    if not per_network_timeout > 0:
        raise UserError(f"--task-timeout must be positive, got {per_network_timeout:g}")
    profile = targets.load(collection.target)
    precision = profile.check_precision(collection.precision)
    collection = replace(collection, precision=precision)
    specs = collection.specs()
    ray = cluster.connect(address, connect_timeout)
    found = devices_of(ray, address, profile.name)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=RETRIES, retry_exceptions=False)(latency_tasks.collect_and_fit)
    # The reference network's build and the fit take about what one network does.
    pool = tasks.Pool(ray, per_network_timeout * (len(specs) + 1), describe)
    for node in found:
        strategy = NodeAffinitySchedulingStrategy(node["node_id"], soft=False)
        pool.put(
            resource(profile.name),
            node,
            lambda s=strategy: task.options(resources={resource(profile.name): 1}, scheduling_strategy=s).remote(
                collection
            ),
        )
    logs.logger().info(
        f"latency fit on the farm: {len(specs)} networks on each of {len(found)} device"
        f"{'s' * (len(found) != 1)} of {profile.name} ({precision}) at {address}"
    )
    result: dict = {"devices": [], "interrupted": False, "pending": []}
    try:
        while pool:
            for node, ref, why in pool.step(WAIT):
                name = f"{node['node_id'][:8]}@{node['ip']}"
                ended: dict = {"name": name, "node_id": node["node_id"]}
                try:
                    if why:
                        raise UserError(why)
                    res = ray.get(ref, timeout=per_network_timeout)
                    ended |= {"name": res["node"]["name"], "summary": res["summary"]}
                    ended["kept"] = keep(res, profile.name, precision)
                except ray.exceptions.RayError as e:  # the task's own error, or what became of its node
                    ended["error"] = tasks.reason(ray, e)
                except (UserError, OSError) as e:
                    ended["error"] = str(e)
                except (KeyError, TypeError, ValueError) as e:
                    ended["error"] = f"sent back a result this edgeffnet cannot read ({type(e).__name__}: {e})"
                result["devices"].append(ended)
                echo(line(ended))
    except KeyboardInterrupt:
        result["interrupted"] = True
        result["pending"] = [f"{n['node_id'][:8]}@{n['ip']}" for n in pool.jobs()]
    finally:
        pool.cancel_all()
    return result
