"""The names a report gives a record: who measured it, on which device, and the series it belongs to."""

from __future__ import annotations

import re


def measured_by(r: dict) -> str:
    """Who measured a record: the farm node (its Ray node id: nodes may share a hostname) or the host."""
    node = r.get("node") or {}
    return node.get("node_id") or r["host"].get("hostname")


def device_of(r: dict) -> str:
    node = r.get("node")  # a farm record: which device of which target measured it
    where = (
        f" on {node['target']} {node.get('ip') or node['hostname']} node {node.get('node_id', '')[:8]}" if node else ""
    )
    return f"{r['device']['name']} ({r['device']['kind']}){where}"


def short_device(r: dict) -> str:
    """The device as a table cell: the name without trademarks, clock and filler words ("AMD EPYC 7B13
    (CPU)"); the Machines table carries the whole name, cores, ISA and peak."""
    full = str(r["device"]["name"])
    name = re.sub(r"@.*$|\bwith\b.*$", "", full)
    name = re.sub(r"\((R|TM|C)\)|\b(CPU|Processor)\b|\b\d+-Core\b", " ", name, flags=re.IGNORECASE)
    name = " ".join(name.split()) or full
    node = r.get("node")  # farm devices may share an address (or a host): the node id tells them apart
    return f"{name} ({r['device']['kind']})" + (
        f" on {node['target']} {node.get('ip') or node['hostname']} node {node.get('node_id', '')[:8]}" if node else ""
    )


def series_of(r: dict) -> str:
    return f"{r['model']['family']} {r['precision']} {r['runtime']} on {device_of(r)}"
