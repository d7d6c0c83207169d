"""Placement groups (`ray.util.placement_group`): reserve bundles of resources
across nodes together, then place tasks and actors in them with
PlacementGroupSchedulingStrategy. See solray/_private/placement_groups.py."""

from __future__ import annotations

import os

import solray
from solray._private import context, labels
from solray._private.placement import BUNDLE_STRATEGIES
from solray._private.protocol import Msg
from solray.object_ref import ObjectRef


class PlacementGroup:
    def __init__(self, pg_id: str, bundles: list[dict]):
        self.id = pg_id
        self.bundle_specs = bundles

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> ObjectRef:
        """A ref that resolves (to this group) once every bundle is reserved."""
        if context.client is not None:  # a ray:// client: its proxy driver asks
            return context.client.call("util.placement_group.ready", (self,))
        return context.require_core_worker().placement_group_ready(self)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Whether the group was created within the timeout."""
        ready, _ = solray.wait([self.ready()], timeout=timeout_seconds)
        if not ready:
            return False
        try:
            solray.get(ready[0])
        except solray.exceptions.RayError:
            return False
        return True

    def __eq__(self, other) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id}, {self.bundle_specs})"


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
    _max_cpu_fraction_per_node: float | None = None,
    _soft_target_node_id: str | None = None,
    bundle_label_selector: list[dict[str, str]] | None = None,
) -> PlacementGroup:
    """Reserve `bundles` together, per `strategy`; the group is created
    asynchronously (`ready()`, `wait()`).

    `bundle_label_selector`: a label selector per bundle, which its node's
    labels must match. `_max_cpu_fraction_per_node`: no bundle is placed on a
    node where the CPUs held by bundles of all placement groups would exceed
    this fraction of its CPUs (below 1, at least one CPU stays outside
    placement groups). `_soft_target_node_id` (STRICT_PACK only): the node to
    place the group on if it has room, else anywhere."""
    if not isinstance(bundles, list) or not bundles:
        raise ValueError("The placement group `bundles` argument must be a non-empty list")
    for bundle in bundles:
        if not isinstance(bundle, dict) or not bundle:
            raise ValueError(f"Bundles must be non-empty dicts of resources, got {bundle!r}")
        if all(v == 0 for v in bundle.values()):
            raise ValueError(f"Bundle {bundle} only has resources of size 0")
        for key, amount in bundle.items():
            if (
                not isinstance(key, str)
                or isinstance(amount, bool)
                or not isinstance(amount, (int, float))
                or amount < 0
            ):
                raise ValueError(f"Invalid bundle resource {key!r}: {amount!r}")
    if strategy not in BUNDLE_STRATEGIES:
        raise ValueError(
            f"Invalid placement group strategy {strategy!r}: use one of {BUNDLE_STRATEGIES}"
        )
    if lifetime not in (None, "detached"):
        raise ValueError("placement_group `lifetime` must be None or 'detached'")
    if not isinstance(name, str):
        raise TypeError(f"placement_group `name` must be a str, got {name!r}")
    if _max_cpu_fraction_per_node is not None and (
        isinstance(_max_cpu_fraction_per_node, bool)
        or not isinstance(_max_cpu_fraction_per_node, (int, float))
        or not 0 < _max_cpu_fraction_per_node <= 1
    ):
        raise ValueError(
            "placement_group `_max_cpu_fraction_per_node` must be a number in (0, 1], "
            f"got {_max_cpu_fraction_per_node!r}"
        )
    if _soft_target_node_id is not None:
        if not isinstance(_soft_target_node_id, str):
            raise TypeError(
                "placement_group `_soft_target_node_id` must be a node id (hex str), "
                f"got {_soft_target_node_id!r}"
            )
        if strategy != "STRICT_PACK":
            raise ValueError(
                "placement_group `_soft_target_node_id` only works with strategy "
                f"'STRICT_PACK', got {strategy!r}"
            )
    if bundle_label_selector is not None:
        if not isinstance(bundle_label_selector, list) or len(bundle_label_selector) != len(
            bundles
        ):
            raise ValueError(
                "placement_group `bundle_label_selector` must be a list with one label "
                f"selector per bundle ({len(bundles)}), got {bundle_label_selector!r}"
            )
        for selector in bundle_label_selector:
            labels.validate_selector(selector, "bundle_label_selector")
    if context.client is not None:  # a ray:// client: its proxy driver makes it
        return context.client.call(
            "util.placement_group.placement_group",
            (bundles, strategy, name, lifetime),
            {
                "_max_cpu_fraction_per_node": _max_cpu_fraction_per_node,
                "_soft_target_node_id": _soft_target_node_id,
                "bundle_label_selector": bundle_label_selector,
            },
        )
    solray._private.worker.auto_init()
    cw = context.require_core_worker()
    pg_id = os.urandom(14).hex()
    reply = cw.request(
        "control",
        Msg.CREATE_PG,
        {
            "pg_id": pg_id,
            "bundles": [{k: float(v) for k, v in b.items()} for b in bundles],
            "strategy": strategy,
            "name": name,
            "detached": lifetime == "detached",
            "label_selectors": bundle_label_selector,
            "max_cpu_fraction": _max_cpu_fraction_per_node,
            "soft_target": _soft_target_node_id,
        },
    )
    if "error" in reply:
        raise ValueError(reply["error"])
    return PlacementGroup(pg_id, bundles)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Release its bundles; tasks and actors running in them are killed."""
    if context.client is not None:
        return context.client.call(
            "util.placement_group.remove_placement_group", (placement_group,)
        )
    cw = context.require_core_worker()
    cw.request("control", Msg.REMOVE_PG, {"pg_id": placement_group.id})


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    if context.client is not None:
        return context.client.call(
            "util.placement_group.get_placement_group", (placement_group_name,)
        )
    cw = context.require_core_worker()
    for info in cw.request("control", Msg.PG_TABLE, {"name": placement_group_name}).values():
        if info["state"] != "REMOVED":
            return PlacementGroup(info["placement_group_id"], list(info["bundles"].values()))
    raise ValueError(f"Failed to look up placement group with name: {placement_group_name}")


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict:
    if context.client is not None:
        return context.client.call("util.placement_group.placement_group_table", (placement_group,))
    cw = context.require_core_worker()
    body = {"pg_id": placement_group.id} if placement_group is not None else None
    table = cw.request("control", Msg.PG_TABLE, body)
    return table[placement_group.id] if placement_group is not None else table


def get_current_placement_group() -> PlacementGroup | None:
    """The group the calling task or actor runs in; None in a driver, or in
    a task or actor placed outside any group."""
    cw = context.core_worker
    task = cw.current_task if cw is not None else None
    placement = task.placement if task is not None else None
    if not placement:
        return None
    return PlacementGroup(placement[0], placement[1])


__all__ = [
    "PlacementGroup",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
