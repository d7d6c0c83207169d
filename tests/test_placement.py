"""The placement engine and placement groups on several real nodes
(`solray.cluster_utils.Cluster`): bursts of actors spread over the cluster, a
lease sent to a node that is full is routed on, the four bundle strategies
on one node and on several, GPU bundles (GPUs declared logically), child
tasks captured by a group, and a dead node's bundles placed again without
touching the others.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import time
from collections import Counter

import pytest
from conftest import wait_for_condition, wait_for_file

import solray
from solray._private import transport
from solray._private.placement import BundleRequest, ClusterView, Demand, assign_bundles
from solray._private.protocol import Msg
from solray.cluster_utils import Cluster
from solray.util.placement_group import (
    get_current_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from solray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)
from solray.util.state import list_actors

GET_TIMEOUT_S = 60


@pytest.fixture
def cluster(leak_check):
    c = Cluster()
    yield c
    c.shutdown()  # also solray.shutdown()


def this_node() -> str:
    return solray.get_runtime_context().get_node_id()


@solray.remote
class Where:
    def node(self) -> str:
        return this_node()

    def pid(self) -> int:
        return os.getpid()


def bundle_nodes(pg) -> list[str]:
    table = placement_group_table(pg)
    assert table["state"] == "CREATED", table
    return [table["bundles_to_node_id"][i] for i in range(pg.bundle_count)]


def in_bundle(pg, index: int = -1, capture: bool = False) -> PlacementGroupSchedulingStrategy:
    return PlacementGroupSchedulingStrategy(
        pg, placement_group_bundle_index=index, placement_group_capture_child_tasks=capture
    )


# -- the placement engine ------------------------------------------------------


def test_burst_of_actors_spreads_over_the_nodes(cluster):
    """8 actors of 1 CPU on 4 nodes of 2 CPUs: every one is placed, 2 per
    node, within seconds (none waits at a full node while others have room)."""
    nodes = [cluster.add_node(num_cpus=2) for _ in range(4)]
    solray.init(address=cluster.address)
    start = time.monotonic()
    actors = [Where.options(num_cpus=1).remote() for _ in range(8)]
    where = solray.get([a.node.remote() for a in actors], timeout=GET_TIMEOUT_S)
    elapsed = time.monotonic() - start
    assert Counter(where) == {node.node_id: 2 for node in nodes}
    assert elapsed < 30, f"8 actors took {elapsed:.1f}s to be placed"
    assert solray.available_resources().get("CPU", 0.0) == 0


def test_waiting_actor_goes_to_the_node_that_frees_up(cluster):
    """Every node is full: a third actor's request waits at one of them. When
    the actor on the *other* node ends, the waiting request is routed there
    (it does not wait for the node it was sent to)."""
    cluster.add_node(num_cpus=0)  # the head: the driver's node
    nodes = {cluster.add_node(num_cpus=1).node_id for _ in range(2)}
    solray.init(address=cluster.address)
    running = [Where.options(num_cpus=1).remote() for _ in range(2)]
    where = solray.get([a.node.remote() for a in running], timeout=GET_TIMEOUT_S)
    assert set(where) == nodes
    waiting = Where.options(num_cpus=1).remote()
    rows = []
    wait_for_condition(  # its request is at a node
        lambda: (
            rows.extend(list_actors(filters=[("actor_id", "=", waiting._actor_id.hex())]))
            or rows[-1]["node_id"] in nodes
        ),
        timeout=GET_TIMEOUT_S,
    )
    row = rows[-1]
    assert row["state"] == "PENDING", row
    other = where.index(next(n for n in nodes if n != row["node_id"]))
    solray.kill(running[other])
    assert solray.get(waiting.node.remote(), timeout=GET_TIMEOUT_S) == where[other]


def node_request(cluster: Cluster, node, msg: Msg, body):
    """Ask one node directly, over its authenticated socket, as owners do."""

    async def query():
        conn = await transport.connect(node.address, cluster.token)
        try:
            return await asyncio.wait_for(conn.request(msg, body), GET_TIMEOUT_S)
        finally:
            conn.close()

    return asyncio.run(query())


def test_lease_sent_to_a_full_node_is_routed_on(cluster, tmp_path):
    """A request another node sent on (spilled once) that finds this node
    full is sent on to a node where it fits now, instead of waiting here."""
    cluster.add_node(num_cpus=0)  # the head: the driver's node, no CPUs
    full = cluster.add_node(num_cpus=1)
    free = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)

    @solray.remote(num_cpus=1)
    def hold(directory: str) -> None:
        (pathlib.Path(directory) / "started").touch()
        wait_for_file(os.path.join(directory, "release"), timeout=GET_TIMEOUT_S)

    on_full = NodeAffinitySchedulingStrategy(full.node_id, soft=False)
    held = hold.options(scheduling_strategy=on_full).remote(str(tmp_path))
    wait_for_file(tmp_path / "started", timeout=GET_TIMEOUT_S)
    wait_for_condition(
        lambda: solray.available_resources().get("CPU") == 1.0, timeout=GET_TIMEOUT_S
    )

    reply = node_request(
        cluster, full, Msg.REQUEST_LEASE, {"resources": {"CPU": 1.0}, "spilled": 1}
    )
    assert reply == {"spillback": {"address": free.address, "node_id": free.node_id}}
    (tmp_path / "release").touch()
    solray.get(held, timeout=GET_TIMEOUT_S)


# -- placement group strategies -----------------------------------------------


@pytest.mark.parametrize("num_nodes", [1, 3])
def test_bundle_strategies_on_one_node_and_on_several(cluster, num_nodes):
    """PACK and SPREAD are best effort, STRICT_PACK and STRICT_SPREAD strict,
    whether the cluster has one node or several."""
    nodes = [cluster.add_node(num_cpus=3) for _ in range(num_nodes)]
    solray.init(address=cluster.address)
    all_cpus = 3.0 * num_nodes

    def created(strategy: str, bundles: list[dict]) -> list[str]:
        pg = placement_group(bundles, strategy=strategy)
        assert pg.wait(timeout_seconds=GET_TIMEOUT_S), (strategy, bundles)
        where = bundle_nodes(pg)
        remove_placement_group(pg)
        wait_for_condition(
            lambda: solray.available_resources().get("CPU") == all_cpus, timeout=GET_TIMEOUT_S
        )
        return where

    assert len(set(created("PACK", [{"CPU": 1}] * 3))) == 1
    assert len(set(created("STRICT_PACK", [{"CPU": 1}] * 3))) == 1
    assert len(set(created("SPREAD", [{"CPU": 1}] * 3))) == num_nodes
    if num_nodes == 1:
        # Best effort: more than the node holds is spread over what there is.
        assert set(created("PACK", [{"CPU": 2}, {"CPU": 1}])) == {nodes[0].node_id}
        strict = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
        assert not strict.wait(timeout_seconds=1)
        assert placement_group_table(strict)["state"] == "PENDING"
        assert solray.available_resources().get("CPU") == all_cpus  # nothing held
        other = cluster.add_node(num_cpus=1)  # a second node makes it possible
        assert strict.wait(timeout_seconds=GET_TIMEOUT_S)
        assert set(bundle_nodes(strict)) == {nodes[0].node_id, other.node_id}
        remove_placement_group(strict)
    else:
        assert len(set(created("STRICT_SPREAD", [{"CPU": 1}] * 3))) == 3
        # PACK of more than one node holds: as few nodes as possible.
        assert len(set(created("PACK", [{"CPU": 2}, {"CPU": 2}]))) == 2
        too_packed = placement_group([{"CPU": 2}, {"CPU": 2}], strategy="STRICT_PACK")
        assert not too_packed.wait(timeout_seconds=1)
        assert placement_group_table(too_packed)["state"] == "PENDING"
        remove_placement_group(too_packed)


# -- GPU bundles --------------------------------------------------------------


@solray.remote(num_gpus=1, max_calls=0)
def gpus_seen() -> tuple[list, str | None]:
    return solray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@solray.remote(num_gpus=1)
class GpuActor:
    def seen(self) -> tuple[list, str | None]:
        return solray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_gpu_bundles_carry_their_devices_and_give_them_back(cluster):
    cluster.add_node(num_cpus=4, num_gpus=2)
    solray.init(address=cluster.address)

    pg = placement_group([{"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}], strategy="STRICT_PACK")
    assert pg.wait(timeout_seconds=GET_TIMEOUT_S)
    # The cluster's view of free resources follows the nodes' reports, as Ray's.
    wait_for_condition(
        lambda: solray.available_resources().get("GPU", 0.0) == 0, timeout=GET_TIMEOUT_S
    )
    seen = [
        solray.get(gpus_seen.options(scheduling_strategy=in_bundle(pg, i)).remote()) for i in (0, 1)
    ]
    (ids0, visible0), (ids1, visible1) = seen
    assert len(ids0) == 1 and len(ids1) == 1 and ids0 != ids1
    assert sorted(ids0 + ids1) == [0, 1]
    assert (visible0, visible1) == (str(ids0[0]), str(ids1[0]))
    # Any bundle: one of the group's devices.
    ids, visible = solray.get(gpus_seen.options(scheduling_strategy=in_bundle(pg)).remote())
    assert len(ids) == 1 and ids[0] in (0, 1) and visible == str(ids[0])
    # An actor in bundle 1 keeps bundle 1's device.
    actor = GpuActor.options(scheduling_strategy=in_bundle(pg, 1)).remote()
    assert solray.get(actor.seen.remote(), timeout=GET_TIMEOUT_S) == (ids1, visible1)

    remove_placement_group(pg)
    # Both devices are back: a task needing both runs.
    both = gpus_seen.options(num_gpus=2).remote()
    ids, visible = solray.get(both, timeout=GET_TIMEOUT_S)
    assert sorted(ids) == [0, 1] and sorted(visible.split(",")) == ["0", "1"]
    wait_for_condition(
        lambda: solray.available_resources().get("GPU") == 2.0, timeout=GET_TIMEOUT_S
    )


# -- captured child tasks -------------------------------------------------------


def test_parent_holding_every_cpu_of_a_group_runs_its_child_in_the_group(cluster):
    cluster.add_node(num_cpus=2)
    solray.init(address=cluster.address)

    @solray.remote(num_cpus=1)
    def child():
        group = get_current_placement_group()
        return None if group is None else group.id

    @solray.remote(num_cpus=1)
    def parent():
        return get_current_placement_group().id, solray.get(child.remote())

    pg = placement_group([{"CPU": 2}])  # every CPU of the node
    assert pg.wait(timeout_seconds=GET_TIMEOUT_S)
    captured = parent.options(scheduling_strategy=in_bundle(pg, capture=True)).remote()
    assert solray.get(captured, timeout=GET_TIMEOUT_S) == (pg.id, pg.id)
    remove_placement_group(pg)


# -- node failure -----------------------------------------------------------------


@solray.remote(num_cpus=1, max_restarts=1)
class Tally:
    def __init__(self):
        self.count = 0

    def add(self) -> tuple[int, int, str]:
        self.count += 1
        return self.count, os.getpid(), this_node()


def test_only_a_dead_nodes_bundles_are_placed_again(cluster):
    """A node holding one bundle of a STRICT_SPREAD group dies: that bundle
    alone is placed again (on a new node); the actor in the bundle on the
    surviving node keeps its process and its state, and the one on the dead
    node restarts in the bundle's new place."""
    cluster.add_node(num_cpus=0)  # the head: the driver's node
    a = cluster.add_node(num_cpus=1)
    b = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert pg.wait(timeout_seconds=GET_TIMEOUT_S)
    before = bundle_nodes(pg)
    assert set(before) == {a.node_id, b.node_id}
    actors = [Tally.options(scheduling_strategy=in_bundle(pg, i)).remote() for i in (0, 1)]
    first = solray.get([actor.add.remote() for actor in actors], timeout=GET_TIMEOUT_S)
    assert [node for _, _, node in first] == before

    survivor = 0 if before[0] == a.node_id else 1
    lost = 1 - survivor
    replacement = cluster.add_node(num_cpus=1)
    cluster.remove_node(b)

    def replaced() -> bool:
        table = placement_group_table(pg)
        return table["state"] == "CREATED" and table["bundles_to_node_id"].get(lost) == (
            replacement.node_id
        )

    wait_for_condition(replaced, timeout=GET_TIMEOUT_S, message=lambda: placement_group_table(pg))
    assert bundle_nodes(pg)[survivor] == a.node_id
    # The survivor was never restarted: same process, its count goes on.
    assert solray.get(actors[survivor].add.remote(), timeout=GET_TIMEOUT_S) == (
        2,
        first[survivor][1],
        a.node_id,
    )
    # The lost one restarted (state from scratch) in its bundle's new place.
    after = []

    def restarted() -> bool:
        try:
            after.append(solray.get(actors[lost].add.remote(), timeout=GET_TIMEOUT_S))
            return True
        except solray.exceptions.RayActorError:
            return False  # a call that met the old process

    wait_for_condition(restarted, timeout=GET_TIMEOUT_S)
    count, _, node = after[-1]
    assert (count, node) == (1, replacement.node_id)
    remove_placement_group(pg)


