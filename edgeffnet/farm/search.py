"""`edgeffnet search/fit --cluster ADDRESS --target T`: the workstation side.

`FarmExecutor` is the search's executor (edgeffnet/search/executors.py) on a Ray cluster. Each candidate
is built by a task that needs one unit of `edgeffnet-build` (a node that joined with `--build`, through
its own stage cache), as many at once as the build workers offer; its bundle then goes through the
object store to a task that needs one unit of the target's resource, which verifies it on the device and
times it and the paper's network in the same task (search_tasks). The workstation keeps a copy of each
bundle and writes the records, so the files, the resumption and the choice are those of the local
commands; the placement (which node built, which timed, how long each took) is added to each result.

Faults are Ray's and tasks.Pool's: a task whose node dies is re-run by Ray on another node offering the
same resource (RETRIES times); a task over `--task-timeout` is cancelled; a task none of whose kind is
left fails with that reason, and the search goes on without that candidate. Ctrl-C cancels what is in
flight: every candidate finished before it was already written by the search loop.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from edgeffnet import bundle
from edgeffnet.core import logs
from edgeffnet.core.errors import UserError
from edgeffnet.farm import BUILD_RESOURCE, cluster, describe, device, resource, search_tasks, tasks
from edgeffnet.farm.tasks import RETRIES, TASK_TIMEOUT
from edgeffnet.measure import records
from edgeffnet.search import harness
from edgeffnet.search.executors import Job

WAIT = 1.0  # seconds one look at the tasks in flight may block


def _archive(path: Path) -> bytes:
    return device.archive(path, device.shipped_files(path, bundle.read_manifest(path)))


def _on_disk(job: Job, target: str, precision: str) -> bool:
    """An earlier run left this candidate's bundle here (built, not yet timed): time it, do not build it."""
    if not bundle.is_bundle(job.dest):
        return False
    b = bundle.Bundle.open(job.dest)
    return (b.manifest.spec["spec"], b.target.name, b.precision) == (job.spec, target, precision)


