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


def _connect(address: str, profiles: list[targets.Target], connect_timeout: float):
    """(ray, devices per target) of the cluster, refused before anything is built when a target has no device."""
    ray = cluster.connect(address, connect_timeout)
    have = cluster.capacity(ray)
    missing = [p.name for p in profiles if not have.get(p.name)]
    if missing:  # before anything is built
        offered = ", ".join(f"{t} ({n})" for t, n in sorted(have.items())) or "no targets"
        raise UserError(
            f"no device in the cluster at {address} advertises {', '.join(missing)} (it offers "
            f"{offered}); on such a device run `edgeffnet farm join {address} --target {missing[0]}`"
        )
    return ray, have


class _Dispatch:
    """One farm sweep under way: builds bundles one at a time, keeps each target's devices busy through
    the pool, and notes what became of every job in `result` (edgeffnet.sweep.run's shape plus "jobs")."""

    def __init__(self, ray, timeout: float, modes: list[str], settings: bench.Settings, runs: list[bench.Settings]):
        self.ray, self.modes, self.settings, self.runs = ray, modes, settings, runs
        self.say = logs.logger().info
        self.task = ray.remote(num_cpus=0, max_retries=RETRIES, retry_exceptions=False)(device.measure)
        self.pool = tasks.Pool(ray, timeout, describe)
        self.result: dict = {"done": [], "skipped": [], "failed": [], "interrupted": None, "jobs": []}

    def run(self, todo: deque[Job]) -> dict:
        """Every job in TODO built (or skipped), measured and recorded; Ctrl-C cancels what is on the devices
        and keeps what came back. Adds "seconds" to the result."""
        total = len(todo)
        t0 = time.monotonic()
        try:
            while todo or self.pool:
                if todo:  # build one bundle, then look after the devices
                    job = todo.popleft()
                    self.start(job, f"[{total - len(todo)}/{total}] {job.label}")
                for job, ref, why in self.pool.step(0 if todo else 1.0):
                    if why:
                        self.fail(job, why)
                    else:
                        self.finished(job, ref)
        except KeyboardInterrupt:
            stopped = next(iter(self.pool.jobs()), None) or (todo[0] if todo else None)
            self.pool.cancel_all()
            self.result["interrupted"] = stopped.item if stopped else None
        self.result["seconds"] = round(time.monotonic() - t0, 1)
        return self.result

    def start(self, job: Job, progress: str) -> None:
        """Skip JOB if its records exist for these settings; otherwise build it, ship it and queue it."""
        if all(done(job.dest, s, [], job.item) for s in self.runs):
            self.say(f"{progress}: measured before, skipped")
            before = records.load(records.record_path(job.dest, job.target.backend, self.runs[0].mode))
            job.outcome = {"status": "skipped", "node": before.extra.get("node") if before else None}
            self.result["skipped"].append(job.item)
            self.result["jobs"].append(job)
            return
        self.say(progress)
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
            job.data = self.ray.put(device.archive(job.dest, shipped_files(job.dest, manifest)))
            self.pool.put(resource(job.target.name), job, lambda job=job: self.submit(job))
        except UserError as e:
            self.fail(job, str(e))

    def submit(self, job: Job):
        return self.task.options(resources={resource(job.target.name): 1}).remote(
            job.data, job.dest.name, self.modes, {k: v for k, v in asdict(self.settings).items() if k != "mode"}
        )

    def fail(self, job: Job, why: str) -> None:
        job.data = None  # the archive leaves the object store once nothing refers to it
        self.say(f"  {job.label}: failed: {why}")
        job.outcome = {"status": "failed", "reason": why}
        self.result["failed"].append((job.item, f"on {job.target.name}: {why}"))
        self.result["jobs"].append(job)

    def finished(self, job: Job, ref) -> None:
        """What the device sent back goes into the workstation's bundle, and its records are kept."""
        job.data = None
        try:
            res = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            self.fail(job, tasks.reason(self.ray, e))
            return
        try:
            if res["files"]:
                _apply(job, res["files"])
            recs = _record(job, res)
        except (UserError, OSError) as e:
            self.fail(job, str(e))
            return
        where = res["node"].get("node_id", "")[:8] or res["node"]["hostname"]
        for r in recs:
            self.say(
                f"  {job.label} [{where} {res['node'].get('ip', res['node']['hostname'])}] "
                f"{r.mode:10s} {console.summary(r)}"
            )
        job.outcome = {
            "status": "measured",
            "node": res["node"],
            "compiled_on_device": res["compiled"],
            "heavy_modules": res["heavy_modules"],
        }
        self.result["done"].append(job.item)
        self.result["jobs"].append(job)


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

    ray, have = _connect(address, profiles, connect_timeout)
    logs.logger().info(
        f"farm: {len(items)} items x {len(profiles)} targets ("
        + ", ".join(f"{p.name}: {have[p.name]} device{'s' * (have[p.name] > 1)}" for p in profiles)
        + f") on {address}, {', '.join(modes)} -> {out}"
    )
    todo = deque(Job(i, p, i.bundle_dir(out, p.name)) for i, p in pairs)
    result = _Dispatch(ray, timeout, modes, settings, runs).run(todo)
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
