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

from edgeffnet import bundle
from edgeffnet.core import logs
from edgeffnet.core.errors import UserError
from edgeffnet.core.files import atomic_write_json
from edgeffnet.farm import cluster, describe, device, resource, tasks
from edgeffnet.farm.device import shipped_files
from edgeffnet.farm.tasks import RETRIES, TASK_TIMEOUT
from edgeffnet.measure import bench, console, records
from edgeffnet.pipeline import build, require_build_side
from edgeffnet.specs import targets
from edgeffnet.workflows.sweep import Item, built, done, plan, settings_per_mode

SUMMARY = "farm.json"


@dataclass
class Job:
    item: Item
    target: targets.Target
    dest: Path
    data: object = None  # the bundle archive's ObjectRef
    outcome: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.item.spec} {self.item.precision} on {self.target.name}"


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


def run(
    items: list[Item],
    target_names: list[str],
    out: Path,
    modes: list[str],
    settings: bench.Settings,
    address: str,
    baselines: list[str] = (),
    timeout: float = TASK_TIMEOUT,
    connect_timeout: float = cluster.CONNECT_TIMEOUT_S,
) -> dict:
    """Build ITEMS for every target, measure each on a device of that target, keep the records.

    An item without a precision takes each target's default. Returns what happened, like
    edgeffnet.sweep.run, plus "jobs" (every item x target with its outcome) and "seconds"."""
    say = logs.logger().info
    if baselines:
        raise UserError(
            "--baseline runs PyTorch/ONNX Runtime on the workstation's CPU; measure baselines with a "
            "plain `edgeffnet sweep` (without --cluster)"
        )
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
        raise UserError(
            f"no device in the cluster at {address} advertises {', '.join(missing)} (it offers "
            f"{offered}); on such a device run `edgeffnet farm join {address} --target {missing[0]}`"
        )
    say(
        f"farm: {len(items)} items x {len(profiles)} targets ("
        + ", ".join(f"{p.name}: {have[p.name]} device{'s' * (have[p.name] > 1)}" for p in profiles)
        + f") on {address}, {', '.join(modes)} -> {out}"
    )

    task = ray.remote(num_cpus=0, max_retries=RETRIES, retry_exceptions=False)(device.measure)
    todo = deque(Job(i, p, i.bundle_dir(out, p.name)) for i, p in pairs)
    total = len(todo)
    pool = tasks.Pool(ray, timeout, describe)
    result = {"done": [], "skipped": [], "failed": [], "interrupted": None, "jobs": []}
    t0 = time.monotonic()

    def fail(job: Job, why: str) -> None:
        job.data = None  # the archive leaves the object store once nothing refers to it
        say(f"  {job.label}: failed: {why}")
        job.outcome = {"status": "failed", "reason": why}
        result["failed"].append((job.item, f"on {job.target.name}: {why}"))
        result["jobs"].append(job)

    def submit(job: Job):
        return task.options(resources={resource(job.target.name): 1}).remote(
            job.data, job.dest.name, modes, {k: v for k, v in asdict(settings).items() if k != "mode"}
        )

    def finished(job: Job, ref) -> None:
        job.data = None
        try:
            res = ray.get(ref)
        except ray.exceptions.RayError as e:
            fail(job, tasks.reason(ray, e))
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
            say(
                f"  {job.label} [{where} {res['node'].get('ip', res['node']['hostname'])}] "
                f"{r.mode:10s} {console.summary(r)}"
            )
        job.outcome = {
            "status": "measured",
            "node": res["node"],
            "compiled_on_device": res["compiled"],
            "heavy_modules": res["heavy_modules"],
        }
        result["done"].append(job.item)
        result["jobs"].append(job)

    try:
        while todo or pool:
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
                            build(
                                job.item.spec,
                                target=job.target.path or job.target.name,
                                precision=job.item.precision,
                                weights=job.item.weights,
                                output=job.dest,
                            )
                        manifest = bundle.read_manifest(job.dest)
                        job.data = ray.put(device.archive(job.dest, shipped_files(job.dest, manifest)))
                        pool.put(resource(job.target.name), job, lambda job=job: submit(job))
                    except UserError as e:
                        fail(job, str(e))
            for job, ref, why in pool.step(0 if todo else 1.0):
                if why:
                    fail(job, why)
                else:
                    finished(job, ref)
    except KeyboardInterrupt:
        stopped = next(iter(pool.jobs()), None) or (todo[0] if todo else None)
        pool.cancel_all()
        result["interrupted"] = stopped.item if stopped else None
    result["seconds"] = round(time.monotonic() - t0, 1)
    write_summary(out, address, result)
    return result


def write_summary(out: Path, address: str, result: dict) -> Path:
    """OUTPUT/farm.json: every (item, target) with what became of it and the node that measured it."""
    rows = [
        {
            "spec": j.item.spec,
            "precision": j.item.precision,
            "target": j.target.name,
            "bundle": str(j.dest),
            **j.outcome,
        }
        for j in result["jobs"]
    ]
    path = out / SUMMARY
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, {"cluster": address, "seconds": result.get("seconds"), "items": rows})


def run_command(
    models,
    specs,
    scaling,
    target_names: list[str],
    precisions: list[str],
    modes: list[str],
    baselines: list[str],
    settings: bench.Settings,
    out: Path,
    address: str,
    timeout: float,
    weights: str = "pretrained",
    connect_timeout: float = cluster.CONNECT_TIMEOUT_S,
) -> dict:
    """The CLI's entry: plan the items (each target's default precision when none is given), then run."""
    if not target_names:
        raise UserError("--cluster needs --target: the devices' targets, comma-separated (e.g. jetson,cpu)")
    items = plan(models, specs, scaling, precisions or [None], weights)
    return run(items, target_names, out, modes, settings, address, baselines, timeout, connect_timeout)
