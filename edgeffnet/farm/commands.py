"""`edgeffnet farm join` and `edgeffnet farm status`; registered in edgeffnet/cli.py."""

from __future__ import annotations

import json

import click


@click.group("farm")
def farm() -> None:
    """A device farm on Ray: devices join with their target; `sweep --cluster` measures on all of them.

    Ray's ports must not face the internet: run the head and the devices on the lab network and name
    that network's address with --node-ip-address (README, Device farm).
    """


@farm.command("join")
@click.argument("address")
@click.option("--target", "-t", required=True, help="This device's target: a name (edgeffnet targets) or a profile .toml.")
@click.option("--node-ip-address", help="This device's address on the lab network; Ray binds to it "
                                        "(default: the address that reaches the head).")
@click.option("--block", is_flag=True, help="Stay in the foreground (for a systemd service); Ctrl-C leaves.")
def join_cmd(address, target, node_ip_address, block) -> None:
    """Join the Ray head at ADDRESS (HOST:PORT) as a device of TARGET: one task at a time runs here."""
    from ..cli import err
    from .cluster import join

    join(address, target, node_ip_address, block, echo=lambda m: err.print(m, markup=False))


@farm.command("status")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status_cmd(address, as_json) -> None:
    """List the nodes of the cluster at ADDRESS: their targets, runtimes and versions."""
    from rich.table import Table

    from ..cli import out
    from .cluster import status

    found = status(address)
    if as_json:
        click.echo(json.dumps(found, indent=1))
        return
    t = Table(title=f"Ray cluster at {address}")
    for col in ("node", "address", "host", "targets", "runtimes"):
        t.add_column(col)
    for n in found:
        v = n.get("versions", {})
        runtimes = n.get("error") or ", ".join(f"{k} {v[k]}" for k in ("openvino", "tensorrt", "onnxruntime",
                                                                       "edgeffnet", "ray", "python") if k in v)
        t.add_row(n["node_id"][:8], n["ip"], n.get("hostname") or "", ", ".join(n["targets"]) or "(head: none)",
                  runtimes)
    out.print(t)
