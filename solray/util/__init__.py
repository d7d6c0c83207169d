"""Utilities mirroring `ray.util`."""

from solray._private.host import get_node_ip_address
from solray.util.actor_pool import ActorPool
from solray.util.placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

__all__ = [
    "ActorPool",
    "PlacementGroup",
    "get_current_placement_group",
    "get_node_ip_address",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
