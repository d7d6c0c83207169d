"""This machine's addresses, and which node of a cluster runs on it.

A driver must talk to the cluster through a node on its own machine: it maps
that node's shared-memory store, and it listens on that node's address so
the rest of the cluster can reach it. "On its own machine" is decided by
addresses, not by names: a node runs here if the address it listens on is
one of this host's interface addresses (`getifaddrs`, so in a network
namespace only that namespace's addresses count, which is what makes
namespaces usable as separate hosts in tests).

The address a node advertises when none is given is the one this host
routes from towards the head (or towards the outside world, for a head), as
Ray does: it is the address the other machines can reach, and loopback only
when the host has no other. A connected UDP socket sends nothing; it only
asks the kernel which source address it would use.
"""

from __future__ import annotations

import ipaddress
import os
import socket

import psutil

LOOPBACK = "127.0.0.1"
# Any routable address serves as the probe target for a head: nothing is sent.
_OUTSIDE = "8.8.8.8:53"


def local_addresses() -> set[str]:
    """Every IPv4 and IPv6 address of this host's interfaces (loopback included)."""
    found = {LOOPBACK}
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                found.add(entry.address.split("%", 1)[0])
    return found


def route_source(host: str, port: int = 53) -> str:
    """The local address this host sends from to reach `host`; loopback if
    there is no route (an offline machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))
            address = probe.getsockname()[0]
    except OSError:
        return LOOPBACK
    return address if not ipaddress.ip_address(address).is_unspecified else LOOPBACK


def default_node_ip(head_address: str | None = None) -> str:
    """The address a node started without `--node-ip-address` advertises:
    the one that reaches the head it joins, or for a head the one that
    reaches the outside world."""
    host, _, port = (head_address or _OUTSIDE).rpartition(":")
    host = host.strip("[]")
    try:
        if ipaddress.ip_address(host).is_loopback:
            return LOOPBACK
    except ValueError:
        pass  # a host name: the route to it decides
    return route_source(host, int(port))


def pick_local_node(nodes: list[dict], ip: str | None = None) -> dict:
    """The node a driver on this machine attaches to: an alive node listening
    on one of this host's addresses (on `ip` if the driver names one), the
    head first (`cluster_utils.Cluster` runs several on one machine)."""
    alive = [n for n in nodes if n["alive"]]
    wanted = {ip} if ip is not None else local_addresses()
    local = [n for n in alive if n["ip"] in wanted]
    if not local:
        seen = ", ".join(sorted({n["ip"] for n in alive})) or "none alive"
        where = f"on {ip}" if ip is not None else "on this machine"
        raise ConnectionError(
            f"No node of this cluster runs {where} (the cluster's nodes are at: {seen}). "
            "A driver works through a node on its own machine: start one there with "
            "`solray start --address HEAD:PORT`, or connect as a client without a node "
            'with init("ray://HEAD:10001").'
        )
    local.sort(key=lambda n: "node:__internal_head__" not in n["resources_total"])
    return local[0]


def get_node_instance_id() -> str:
    """Ray's `ray.util.get_node_instance_id()`: the cloud instance id of this
    machine, which Ray's cluster launcher and KubeRay give each node as
    RAY_CLOUD_INSTANCE_ID (processes a node starts inherit its environment);
    "" elsewhere. Like Ray, it never asks a cloud metadata service."""
    return os.environ.get("RAY_CLOUD_INSTANCE_ID", "")


def get_node_ip_address(address: str = _OUTSIDE) -> str:
    """Ray's `ray.util.get_node_ip_address()`: in a connected driver or a
    worker, the address of the node it works through (the one the rest of
    the cluster reaches this host at); else the address this host routes
    from towards `address`."""
    from solray._private import context

    cw = context.core_worker
    if cw is not None and cw.node_info.get("ip"):
        return cw.node_info["ip"]
    return default_node_ip(address)
