"""A loopback Ray cluster for the farm tests: a head and nodes in child processes of the test, every
server on 127.0.0.1, whose workers import this checkout. Importing this module skips the test module
that does, where Ray (the [farm] extra) is not installed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Ray reads these when it is imported: no usage reporting, and 127.0.0.1 stays 127.0.0.1 (see
# edgeffnet/farm/cluster.py connect) for the driver in this process and in the CLI subprocesses.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="Ray is the [farm] extra: pip install -e '.[farm]'")
from ray.cluster_utils import Cluster  # noqa: E402

from edgeffnet.farm import BUILD_RESOURCE, resource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


class LoopbackFarm:
    """A Ray cluster in child processes of this test, every node on 127.0.0.1; stops whatever it started."""

    def __init__(self):
        # Ray's socket paths must stay short (AF_UNIX allows ~107 bytes): a short temporary root.
        self.temp_dir = tempfile.mkdtemp(prefix="efray-", dir="/tmp")
        # Ray writes the cluster's address to $RAY_TMPDIR/ray (else $TMPDIR/ray, else /tmp/ray), whatever
        # temp_dir says, and does not create that directory: point it into this cluster's own.
        self.ray_tmpdir = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = self.temp_dir
        os.mkdir(os.path.join(self.temp_dir, "ray"))
        self.cluster = Cluster(
            initialize_head=True,
            shutdown_at_exit=True,
            head_node_args=dict(
                node_ip_address="127.0.0.1", num_cpus=0, include_dashboard=False, temp_dir=self.temp_dir
            ),
        )
        self.address = self.cluster.address
        self.devices: dict[str, list] = {}
        self.builders: list = []

    def _add_node(self, resources: dict, cache: Path | None):
        """A node; with CACHE, its own cache (its processes inherit the environment at start)."""
        saved = os.environ.get("EDGEFFNET_CACHE")
        if cache is not None:
            os.environ["EDGEFFNET_CACHE"] = str(cache)
        try:
            return self.cluster.add_node(
                node_ip_address="127.0.0.1", num_cpus=1, temp_dir=self.temp_dir, resources=resources, wait=True
            )
        finally:
            if saved is None:
                os.environ.pop("EDGEFFNET_CACHE", None)
            else:
                os.environ["EDGEFFNET_CACHE"] = saved

    def add(self, target: str, cache: Path | None = None):
        """A device of TARGET (with CACHE: a cache of its own, where its latency data and models live)."""
        node = self._add_node({resource(target): 1}, cache)
        self.devices.setdefault(target, []).append(node)
        return node

    def add_builder(self, cache: Path):
        """A build worker with its own stage cache."""
        node = self._add_node({BUILD_RESOURCE: 1}, cache)
        self.builders.append(node)
        return node

    def listening_addresses(self) -> set[str]:
        """Where any process of the cluster listens for TCP connections."""
        nodes = [self.cluster.head_node, *self.cluster.worker_nodes]
        pids = set().union(
            *(descendants(p.process.pid) for node in nodes for procs in node.all_processes.values() for p in procs)
        )
        return listening_addresses(pids)

    def kill(self, node, also: list[int] = ()) -> None:
        """A device dies: its task's worker and every process of the node, without a goodbye."""
        for pid in also:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.cluster.remove_node(node, allow_graceful=False)

    def stop(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
        self.cluster.shutdown()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if self.ray_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = self.ray_tmpdir


def listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets these processes listen on, from /proc (no tool needed)."""
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(cols[1].split(":")[0])
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


def descendants(pid: int) -> set[int]:
    out, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children if int(c) not in out]
        out |= {int(c) for c in children}
    return out


@contextmanager
def loopback_farm(cache: Path) -> Iterator[LoopbackFarm]:
    """A LoopbackFarm (no nodes yet) whose workers use the stage cache `cache` and import this checkout;
    stopped, and this process's environment restored, after."""
    env = {"EDGEFFNET_CACHE": str(cache), "PYTHONPATH": str(REPO)}  # nodes started later inherit these
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    started = LoopbackFarm()
    try:
        yield started
    finally:
        started.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
