"""Placement groups, kept by the control store.

A group is a list of bundles (resource dicts) reserved together, with a
strategy: PACK (as few nodes as possible), SPREAD (as many as possible),
STRICT_PACK (one node, or wait), STRICT_SPREAD (one node per bundle, or wait).

Creation is two-phase: bundles are assigned to nodes from the cluster view,
then each node is asked to reserve its bundles (RESERVE_BUNDLES). If any node
refuses (its resources moved on since the view was taken), every reservation
made is released and the group waits for the next change in the cluster.

Bundles go only to nodes whose labels match their `bundle_label_selector`
entry; with `_max_cpu_fraction_per_node=f`, only where the CPUs held by all
groups' bundles stay within f of the node's CPUs (and below 1, one CPU stays
outside); `_soft_target_node_id` puts a STRICT_PACK group on that node if it
has room.

A reserved bundle i of group G on a node turns its resources, say {"CPU": 2},
into new node resources "CPU_group_G" and "CPU_group_i_G" (plus the markers
"bundle_group_G" and "bundle_group_i_G"), as in Ray. A task or actor placed in
the group asks for those names instead (`group_resources`), so the ordinary
lease routing takes it to the node holding the bundle.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from solray._private import labels, transport
from solray._private.protocol import Msg

logger = logging.getLogger("solray.control_store")

PENDING, CREATED, REMOVED = "PENDING", "CREATED", "REMOVED"
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
BUNDLE_MARKER = 0.001


def group_resources(resources: dict, pg_id: str, bundle_index: int) -> dict:
    """A task's resources, renamed to draw on a placement group's bundle."""
    renamed = {}
    for key, amount in resources.items():
        if bundle_index < 0:
            renamed[f"{key}_group_{pg_id}"] = amount
        else:
            renamed[f"{key}_group_{bundle_index}_{pg_id}"] = amount
    marker = "bundle_group_" + (f"{bundle_index}_" if bundle_index >= 0 else "") + pg_id
    renamed[marker] = BUNDLE_MARKER
    return renamed


def uses_group(resources: dict, pg_id: str) -> bool:
    """Whether a resource shape draws on a bundle of group `pg_id`."""
    return any(k.startswith("bundle_group_") and k.endswith(f"_{pg_id}") for k in resources)


def bundle_resources(resources: dict, pg_id: str, bundle_index: int) -> dict:
    """What a node adds when it reserves bundle `bundle_index`."""
    added = {}
    for key, amount in resources.items():
        added[f"{key}_group_{pg_id}"] = amount
        added[f"{key}_group_{bundle_index}_{pg_id}"] = amount
    added[f"bundle_group_{pg_id}"] = 1000.0
    added[f"bundle_group_{bundle_index}_{pg_id}"] = 1000.0
    return added


@dataclass
class PlacementGroup:
    pg_id: str
    bundles: list
    strategy: str
    name: str
    owner: transport.Connection
    detached: bool
    label_selectors: list | None = None  # per bundle
    max_cpu_fraction: float | None = None
    soft_target: str | None = None  # node id
    state: str = PENDING
    nodes: list = field(default_factory=list)  # node id per bundle, once placed
    waiters: list = field(default_factory=list)
    placing: bool = False


class PlacementGroupManager:
    def __init__(self, store):
        self.store = store
        self.groups: dict[str, PlacementGroup] = {}
        self.handlers = {
            Msg.CREATE_PG: self.create,
            Msg.REMOVE_PG: self.remove,
            Msg.WAIT_PG: self.wait,
            Msg.PG_TABLE: self.table,
        }

    def create(self, conn, rid, body, bufs) -> None:
        name = body.get("name") or ""
        if name and any(g.name == name and g.state != REMOVED for g in self.groups.values()):
            conn.reply(rid, {"error": f"a placement group named {name!r} already exists"})
            return
        group = PlacementGroup(
            body["pg_id"],
            body["bundles"],
            body["strategy"],
            name,
            conn,
            body.get("detached", False),
            body.get("label_selectors"),
            body.get("max_cpu_fraction"),
            body.get("soft_target"),
        )
        self.groups[group.pg_id] = group
        conn.peer.setdefault("placement_groups", set()).add(group.pg_id)
        conn.reply(rid, {"ok": True})
        self._place(group)

    def remove(self, conn, rid, body, bufs) -> None:
        group = self.groups.get(body["pg_id"])
        if group is not None and group.state != REMOVED:
            self._remove(group)
        conn.reply(rid, True)

    def wait(self, conn, rid, body, bufs) -> None:
        """Answered when the group is created (True) or removed (False)."""
        group = self.groups.get(body["pg_id"])
        if group is None or group.state == REMOVED:
            conn.reply(rid, False)
        elif group.state == CREATED:
            conn.reply(rid, True)
        else:
            group.waiters.append((conn, rid))

    def table(self, conn, rid, body, bufs) -> None:
        conn.reply(
            rid,
            {
                g.pg_id: {
                    "placement_group_id": g.pg_id,
                    "name": g.name,
                    "strategy": g.strategy,
                    "state": g.state,
                    "bundles": dict(enumerate(g.bundles)),
                    "bundles_to_node_id": dict(enumerate(g.nodes)),
                }
                for g in self.groups.values()
                if body is None
                or body.get("pg_id") in (None, g.pg_id)
                and body.get("name") in (None, g.name)
            },
        )

    def on_connection_closed(self, conn) -> None:
        for pg_id in conn.peer.get("placement_groups", ()):
            group = self.groups.get(pg_id)
            if group is not None and not group.detached and group.state != REMOVED:
                self._remove(group)
        for group in self.groups.values():
            group.waiters = [w for w in group.waiters if w[0] is not conn]

    def on_cluster_changed(self) -> None:
        for group in list(self.groups.values()):
            if group.state == PENDING:
                self._place(group)

    def on_node_removed(self, node_id: str) -> None:
        """Bundles on a dead node are lost: the group is placed again."""
        for group in self.groups.values():
            if group.state == CREATED and node_id in group.nodes:
                self._release(group)
                group.state = PENDING
                self._place(group)

    # -- placing -------------------------------------------------------------

    def _place(self, group: PlacementGroup) -> None:
        if not group.placing:
            group.placing = True
            asyncio.get_running_loop().create_task(self._try_place(group))

    async def _try_place(self, group: PlacementGroup) -> None:
        try:
            assignment = self._assign(group)
            if assignment is None:
                return  # waits for the cluster to change
            reserved = []
            ok = True
            for node_id, indexes in _by_node(assignment).items():
                node = self.store.nodes[node_id]
                try:
                    conn = await self.store.actors.node_conn(node)
                    ok = await conn.request(
                        Msg.RESERVE_BUNDLES,
                        {
                            "pg_id": group.pg_id,
                            "bundles": {i: group.bundles[i] for i in indexes},
                        },
                    )
                except (OSError, transport.ConnectionLost, transport.RemoteError):
                    ok = False
                if not ok:
                    break
                reserved.append((node, indexes))
            if not ok or group.state == REMOVED:
                for node, indexes in reserved:
                    await self._send_release(node, group.pg_id, indexes)
                return
            group.nodes = assignment
            group.state = CREATED
            self._notify(group)
        finally:
            group.placing = False

    def _assign(self, group: PlacementGroup) -> list[str] | None:
        """A node id per bundle, per the strategy, from free resources (and
        the group's label selectors, CPU fraction and target node)."""
        nodes = {n["node_id"]: n for n in self.store.nodes.values() if n["alive"]}
        held = self._bundle_cpus_by_node()
        rooms = {
            node_id: _Room(dict(n["resources_available"]), held.get(node_id, 0.0))
            for node_id, n in nodes.items()
        }
        order = sorted(rooms, key=lambda node_id: -rooms[node_id].free.get("CPU", 0.0))
        if group.soft_target in rooms:  # tried first; anywhere else if it has no room
            order.remove(group.soft_target)
            order.insert(0, group.soft_target)

        def take(node_id: str, index: int, room: _Room) -> bool:
            selector = group.label_selectors[index] if group.label_selectors else None
            if not labels.matches(nodes[node_id].get("labels"), selector):
                return False
            bundle = group.bundles[index]
            cpus = bundle.get("CPU", 0.0)
            if group.max_cpu_fraction is not None:
                if room.pg_cpus + cpus > _cpu_cap(nodes[node_id], group.max_cpu_fraction) + 1e-9:
                    return False
            if not _take(room.free, bundle):
                return False
            room.pg_cpus += cpus
            return True

        indexes = range(len(group.bundles))
        strategy = group.strategy
        if strategy in ("PACK", "STRICT_PACK"):
            for node_id in order:  # all on one node if any can
                trial = rooms[node_id].copy()
                if all(take(node_id, i, trial) for i in indexes):
                    return [node_id] * len(group.bundles)
            if strategy == "STRICT_PACK":
                return None
        assignment: list[str] = []
        for index in indexes:
            used = set(assignment)
            if strategy in ("SPREAD", "STRICT_SPREAD"):
                candidates = [n for n in order if n not in used] + (
                    [] if strategy == "STRICT_SPREAD" else [n for n in order if n in used]
                )
            else:  # PACK that did not fit on one node: fill nodes in turn
                candidates = list(dict.fromkeys(assignment)) + order
            for node_id in candidates:
                if take(node_id, index, rooms[node_id]):
                    assignment.append(node_id)
                    break
            else:
                return None
        return assignment

    def _bundle_cpus_by_node(self) -> dict[str, float]:
        """CPUs reserved by the bundles of every placed group, per node."""
        held: dict[str, float] = {}
        for group in self.groups.values():
            for node_id, bundle in zip(group.nodes, group.bundles, strict=False):
                held[node_id] = held.get(node_id, 0.0) + bundle.get("CPU", 0.0)
        return held

    def _remove(self, group: PlacementGroup) -> None:
        """Its bundles are given back and its actors end for good (as in Ray:
        a restart could never be placed)."""
        self._release(group)
        group.state = REMOVED
        self._notify(group)
        self.store.actors.on_group_removed(group.pg_id)

    def _release(self, group: PlacementGroup) -> None:
        if not group.nodes:
            return
        for node_id, indexes in _by_node(group.nodes).items():
            node = self.store.nodes.get(node_id)
            if node is not None and node["alive"]:
                asyncio.get_running_loop().create_task(
                    self._send_release(node, group.pg_id, indexes)
                )
        group.nodes = []

    async def _send_release(self, node: dict, pg_id: str, indexes: list[int]) -> None:
        try:
            conn = await self.store.actors.node_conn(node)
            conn.send(Msg.RELEASE_BUNDLES, {"pg_id": pg_id, "indexes": indexes})
        except (OSError, transport.ConnectionLost):
            pass

    def _notify(self, group: PlacementGroup) -> None:
        waiters, group.waiters = group.waiters, []
        for conn, rid in waiters:
            conn.reply(rid, group.state == CREATED)


@dataclass
class _Room:
    """What a node has left while a group's bundles are assigned."""

    free: dict  # resources available
    pg_cpus: float  # CPUs held by placement group bundles

    def copy(self) -> _Room:
        return _Room(dict(self.free), self.pg_cpus)


def _cpu_cap(node: dict, fraction: float) -> float:
    """The most CPUs placement group bundles may hold on a node, under
    _max_cpu_fraction_per_node (below 1, at least one CPU stays out, as in Ray)."""
    total = node["resources_total"].get("CPU", 0.0)
    cap = total * fraction
    return min(cap, total - 1) if fraction < 1 else cap


def _take(free: dict, bundle: dict) -> bool:
    if all(free.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items()):
        for k, v in bundle.items():
            free[k] = free.get(k, 0.0) - v
        return True
    return False


def _by_node(assignment: list[str]) -> dict[str, list[int]]:
    by_node: dict[str, list[int]] = {}
    for index, node_id in enumerate(assignment):
        by_node.setdefault(node_id, []).append(index)
    return by_node
