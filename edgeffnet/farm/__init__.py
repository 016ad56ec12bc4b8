"""The device farm: one sweep across many devices, on Ray.

Each device runs a Ray node that advertises its target as a custom resource (`edgeffnet-target:NAME`,
one unit: a node measures one thing at a time). The workstation builds the bundles, and Ray places
each (bundle, target) task on a node that has the resource, moves the bundle there and the record back
through its object store. Nothing here schedules, queues or speaks a protocol of its own.

- `cluster`: joining a device, the nodes and what they advertise (`edgeffnet farm join/status`).
- `device`: what runs on the device (unpack, finish a pending engine, verify, bench); no torch.
- `sweep`: the workstation side of `edgeffnet sweep --cluster`.
- `tasks`: what every farm command shares about tasks in flight (limits, time limits, failures).
- `search_tasks`, `search`: `edgeffnet search/fit --cluster`: candidates built on build workers (nodes
  that joined with `--build` and advertise `edgeffnet-build`), timed on a device of the target.
"""

RESOURCE_PREFIX = "edgeffnet-target:"
BUILD_RESOURCE = "edgeffnet-build"  # one unit per build a build worker runs at once


def resource(target_name: str) -> str:
    """The Ray custom resource a node of `target_name` advertises (one unit per device)."""
    return RESOURCE_PREFIX + target_name


def describe(resource_name: str) -> str:
    """What a resource means, for a message: 'target jetson', 'a build worker'."""
    if resource_name == BUILD_RESOURCE:
        return "builds (a build worker)"
    return f"target {resource_name.removeprefix(RESOURCE_PREFIX)}"
