"""`edgeffnet sweep --cluster ADDRESS --target A,B`: the workstation side of the device farm.

The workstation builds each bundle (through the stage cache; TensorRT engines stay pending), sends it
to a node advertising the bundle's target and writes the returned records into its own copy of the
bundle, atomically, as they arrive. Placement, transfer and retries are Ray's: a task needs one unit
of `edgeffnet-target:NAME`, so one device measures one thing at a time, and a task whose node dies is
retried by Ray on another node of the same target. This side only bounds what is in flight per target
by the number of live devices, so a task's time limit counts from when it can start.

Resuming is the plain sweep's: the files are the state, and an item whose records exist for these
settings is not sent again.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .. import bundle, logs, targets
from ..errors import UserError
from ..files import atomic_write_json
from ..measure import bench, console, records
from ..measure.sweep import Item, built, done, plan, settings_per_mode
from ..pipeline import build, require_build_side
from . import cluster, device, resource

TASK_TIMEOUT = 1800.0  # a TensorRT engine build for a big model on a Nano takes minutes, not half an hour
RETRIES = 2  # Ray re-runs a task whose node or worker died, on any node with the target's resource
SUMMARY = "farm.json"


@dataclass
class Job:
    item: Item
    target: targets.Target
    dest: Path
    data: object = None  # the bundle archive's ObjectRef
    ref: object = None
    started: float = 0.0
    outcome: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.item.spec} {self.item.precision} on {self.target.name}"


def shipped_files(path: Path, manifest: dict) -> list[str]:
    """What a device needs: the compiled artifact and the reference outputs, or for a pending engine the
    precision graph it is built from; not the intermediate graphs, the old records or hidden files."""
    compile_stage = manifest["stages"]["compile"]
    graph = compile_stage.get("graph") if compile_stage.get("pending") else None
    return sorted(p.name for p in path.iterdir()
                  if p.is_file() and not p.name.startswith(".") and (not p.name.endswith(".onnx") or p.name == graph))


def _reason(ray, err: Exception) -> str:
    """One line from whatever Ray raised: the device's own error message, or what happened to the node."""
    if isinstance(err, ray.exceptions.RayTaskError):
        cause = err.cause if isinstance(err.cause, Exception) else None
        if isinstance(cause, UserError):
            return str(cause)
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        return lines[-1].strip() if lines else type(err).__name__
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{type(err).__name__}: {first}"


def _apply(job: Job, files: dict[str, bytes]) -> None:
    """Files the device changed (a finished engine, its manifest) replace the workstation's copy, whole."""
    with bundle.staging(job.dest) as tmp:
        shutil.copytree(job.dest, tmp, dirs_exist_ok=True)
        for name, data in files.items():
            target = (tmp / name).resolve()
            if tmp.resolve() not in target.parents:
                raise UserError(f"{job.label}: the device sent back a file outside the bundle ({name})")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _record(job: Job, result: dict) -> list[records.Record]:
    saved = []
    node = {**result["node"], "target": job.target.name}
    for d in result["records"]:
        rec = records.Record.from_dict(d, f"the record {job.label} sent back")
        rec.bundle = str(job.dest.resolve())  # the workstation's copy, not the device's temporary one
        rec.extra.update(node=node, verified_on_device=result["parity"])
        if not records.save(job.dest, rec):
            raise UserError(f"{job.label}: cannot write the record into {job.dest / 'bench'}")
        saved.append(rec)
    return saved


