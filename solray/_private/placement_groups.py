"""Placement groups, kept by the control store.

A group is a list of bundles (resource dicts) reserved together, with a
strategy: PACK (as few nodes as possible), SPREAD (as many as possible),
STRICT_PACK (one node, or wait), STRICT_SPREAD (one node per bundle, or wait).

Creation is two-phase: the placement engine (placement.assign_bundles)
assigns bundles to nodes from the control store's cluster view (with the
group's label selectors, `_max_cpu_fraction_per_node` and
`_soft_target_node_id`), then each node is asked to reserve its bundles
(RESERVE_BUNDLES). If any node refuses (its resources moved on since the view
was taken), the reservations just made are released and the group waits for
the next change in the cluster.

When a node dies, only the bundles it held are placed again (the group is
RESCHEDULING meanwhile), by the same strategy and next to the bundles that
survived: the workers of those keep running.

A reserved bundle i of group G on a node turns its resources, say {"CPU": 2},
into new node resources "CPU_group_G" and "CPU_group_i_G" (plus the markers
"bundle_group_G" and "bundle_group_i_G"), as in Ray. A task or actor placed in
the group asks for those names instead (`group_resources`), so the ordinary
lease routing takes it to the node holding the bundle.

Persistence: a group is written to the control store's storage when it is
created (answered once written) and when its state or nodes change. Nodes
keep their reserved bundles while the control store is away, so a restored
CREATED group is simply still there; one being placed is placed again once
nodes are back. A non-detached group's owner must come back within the
recovery window (`claim`), or the group is removed as if it had died.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgpack

from solray._private import ids, transport
from solray._private.control_storage import GROUPS
from solray._private.placement import BundleRequest, assign_bundles
from solray._private.protocol import Msg

# RESCHEDULING: created, then some bundles were lost with their node and are
# being placed again (as in Ray).
PENDING, CREATED, RESCHEDULING, REMOVED = "PENDING", "CREATED", "RESCHEDULING", "REMOVED"
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


def bundle_resource_names(key: str, pg_id: str, bundle_index: int) -> tuple[str, str]:
    """The names resource `key` of a reserved bundle takes on its node: for
    any bundle of the group, and for this bundle."""
    return f"{key}_group_{pg_id}", f"{key}_group_{bundle_index}_{pg_id}"


def bundle_resources(resources: dict, pg_id: str, bundle_index: int) -> dict:
    """What a node adds when it reserves bundle `bundle_index`."""
    added: dict[str, float] = {}
    for key, amount in resources.items():
        for name in bundle_resource_names(key, pg_id, bundle_index):
            added[name] = added.get(name, 0.0) + amount
    added[f"bundle_group_{pg_id}"] = 1000.0
    added[f"bundle_group_{bundle_index}_{pg_id}"] = 1000.0
    return added


@dataclass
class PlacementGroup:
    pg_id: str
    bundles: list
    strategy: str
    name: str
    owner: transport.Connection | None  # None: restored, its owner not back yet
    detached: bool
    label_selectors: list | None = None  # per bundle
    max_cpu_fraction: float | None = None
    soft_target: str | None = None  # node id
    creator_job_id: str | None = None  # hex; None if a worker made it
    state: str = PENDING
    nodes: list = field(default_factory=list)  # node id per bundle; None: not placed
    waiters: list = field(default_factory=list)
    placing: bool = False
    again: bool = False  # the cluster changed while placing: try again after
    owner_address: str = ""  # the owner's core worker, to claim it after a restart

    def __post_init__(self) -> None:
        self.nodes = [None] * len(self.bundles)


# What of a group is stored (its connections and placing flags are not).
STORED = (
    "pg_id",
    "bundles",
    "strategy",
    "name",
    "detached",
    "label_selectors",
    "max_cpu_fraction",
    "soft_target",
    "creator_job_id",
    "state",
    "nodes",
    "owner_address",
)


class PlacementGroupManager:
    def __init__(self, store):
        self.store = store
        # Every group, removed ones too (the table lists them, as Ray's).
        self.groups: dict[str, PlacementGroup] = {}
        # Those not removed: what placing, node changes and name checks look
        # at. A program that makes and removes groups by the thousand would
        # otherwise pay for every group it ever made on each change.
        self.live: dict[str, PlacementGroup] = {}
        self.handlers = {
            Msg.CREATE_PG: self.create,
            Msg.REMOVE_PG: self.remove,
            Msg.WAIT_PG: self.wait,
            Msg.PG_TABLE: self.table,
        }

    def create(self, conn, rid, body, bufs) -> None:
        if body["pg_id"] in self.groups:
            conn.reply(rid, {"ok": True})  # sent again after a control store restart
            return
        name = body.get("name") or ""
        if name and any(g.name == name for g in self.live.values()):
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
            _job_hex(conn.peer.get("job")),
        )
        group.owner_address = conn.peer.get("address") or ""
        self.groups[group.pg_id] = self.live[group.pg_id] = group
        conn.peer.setdefault("placement_groups", set()).add(group.pg_id)
        self._save(group)
        self.store.persist.after_commit(lambda: conn.reply(rid, {"ok": True}))
        self._place(group)

    def remove(self, conn, rid, body, bufs) -> None:
        group = self.live.get(body["pg_id"])
        if group is not None:
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
                    "bundles_to_node_id": {i: n for i, n in enumerate(g.nodes) if n},
                    "is_detached": g.detached,
                    "creator_job_id": g.creator_job_id,
                }
                for g in self.groups.values()
                if body is None
                or body.get("pg_id") in (None, g.pg_id)
                and body.get("name") in (None, g.name)
            },
        )

    # -- persistence and recovery ----------------------------------------------

    def _save(self, group: PlacementGroup) -> None:
        row = {name: getattr(group, name) for name in STORED}
        self.store.persist.put(GROUPS, group.pg_id.encode(), msgpack.packb(row))

    def restore(self, tables: dict) -> None:
        for value in tables[GROUPS].values():
            row = msgpack.unpackb(value, strict_map_key=False)
            nodes = row.pop("nodes")
            group = PlacementGroup(owner=None, **row)
            group.nodes = nodes
            self.groups[group.pg_id] = group
            if group.state != REMOVED:
                self.live[group.pg_id] = group  # placed again once nodes are back

    def claim(self, conn) -> None:
        address = conn.peer["address"]
        for group in self.live.values():
            if group.owner is None and group.owner_address == address:
                group.owner = conn
                conn.peer.setdefault("placement_groups", set()).add(group.pg_id)

    def end_recovery(self) -> None:
        for group in list(self.live.values()):
            if group.owner is None and not group.detached:
                self._remove(group)

    def on_connection_closed(self, conn) -> None:
        for pg_id in list(conn.peer.get("placement_groups", ())):
            group = self.live.get(pg_id)
            if group is not None and not group.detached:
                self._remove(group)
        for group in self.live.values():
            group.waiters = [w for w in group.waiters if w[0] is not conn]

    def on_cluster_changed(self) -> None:
        for group in list(self.live.values()):
            if group.state in (PENDING, RESCHEDULING):
                self._place(group)

    def on_node_removed(self, node_id: str) -> None:
        """Bundles on a dead node are lost: only those are placed again (by
        the group's strategy, next to the bundles that survived); workers of
        the other bundles keep running."""
        for group in self.live.values():
            if node_id in group.nodes:
                group.nodes = [None if n == node_id else n for n in group.nodes]
                if group.state == CREATED:
                    group.state = RESCHEDULING
                self._save(group)
                self._place(group)

    # -- placing -------------------------------------------------------------

    def _place(self, group: PlacementGroup) -> None:
        if group.placing:
            group.again = True  # the cluster changed meanwhile: look again after
            return
        if None in group.nodes:
            group.placing = True
            asyncio.get_running_loop().create_task(self._try_place(group))

    async def _try_place(self, group: PlacementGroup) -> None:
        """Assign the unplaced bundles (placement.assign_bundles), then have
        each node reserve its new ones; if any node refuses (its resources
        moved on since the view was taken), the new reservations are
        released and the group waits for the next change."""
        view = self.store.view
        try:
            placed = list(group.nodes)
            assignment = assign_bundles(
                view,
                BundleRequest(
                    group.bundles,
                    group.strategy,
                    group.label_selectors,
                    group.max_cpu_fraction,
                    group.soft_target,
                ),
                placed,
                self._bundle_cpus_by_node(),
            )
            if assignment is None:
                return  # waits for the cluster to change
            new = {i: node_id for i, node_id in enumerate(assignment) if placed[i] is None}
            for index, node_id in new.items():
                view.take(node_id, group.bundles[index])
            reserved = []
            ok = True
            for node_id, indexes in _by_node(new).items():
                node = view.nodes[node_id]
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
            # A node that died while we reserved: its bundles are placed again.
            for index, node_id in new.items():
                if group.nodes[index] is None and view.nodes[node_id]["alive"]:
                    group.nodes[index] = node_id
            if None in group.nodes:
                group.again = True
                return
            group.state = CREATED
            self._save(group)
            self._notify(group)
        finally:
            group.placing = False
            if group.again and group.state != REMOVED:
                group.again = False
                self._place(group)

    def _bundle_cpus_by_node(self) -> dict[str, float]:
        """CPUs reserved by the bundles of every placed group, per node."""
        held: dict[str, float] = {}
        for group in self.live.values():
            for node_id, bundle in zip(group.nodes, group.bundles, strict=True):
                if node_id is not None:
                    held[node_id] = held.get(node_id, 0.0) + bundle.get("CPU", 0.0)
        return held

    def _remove(self, group: PlacementGroup) -> None:
        """Its bundles are given back and its actors end for good (as in Ray:
        a restart could never be placed)."""
        self._release(group)
        group.state = REMOVED
        del self.live[group.pg_id]
        if group.owner is not None:
            group.owner.peer.get("placement_groups", set()).discard(group.pg_id)
        self._save(group)
        self._notify(group)
        self.store.actors.on_group_removed(group.pg_id)

    def _release(self, group: PlacementGroup) -> None:
        placed = {i: n for i, n in enumerate(group.nodes) if n is not None}
        for node_id, indexes in _by_node(placed).items():
            node = self.store.view.nodes.get(node_id)
            if node is not None and node["alive"]:
                asyncio.get_running_loop().create_task(
                    self._send_release(node, group.pg_id, indexes)
                )
        group.nodes = [None] * len(group.bundles)

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


def _by_node(assignment: dict[int, str]) -> dict[str, list[int]]:
    by_node: dict[str, list[int]] = {}
    for index, node_id in assignment.items():
        by_node.setdefault(node_id, []).append(index)
    return by_node


def _job_hex(job: int | None) -> str | None:
    return ids.job_id_bytes(job).hex() if job is not None else None
