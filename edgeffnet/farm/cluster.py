"""The cluster as edgeffnet sees it: joining a device (`farm join`), connecting, and the nodes' targets.

A device joins with `ray start --address HEAD --resources '{"edgeffnet-target:NAME": 1}'`; `join`
builds that line from a target profile so the resource name is always the profile's name. A build
worker (`join --build`) advertises `edgeffnet-build`, one unit per build it can run at once
(`build_slots`: one per two cores, and per 3 GiB of memory).
`--node-ip-address` names the address a node gives the others (a lab address, never a public one);
where Ray listens is the firewall's business (docs/farm.md, Security).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from edgeffnet.core import logs
from edgeffnet.core.errors import UserError
from edgeffnet.farm import BUILD_RESOURCE, RESOURCE_PREFIX, resource
from edgeffnet.farm.probe import CONNECT_TIMEOUT_S, wait_for_head

# A build (export, simplify, compile, verify) keeps about two threads busy and holds up to a few GB.
CORES_PER_BUILD = 2
GIB_PER_BUILD = 3
PROBE_SECONDS = 30.0  # a node that cannot run a trivial task in this long is reported as not answering


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            "the device farm needs Ray on the workstation and on every device: pip install 'edgeffnet[farm]'"
        ) from None
    return ray


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"bad cluster address '{address}': write HOST:PORT of the Ray head, e.g. 192.168.1.10:6379")
    return host.strip("[]"), int(port)


def loopback(host: str) -> bool:
    return host == "localhost" or host == "::1" or host.startswith("127.")


def check_reachable(address: str, seconds: float = CONNECT_TIMEOUT_S) -> None:
    """One clear line, within about `seconds`, instead of Ray's minutes of retries where no Ray head
    answers at ADDRESS (nothing listens, or something that accepts and stays silent): probe.py."""
    host, port = split_address(address)
    wait_for_head(address, host, port, seconds)


def _loopback_setting(address: str) -> None:
    """Ray rewrites 127.0.0.1 into this machine's LAN address unless told it runs single-host (the
    variable's name says Windows/OSX; on Linux it means just that). A loopback cluster (tests, one
    machine) listens on 127.0.0.1 only, so a driver or a joining node must look for it there."""
    if loopback(split_address(address)[0]):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@contextmanager
def _keep_sigterm_handler():
    """ray.init replaces the SIGTERM handler with a bare sys.exit (no line, no clean-up): the one that was
    there (the CLI's: one `edgeffnet:` line) is put back, and a SIGTERM during init goes to it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = signal.getsignal(signal.SIGTERM)
    try:
        yield
    except SystemExit as e:
        if e.code == signal.SIGTERM and callable(ours):
            ours(signal.SIGTERM, None)
        raise
    finally:
        signal.signal(signal.SIGTERM, ours)


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S):
    """ray, connected as a driver to the cluster whose head is at ADDRESS (HOST:PORT); a head that does not
    answer within `timeout` seconds is one line."""
    check_reachable(address, timeout)
    _loopback_setting(address)
    ray = _ray()
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if split_address(current)[1] != split_address(address)[1]:
            raise UserError(f"this process is already connected to the Ray cluster at {current}, not {address}")
        return ray
    try:
        with _keep_sigterm_handler():
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, namespace="edgeffnet-farm")
    except (RuntimeError, ConnectionError) as e:  # Ray's version check and its connection errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(
            f"cannot connect to the Ray cluster at {address}: {first} (the workstation and every "
            f"device need the same Ray and Python versions)"
        ) from None
    return ray


def _targets(resources: dict) -> dict[str, float]:
    return {k[len(RESOURCE_PREFIX) :]: v for k, v in resources.items() if k.startswith(RESOURCE_PREFIX)}


def nodes(ray) -> list[dict]:
    """The live nodes: id, address, hostname and the targets each advertises."""
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        out.append(
            {
                "node_id": n["NodeID"],
                "ip": n["NodeManagerAddress"],
                "hostname": n.get("NodeManagerHostname"),
                "targets": sorted(_targets(n["Resources"])),
                "builds": int(n["Resources"].get(BUILD_RESOURCE, 0)),
            }
        )
    return out


