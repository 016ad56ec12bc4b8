"""Farm tasks in flight: per-resource limits from the live nodes, time limits, and one line for a failure.

Placement, transfer and retries are Ray's: a task asks for one unit of its resource (a target's devices,
the build workers), and a task whose worker or node died is re-run by Ray on another node offering that
resource, up to the task's max_retries. A `Pool` adds only what Ray does not do for us:
- at most as many tasks in flight per resource as the live nodes offer, so a task's time limit counts
  from about when it can start, not while it queues behind others;
- a task over its time limit is cancelled and reported;
- a task whose resource no live node offers any more (its node died, none is left to retry it on) is
  given up, with that reason, instead of waiting for a node that may never come.
Used by `sweep --cluster` (devices) and `search/fit --cluster` (build workers and devices).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edgeffnet.core.errors import UserError

TASK_TIMEOUT = 1800.0  # a TensorRT engine build for a big model on a Nano takes minutes, not half an hour
RETRIES = 2  # Ray re-runs a task whose node or worker died, on any node offering the task's resource


def reason(ray, err: Exception) -> str:
    """One line from whatever Ray raised: the task's own error message, or what happened to its node."""
    if isinstance(err, ray.exceptions.RayTaskError):
        cause = err.cause if isinstance(err.cause, Exception) else None
        if isinstance(cause, UserError):
            return str(cause)
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        return lines[-1].strip() if lines else type(err).__name__
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{type(err).__name__}: {first}"


@dataclass
class Task:
    job: object
    resource: str
    submit: Callable[[], object]  # submits the task, returns the ObjectRef whose completion ends it
    ref: object = None
    started: float = 0.0


class Pool:
    """Tasks queued per resource and in flight, bounded and timed. `step()` reports what ended."""

    def __init__(self, ray, timeout: float, describe: Callable[[str], str] = str):
        if not timeout > 0:
            raise UserError(f"--task-timeout must be positive, got {timeout:g}")
        self.ray, self.timeout, self.describe = ray, timeout, describe
        self.queued: dict[str, deque[Task]] = {}
        self.running: dict[object, Task] = {}

    def put(self, resource: str, job, submit: Callable[[], object]) -> None:
        self.queued.setdefault(resource, deque()).append(Task(job, resource, submit))

    def __bool__(self) -> bool:
        return bool(self.running) or any(self.queued.values())

    def jobs(self) -> list:
        """Every job not yet ended: in flight first, then queued."""
        return [t.job for t in self.running.values()] + [t.job for q in self.queued.values() for t in q]

    def capacity(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.ray.cluster_resources().items()}

    def credit(self, seconds: float) -> None:
        """Time the caller spent away from the pool (scoring a result) does not count against the tasks."""
        for task in self.running.values():
            task.started += seconds

    def cancel_all(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        self.running.clear()
        self.queued.clear()

    def step(self, wait: float) -> list[tuple[object, object, str | None]]:
        """Submit what the live nodes have room for, wait up to WAIT seconds for one task to end, and
        return [(job, ref, None)] for tasks that ended (ray.get the ref: it may hold the task's error) and
        [(job, None, why)] for tasks given up here."""
        have = self.capacity()
        ended = []
        for res, queue in self.queued.items():
            busy = sum(t.resource == res for t in self.running.values())
            while queue and busy < have.get(res, 0):
                task = queue.popleft()
                task.ref, task.started = task.submit(), time.monotonic()
                self.running[task.ref] = task
                busy += 1
            if queue and not have.get(res) and not busy:
                while queue:
                    ended.append((queue.popleft().job, None, f"no live node offers {self.describe(res)} any more"))
        if not self.running:
            return ended
        ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=wait)
        for ref in ready:
            ended.append((self.running.pop(ref).job, ref, None))
        now = time.monotonic()
        for ref, task in list(self.running.items()):
            if now - task.started > self.timeout:
                why = f"timed out after {self.timeout:g} s (--task-timeout); the task was cancelled"
            elif not have.get(task.resource):  # its node died and no other node is left to retry it on
                why = f"the node running it left the cluster and no other node offers {self.describe(task.resource)}"
            else:
                continue
            self.ray.cancel(ref, force=True)
            del self.running[ref]
            ended.append((task.job, None, why))
        return ended
