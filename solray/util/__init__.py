"""Utilities mirroring `ray.util`: the same names, as the same kinds of object.

`placement_group` and its siblings are bound here as functions, after their
submodule is imported, so `solray.util.placement_group(...)` is the function
even in a process that imported `solray.util.placement_group` (the module)
itself: a submodule is set as an attribute of its package only when it is
first loaded, which this file does before binding the names.

Submodules with heavier imports (`queue`, `multiprocessing`, `joblib`,
`state`, `collective`, `iter`) load on first use, as attributes or by import: every worker imports
this package.
"""

from __future__ import annotations

import importlib

from solray._private.host import get_node_instance_id, get_node_ip_address
from solray.util import accelerators
from solray.util import debugpy as ray_debugpy
from solray.util import rpdb as pdb
from solray.util.actor_pool import ActorPool
from solray.util.check_serialize import inspect_serializability
from solray.util.client_connect import connect, disconnect
from solray.util.debug import disable_log_once_globally, enable_periodic_logging, log_once
from solray.util.helpers import as_completed, map_unordered
from solray.util.pass_by_reference import pass_by_reference
from solray.util.placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from solray.util.serialization import deregister_serializer, register_serializer

_LAZY_SUBMODULES = {
    "queue",
    "multiprocessing",
    "joblib",
    "state",
    "scheduling_strategies",
    "metrics",
    "collective",
    "iter",
}


def list_named_actors(all_namespaces: bool = False) -> list:
    """The named actors that are not dead: their names (this job's namespace),
    or with `all_namespaces=True`, `{"name": ..., "namespace": ...}` dicts
    for every namespace, as in Ray."""
    from solray._private import context, worker
    from solray._private.protocol import Msg

    if not isinstance(all_namespaces, bool):
        raise TypeError(f"all_namespaces must be True or False, got {all_namespaces!r}")
    worker.auto_init()
    cw = context.require_core_worker()
    rows = cw.request("control", Msg.LIST_ACTORS, None)
    named = [r for r in rows if r["name"] and r["state"] != "DEAD"]
    if all_namespaces:
        return [{"name": r["name"], "namespace": r["ray_namespace"]} for r in named]
    return [r["name"] for r in named if r["ray_namespace"] == cw.namespace]


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"solray.util.{name}")
    raise AttributeError(f"module 'solray.util' has no attribute {name!r}")


__all__ = [
    "ActorPool",
    "accelerators",
    "PlacementGroup",
    "as_completed",
    "collective",
    "connect",
    "deregister_serializer",
    "disable_log_once_globally",
    "disconnect",
    "enable_periodic_logging",
    "get_current_placement_group",
    "get_node_instance_id",
    "get_node_ip_address",
    "get_placement_group",
    "inspect_serializability",
    "iter",
    "list_named_actors",
    "log_once",
    "map_unordered",
    "pass_by_reference",
    "pdb",
    "ray_debugpy",
    "placement_group",
    "placement_group_table",
    "register_serializer",
    "remove_placement_group",
]