# -- the engine's bundle rules, directly -------------------------------------------


def view_of(**cpus: float) -> ClusterView:
    """A control store's view of nodes with these free (and total) CPUs."""
    view = ClusterView()
    for node_id, amount in cpus.items():
        view.add({"node_id": node_id, "address": "", "resources_total": {"CPU": amount}})
    return view


def test_lost_bundles_are_placed_by_the_groups_strategy_next_to_the_survivors():
    view = view_of(a=4, b=4, c=4)
    one = {"CPU": 1}

    def place(strategy: str, placed: list) -> list | None:
        return assign_bundles(view, BundleRequest([one] * len(placed), strategy), placed, {})

    # STRICT_SPREAD: never on a node holding another bundle of the group.
    assert place("STRICT_SPREAD", ["a", None, "c"]) == ["a", "b", "c"]
    assert place("STRICT_SPREAD", ["a", None, "b", "c"]) is None
    # STRICT_PACK: on the survivors' node only (or not at all).
    assert place("STRICT_PACK", ["b", None, None]) == ["b", "b", "b"]
    view.take("b", {"CPU": 3})
    assert place("STRICT_PACK", ["b", None, None]) is None
    # PACK: as few nodes as possible, the survivors' first (b has room for
    # one bundle only: both go to one other node).
    assert place("PACK", ["b", None, None]) == ["b", "a", "a"]
    assert place("PACK", ["b", None]) == ["b", "b"]
    # SPREAD: nodes holding none of the group first.
    assert place("SPREAD", ["a", None, None]) == ["a", "c", "b"]
    # Nothing to place, or a survivor on a node the view no longer has alive.
    assert place("PACK", ["a", "b"]) == ["a", "b"]
    view.remove("c")
    assert place("SPREAD", ["c", None]) is None


def test_what_was_sent_counts_until_the_node_reports():
    view = view_of(a=2, b=2)
    demand = Demand({"CPU": 1})
    picks = []
    for _ in range(2):
        picks.append(view.pick_default(demand)["node_id"])
        view.take(picks[-1], demand.resources)
    assert sorted(picks) == ["a", "b"]  # each decision saw the one before
    assert view.available(view.nodes["a"]) == {"CPU": 1.0}
    view.report("a", {"CPU": 2.0}, {"CPU": 2.0})  # the node's report supersedes it
    assert view.available(view.nodes["a"]) == {"CPU": 2.0}