def capacity(ray) -> dict[str, int]:
    """Devices per target among the live nodes (each advertises one unit)."""
    return {name: int(n) for name, n in _targets(ray.cluster_resources()).items()}


def builds(ray) -> int:
    """Builds the live build workers can run at once."""
    return int(ray.cluster_resources().get(BUILD_RESOURCE, 0))


def build_slots(cores: int | None = None, memory_bytes: int | None = None) -> int:
    """How many builds this machine runs at once: one per CORES_PER_BUILD cores and per GIB_PER_BUILD of
    memory, at least one."""
    cores = cores or os.cpu_count() or 1
    if memory_bytes is None:
        try:
            memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            memory_bytes = 0
    by_memory = memory_bytes // (GIB_PER_BUILD * 2**30) if memory_bytes else cores
    return max(1, min(cores // CORES_PER_BUILD, by_memory))


def describe_node() -> dict:
    """Runs on a node: who it is and which runtimes it has (package metadata only; nothing heavy imported)."""
    import platform
    from importlib import metadata

    import ray

    versions = {"python": platform.python_version()}
    for dist in ("edgeffnet", "ray", "openvino", "tensorrt", "onnxruntime", "pycuda", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "versions": versions,
    }


def status(address: str, timeout: float = CONNECT_TIMEOUT_S) -> list[dict]:
    """Every live node with its targets, and what a trivial task pinned to it reports (runtimes, versions)."""
    ray = connect(address, timeout)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    found = nodes(ray)
    probe = ray.remote(num_cpus=0, max_retries=0)(describe_node)
    refs = {
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False)).remote(): n
        for n in found
    }
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_SECONDS)
    for ref in ready:
        try:
            refs[ref].update(ray.get(ref))
        except ray.exceptions.RayError as e:
            refs[ref]["error"] = str(e).strip().splitlines()[-1]
    for ref in late:
        ray.cancel(ref, force=True)
        refs[ref]["error"] = f"no answer within {PROBE_SECONDS:.0f} s"
    return found


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")  # the ray of this environment, not another on PATH
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def join_command(
    address: str,
    target_name: str | None,
    node_ip: str | None = None,
    block: bool = False,
    extra: list[str] = (),
    builds: int = 0,
) -> list[str]:
    split_address(address)
    if any(a.split("=")[0] in ("--resources", "--address", "--head") for a in extra):
        raise UserError(
            "farm join sets --address and --resources itself (the target's resource); "
            "pass other ray start flags after --"
        )
    offered = ({resource(target_name): 1} if target_name else {}) | ({BUILD_RESOURCE: builds} if builds else {})
    cmd = [_ray_cli(), "start", f"--address={address}", f"--resources={json.dumps(offered)}", "--disable-usage-stats"]
    if node_ip:
        cmd.append(f"--node-ip-address={node_ip}")
    if block:
        cmd.append("--block")
    return cmd + list(extra)


def join(
    address: str,
    target: str | None,
    node_ip: str | None = None,
    block: bool = False,
    extra: list[str] = (),
    timeout: float = CONNECT_TIMEOUT_S,
    build: bool = False,
) -> int:
    """Start a Ray node on this machine that joins the head at ADDRESS and advertises TARGET (a device),
    builds (a build worker, `build_slots()` at once), or both."""
    from edgeffnet.pipeline import require_build_side
    from edgeffnet.specs import targets

    if not target and not build:
        raise UserError(
            "farm join needs --target (this machine is a device of it), --build (it builds "
            "candidates for search and fit), or both"
        )
    profile = targets.load(target) if target else None  # an unknown target fails here, before Ray is touched
    if build:
        require_build_side("farm join --build")
    _ray()
    check_reachable(address, timeout)
    _loopback_setting(address)  # `ray start` inherits it, as the driver in connect() has it
    slots = build_slots() if build else 0
    cmd = join_command(address, profile.name if profile else None, node_ip, block, extra, slots)
    offered = ([resource(profile.name)] if profile else []) + ([f"{BUILD_RESOURCE} x{slots}"] if slots else [])
    logs.logger().info(f"joining {address} as {', '.join(offered)}: {' '.join(cmd)}")
    code = subprocess.call(cmd)
    if code != 0:
        raise UserError(f"ray start exited with {code} (its output is above); this device did not join {address}")
    return code