def run(items: list[Item], target_names: list[str], out: Path, modes: list[str], settings: bench.Settings,
        address: str, baselines: list[str] = (), timeout: float = TASK_TIMEOUT,
        connect_timeout: float = cluster.CONNECT_TIMEOUT_S) -> dict:
    """Build ITEMS for every target, measure each on a device of that target, keep the records.

    An item without a precision takes each target's default. Returns what happened, like
    edgeffnet.sweep.run, plus "jobs" (every item x target with its outcome) and "seconds"."""
    say = logs.logger().info
    if baselines:
        raise UserError("--baseline runs PyTorch/ONNX Runtime on the workstation's CPU; measure baselines with a "
                        "plain `edgeffnet sweep` (without --cluster)")
    if not target_names:
        raise UserError("--cluster needs --target: the devices' targets, comma-separated (e.g. jetson,cpu)")
    profiles = list({p.name: p for p in map(targets.load, target_names)}.values())
    pairs = [(replace(i, precision=p.check_precision(i.precision)), p) for p in profiles for i in items]
    runs = settings_per_mode(settings, modes)
    if timeout <= 0:
        raise UserError(f"--task-timeout must be positive, got {timeout:g}")

    ray = cluster.connect(address, connect_timeout)
    have = cluster.capacity(ray)
    missing = [p.name for p in profiles if not have.get(p.name)]
    if missing:  # before anything is built
        offered = ", ".join(f"{t} ({n})" for t, n in sorted(have.items())) or "no targets"
        raise UserError(f"no device in the cluster at {address} advertises {', '.join(missing)} (it offers "
                        f"{offered}); on such a device run `edgeffnet farm join {address} --target {missing[0]}`")
    say(f"farm: {len(items)} items x {len(profiles)} targets ("
         + ", ".join(f"{p.name}: {have[p.name]} device{'s' * (have[p.name] > 1)}" for p in profiles)
         + f") on {address}, {', '.join(modes)} -> {out}")

    task = ray.remote(num_cpus=0, max_retries=RETRIES, retry_exceptions=False)(device.measure)
    todo = deque(Job(i, p, i.bundle_dir(out, p.name)) for i, p in pairs)
    total = len(todo)
    waiting: dict[str, deque[Job]] = {p.name: deque() for p in profiles}
    running: dict[object, Job] = {}
    result = {"done": [], "skipped": [], "failed": [], "interrupted": None, "jobs": []}
    t0 = time.monotonic()

    def fail(job: Job, why: str) -> None:
        job.data = None  # the archive leaves the object store once nothing refers to it
        say(f"  {job.label}: failed: {why}")
        job.outcome = {"status": "failed", "reason": why}
        result["failed"].append((job.item, f"on {job.target.name}: {why}"))
        result["jobs"].append(job)

    def submit(job: Job) -> None:
        job.ref = task.options(resources={resource(job.target.name): 1}).remote(
            job.data, job.dest.name, modes, {k: v for k, v in asdict(settings).items() if k != "mode"})
        job.started = time.monotonic()
        running[job.ref] = job

    def finished(job: Job, ref) -> None:
        job.data = None
        try:
            res = ray.get(ref)
        except ray.exceptions.RayError as e:
            fail(job, _reason(ray, e))
            return
        try:
            if res["files"]:
                _apply(job, res["files"])
            recs = _record(job, res)
        except (UserError, OSError) as e:
            fail(job, str(e))
            return
        where = res["node"].get("node_id", "")[:8] or res["node"]["hostname"]
        for r in recs:
            say(f"  {job.label} [{where} {res['node'].get('ip', res['node']['hostname'])}] "
                 f"{r.mode:10s} {console.summary(r)}")
        job.outcome = {"status": "measured", "node": res["node"], "compiled_on_device": res["compiled"],
                       "heavy_modules": res["heavy_modules"]}
        result["done"].append(job.item)
        result["jobs"].append(job)

    try:
        while todo or running or any(waiting.values()):
            if todo:  # build one bundle, then look after the devices
                job = todo.popleft()
                n = total - len(todo)
                if all(done(job.dest, s, [], job.item) for s in runs):
                    say(f"[{n}/{total}] {job.label}: measured before, skipped")
                    before = records.load(records.record_path(job.dest, job.target.backend, runs[0].mode))
                    job.outcome = {"status": "skipped", "node": before.extra.get("node") if before else None}
                    result["skipped"].append(job.item)
                    result["jobs"].append(job)
                else:
                    say(f"[{n}/{total}] {job.label}")
                    try:
                        if built(job.dest, job.item) is None:
                            require_build_side("edgeffnet sweep --cluster")
                            build(job.item.spec, target=job.target.path or job.target.name,
                                  precision=job.item.precision, weights=job.item.weights, output=job.dest)
                        manifest = bundle.read_manifest(job.dest)
                        job.data = ray.put(device.archive(job.dest, shipped_files(job.dest, manifest)))
                        waiting[job.target.name].append(job)
                    except UserError as e:
                        fail(job, str(e))
            have = cluster.capacity(ray)
            for name, queue in waiting.items():
                busy = sum(j.target.name == name for j in running.values())
                while queue and busy < have.get(name, 0):
                    submit(queue.popleft())
                    busy += 1
                if queue and not have.get(name) and not busy:
                    while queue:
                        fail(queue.popleft(), f"no live device advertises {name} any more")
            if not running:
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0 if todo else 1.0)
            for ref in ready:
                finished(running.pop(ref), ref)
            now = time.monotonic()
            for ref, job in list(running.items()):
                if now - job.started > timeout:
                    ray.cancel(ref, force=True)
                    running.pop(ref)
                    fail(job, f"timed out after {timeout:g} s (--task-timeout); the task was cancelled")
                elif not have.get(job.target.name):
                    # Its node died and no other node of the target is left to retry it on.
                    ray.cancel(ref, force=True)
                    running.pop(ref)
                    fail(job, f"the device running it left the cluster and no other device advertises "
                              f"{job.target.name}")
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        stopped = next(iter(running.values()), None) or next((q[0] for q in waiting.values() if q), None) \
            or (todo[0] if todo else None)
        result["interrupted"] = stopped.item if stopped else None
    result["seconds"] = round(time.monotonic() - t0, 1)
    write_summary(out, address, result)
    return result


def write_summary(out: Path, address: str, result: dict) -> Path:
    """OUTPUT/farm.json: every (item, target) with what became of it and the node that measured it."""
    rows = [{"spec": j.item.spec, "precision": j.item.precision, "target": j.target.name, "bundle": str(j.dest),
             **j.outcome} for j in result["jobs"]]
    path = out / SUMMARY
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, {"cluster": address, "seconds": result.get("seconds"), "items": rows})


def run_command(models, specs, scaling, target_names: list[str], precisions: list[str], modes: list[str],
                baselines: list[str], settings: bench.Settings, out: Path, address: str, timeout: float,
                weights: str = "pretrained", connect_timeout: float = cluster.CONNECT_TIMEOUT_S) -> dict:
    """The CLI's entry: plan the items (each target's default precision when none is given), then run."""
    if not target_names:
        raise UserError("--cluster needs --target: the devices' targets, comma-separated (e.g. jetson,cpu)")
    items = plan(models, specs, scaling, precisions or [None], weights)
    return run(items, target_names, out, modes, settings, address, baselines, timeout, connect_timeout)