class FarmExecutor:
    def __init__(self, address: str, timeout: float = TASK_TIMEOUT):
        cluster.split_address(address)
        if not timeout > 0:
            raise UserError(f"--task-timeout must be positive, got {timeout:g}")
        self.address, self.timeout = address, timeout
        self.ray = None

    # -- the cluster ---------------------------------------------------------------------------------------

    def _connect(self, target: str, builds: bool):
        """ray, with the tasks declared; refuses, before anything is sent, a cluster that lacks a device of
        TARGET or (when BUILDS) a build worker."""
        first = self.ray is None
        ray = self.ray or cluster.connect(self.address)
        if first:
            self.ray = ray
            self._build = ray.remote(num_cpus=0, num_returns=3, max_retries=RETRIES, retry_exceptions=False)(
                search_tasks.build_candidate
            )
            self._time = ray.remote(num_cpus=0, max_retries=RETRIES, retry_exceptions=False)(search_tasks.time_bundles)
        devices = cluster.capacity(ray).get(target, 0)
        if not devices:
            offered = ", ".join(f"{t} ({n})" for t, n in sorted(cluster.capacity(ray).items())) or "no targets"
            raise UserError(
                f"no device in the cluster at {self.address} advertises {target} (it offers {offered}); "
                f"on such a device run `edgeffnet farm join {self.address} --target {target}`"
            )
        slots = cluster.builds(ray)
        if builds and not slots:
            raise UserError(
                f"no build worker in the cluster at {self.address}; on a machine with the build side run "
                f"`edgeffnet farm join {self.address} --build`"
            )
        if first:
            logs.logger().info(
                f"farm: {slots} build slot{'s' * (slots != 1)} and {devices} device"
                f"{'s' * (devices != 1)} of {target} at {self.address}"
            )
        return ray

    def _timing(
        self,
        target: str,
        dests: list[Path],
        settings: harness.BenchSettings,
        archives: list,
        order: list[int] | None = None,
    ):
        """A submitter of the device task that times DESTS (their ARCHIVES) in ORDER (default: each once)."""
        order = list(range(len(dests))) if order is None else order
        return lambda: self._time.options(resources={resource(target): 1}).remote(
            [d.name for d in dests], order, settings.to_dict(), *archives
        )

    def _kept(self, dest: Path, timing: dict, keep: Path | None, node: dict, parity) -> dict:
        """A timing a device sent back, as harness.time_bundle returns it here: its record written into the
        workstation's bundle (the newest, as a local timing leaves it) and into KEEP."""
        rec = records.Record.from_dict(timing["record"], f"the record {node['name']} sent back for {dest.name}")
        rec.bundle = str(Path(dest).resolve())  # the workstation's copy, not the device's temporary one
        rec.extra.update(node=node, verified_on_device=parity)
        saved = records.save(dest, rec)
        if keep is not None:
            harness.atomic_write_text(keep, json.dumps(rec.to_dict(), indent=1, default=str) + "\n")
        return {
            "p50_ms": rec.p50_ms,
            "p90_ms": rec.p90_ms,
            "p99_ms": rec.p99_ms,
            "iterations": rec.stats["count"],
            "record": str(keep or saved or ""),
            "measured": rec.created,
        }

    def _copy_here(self, job: Job, refs):
        """The bundle a build worker made, whole, at job.dest (replaced atomically). Returns the device's
        part put back into the object store by this process: the timing then does not depend on the build
        worker staying alive (Ray would otherwise rebuild a lost archive from its lineage)."""
        shipped, rest = self.ray.get(list(refs), timeout=self.timeout)
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        with bundle.staging(job.dest) as tmp:
            device.unpack(shipped, tmp)
            device.unpack(rest, tmp)
        return self.ray.put(shipped)

    # -- the executor ------------------------------------------------------------------------------------

    def measure(
        self, jobs: list[Job], target: str, precision: str, settings: harness.BenchSettings, pair: Path | None = None
    ):
        """As executors.LocalExecutor.measure, on the cluster: (job, measurement | UserError) as each ends."""
        here = {Path(j.dest): _on_disk(j, target, precision) for j in jobs}
        ray = self._connect(target, builds=not all(here.values()))
        pool = tasks.Pool(ray, self.timeout, describe)
        pair = Path(pair) if pair is not None else None
        paper = {"ref": ray.put(_archive(pair)) if pair is not None and pair not in here else None}
        held: list[Job] = []  # built, waiting for the paper's bundle to be timed against
        built: dict[Path, tuple[dict, object]] = {}  # dest -> (where and how long, the device's archive)

        def time_it(job: Job) -> None:
            _, shipped = built[Path(job.dest)]
            mine = pair is not None and Path(job.dest) == pair
            paired = job.pair_keep is not None and pair is not None and not mine
            if paired and paper["ref"] is None:
                held.append(job)
                return
            dests, archives = [Path(job.dest)], [shipped]
            if paired:
                dests, archives = dests + [pair], archives + [paper["ref"]]
            pool.put(resource(target), ("timing", job, paired), self._timing(target, dests, settings, archives))
            if mine:  # the others are timed against the paper's archive, put once
                paper["ref"] = shipped
                for waiting in held:
                    time_it(waiting)
                held.clear()

        def build_it(job: Job):
            refs = self._build.options(resources={BUILD_RESOURCE: 1}).remote(job.spec, target, precision)
            builds[Path(job.dest)] = refs
            return refs[0]

        builds: dict[Path, list] = {}
        for job in jobs:
            if here[Path(job.dest)]:
                built[Path(job.dest)] = (
                    {"node": {"name": "an earlier run (on disk)"}, "seconds": 0.0},
                    ray.put(_archive(job.dest)),
                )
                time_it(job)
            else:
                pool.put(BUILD_RESOURCE, ("build", job, False), lambda job=job: build_it(job))
        try:
            while pool:
                for (kind, job, paired), ref, why in pool.step(WAIT):
                    try:
                        if why:
                            raise UserError(f"{kind}: {why}")
                        value = ray.get(ref, timeout=self.timeout)
                        if kind == "build":
                            built[Path(job.dest)] = (value, self._copy_here(job, builds.pop(Path(job.dest))[1:]))
                            time_it(job)
                            continue
                        m = self._measured(job, paired, pair, built.pop(Path(job.dest))[0], value)
                    except ray.exceptions.RayError as e:  # the task's own error, or what became of its node
                        m = UserError(f"{kind}: {tasks.reason(ray, e)}")
                    except (UserError, OSError) as e:
                        m = e if isinstance(e, UserError) else UserError(f"{kind}: {e}")
                    builds.pop(Path(job.dest), None)  # a failed build's archives leave the object store
                    paused = time.monotonic()
                    yield job, m
                    pool.credit(time.monotonic() - paused)
            for job in held:  # the paper's network failed: nothing to time these against
                yield job, UserError("not timed: the paper's network, which it is timed against, could not be built")
        finally:
            pool.cancel_all()

    def _measured(self, job: Job, paired: bool, pair: Path | None, build: dict, res: dict) -> dict:
        node, (first, *rest) = res["node"], res["timings"]
        m = {
            "spec": job.spec,
            **harness.describe_bundle(job.dest),
            **self._kept(job.dest, first, job.keep, node, res["parity"][0]),
        }
        if paired:
            m["paper"] = self._kept(pair, rest[0], job.pair_keep, node, res["parity"][1])
        m["placement"] = {
            "built_on": build["node"],
            "build_seconds": build["seconds"],
            "timed_on": node,
            "time_seconds": res["seconds"],
        }
        return m

    def time(
        self, bundles: list[Path], settings: harness.BenchSettings, keeps: list[Path | None] | None = None
    ) -> list[dict]:
        """As executors.LocalExecutor.time, in one task on one device of the bundles' target."""
        keeps = keeps or [None] * len(bundles)
        distinct = list(dict.fromkeys(Path(b) for b in bundles))
        target = bundle.Bundle.open(distinct[0]).target.name
        ray = self._connect(target, builds=False)
        submit = self._timing(
            target,
            distinct,
            settings,
            [ray.put(_archive(b)) for b in distinct],
            [distinct.index(Path(b)) for b in bundles],
        )
        pool = tasks.Pool(ray, self.timeout, describe)
        pool.put(resource(target), "timing", submit)
        try:
            while pool:
                for _, ref, why in pool.step(WAIT):
                    if why:
                        raise UserError(f"timing on the farm: {why}")
                    try:
                        value = ray.get(ref, timeout=self.timeout)
                    except ray.exceptions.RayError as e:
                        raise UserError(f"timing on the farm: {tasks.reason(ray, e)}") from None
        finally:
            pool.cancel_all()
        node = value["node"]
        parity = dict(zip(distinct, value["parity"]))
        return [
            self._kept(Path(b), t, k, node, parity[Path(b)])
            | {"placement": {"timed_on": node, "time_seconds": value["seconds"]}}
            for b, t, k in zip(bundles, value["timings"], keeps)
        ]
