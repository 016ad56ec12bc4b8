"""`edgeffnet farm join` and `edgeffnet farm status`: devices and build workers of a Ray farm."""

from __future__ import annotations

import json

import click

from edgeffnet.cli.options import connect_timeout_option, json_option
from edgeffnet.cli.render import print_farm_status


@click.group("farm")
def farm() -> None:
    """A device farm on Ray: devices join with their target; `sweep --cluster` measures on all of them.

    Ray's ports must not face the internet: anyone who reaches them runs code on every device. Keep
    the head and the devices on the lab network behind a firewall (docs/farm.md).
    """


@farm.command("join", context_settings={"ignore_unknown_options": True})
@click.argument("address")
@click.option("--target", "-t", help="This device's target: a name (edgeffnet targets) or a profile .toml.")
@click.option(
    "--build",
    is_flag=True,
    help="Also (or only) build candidates for search/fit --cluster: one build "
    "per 2 cores and 3 GiB here; needs the build side installed.",
)
@click.option(
    "--node-ip-address",
    help="This device's address on the lab network, the one Ray gives the other "
    "nodes (default: the address that reaches the head).",
)
@click.option("--block", is_flag=True, help="Stay in the foreground (for a systemd service); Ctrl-C leaves.")
@connect_timeout_option()
@click.argument("ray_start_args", nargs=-1, type=click.UNPROCESSED)
def join_cmd(address, target, build, node_ip_address, block, connect_timeout, ray_start_args) -> None:
    """Join the Ray head at ADDRESS (HOST:PORT) as a device of TARGET (one task at a time runs here),
    as a build worker (--build), or both.

    Anything after `--` goes to `ray start` as it is (e.g. fixed ports for a firewall:
    -- --node-manager-port 6380 --object-manager-port 6381 --min-worker-port 10002 --max-worker-port 10100).
    """
    from edgeffnet.farm.cluster import join

    join(address, target, node_ip_address, block, list(ray_start_args), connect_timeout, build)


@farm.command("status")
@click.argument("address")
@json_option()
@connect_timeout_option()
def status_cmd(address, as_json, connect_timeout) -> None:
    """List the nodes of the cluster at ADDRESS: their targets, runtimes and versions."""
    from edgeffnet.farm.cluster import status

    found = status(address, connect_timeout)
    if as_json:
        click.echo(json.dumps(found, indent=1))
        return
    print_farm_status(address, found)


COMMANDS = (farm,)
