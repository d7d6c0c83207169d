"""`wait(fetch_local=...)` and `put(_owner=...)` against real clusters.

fetch_local is about where an object's bytes are, so it is checked on a
`Cluster` of several nodes, through the driver's node's store and through
what survives the loss of the node that made the object. put(_owner=...) is
about who the object fate-shares with: the process that put it, or the actor
named as its owner.
"""

from __future__ import annotations

import pathlib
import uuid

import numpy as np
import pytest
from conftest import wait_for_condition

import solray
from solray import exceptions
from solray._private import context
from solray._private.protocol import Msg
from solray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from solray.util.state import list_objects

GET_TIMEOUT_S = 90
N = 512 * 1024  # int64s: 4 MiB, stored in a node's store, never inline


@solray.remote
def counted_array(directory: str, n: int):
    (pathlib.Path(directory) / f"run-{uuid.uuid4().hex}").touch()
    return np.arange(n, dtype=np.int64)


def objects_on_my_node() -> int:
    """Objects in the store of the driver's node. Asked over the driver's own
    connection to it, so any pull the driver asked for before is counted."""
    return context.core_worker.request("node", Msg.STORE_STATS, None)["num_objects"]


def make_on(node, directory: pathlib.Path):
    """An array made by a task on `node` (preferred, not required: after that
    node is lost, a re-run may happen elsewhere), counting its runs."""
    on_node = NodeAffinitySchedulingStrategy(node.node_id, soft=True)
    return counted_array.options(scheduling_strategy=on_node, max_retries=1).remote(
        str(directory), N
    )


def wait_for_free_cpus(cpus: float) -> None:
    """Until every lease is back: a re-run must not be pushed to the lingering
    lease of a worker whose node just died (that would spend its one retry)."""
    wait_for_condition(
        lambda: solray.available_resources().get("CPU", 0.0) == cpus,
        timeout=30,
        message=lambda: f"free CPUs {solray.available_resources().get('CPU')} != {cpus}",
    )


def wait_dead(node_id: str) -> None:
    wait_for_condition(
        lambda: any(n["NodeID"] == node_id and not n["Alive"] for n in solray.nodes()),
        timeout=30,
        message=f"node {node_id[:8]} still alive",
    )


def runs(directory: pathlib.Path) -> int:
    return len(list(directory.glob("run-*")))


# -- wait(fetch_local=...) -------------------------------------------------------


def test_wait_fetch_local_pulls_the_object_to_this_node(cluster, tmp_path):
    """Ready means readable here: after wait() the driver's node holds a
    copy, so losing the node that made it costs nothing (no re-run)."""
    maker = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)
    assert objects_on_my_node() == 0

    ref = make_on(maker, tmp_path)
    ready, not_ready = solray.wait([ref], timeout=GET_TIMEOUT_S)  # fetch_local=True
    assert ready == [ref] and not_ready == []
    assert objects_on_my_node() == 1
    wait_for_free_cpus(2)

    cluster.remove_node(maker)
    wait_dead(maker.node_id)
    value = solray.get(ref, timeout=GET_TIMEOUT_S)
    assert np.array_equal(value, np.arange(N, dtype=np.int64))
    assert runs(tmp_path) == 1  # read from the local copy, not made again
    del value


def test_wait_fetch_local_false_leaves_the_object_where_it_is(cluster, tmp_path):
    """Ready as soon as it exists anywhere; nothing is pulled, so losing the
    node that made it means running the task again to read it."""
    maker = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)

    ref = make_on(maker, tmp_path)
    ready, _ = solray.wait([ref], timeout=GET_TIMEOUT_S, fetch_local=False)
    assert ready == [ref]
    assert objects_on_my_node() == 0
    wait_for_free_cpus(2)

    cluster.remove_node(maker)
    wait_dead(maker.node_id)
    value = solray.get(ref, timeout=GET_TIMEOUT_S)
    assert np.array_equal(value, np.arange(N, dtype=np.int64))
    assert runs(tmp_path) == 2  # the only copy was lost: reconstructed
    del value


def test_wait_fetch_local_num_returns_and_timeout(cluster, tmp_path):
    """With fetch_local, ready objects count once they are here: an inline
    value at once, store objects of another node once pulled; the order of
    the lists is the order given."""
    cluster.add_node(num_cpus=1, resources={"maker": 1})
    solray.init(address=cluster.address)

    small = solray.put("inline")
    remote = [
        counted_array.options(resources={"maker": 1}).remote(str(tmp_path), N) for _ in range(2)
    ]
    ready, not_ready = solray.wait([*remote, small], num_returns=1, timeout=0)
    assert ready == [small] and not_ready == remote
    ready, not_ready = solray.wait([*remote, small], num_returns=3, timeout=GET_TIMEOUT_S)
    assert ready == [*remote, small] and not_ready == []
    assert objects_on_my_node() == 2


def test_wait_rejects_a_non_boolean_fetch_local(cluster):
    solray.init(address=cluster.address)
    with pytest.raises(TypeError, match="fetch_local"):
        solray.wait([solray.put(1)], fetch_local="yes")


# -- put(_owner=...) -----------------------------------------------------------


@solray.remote
class Owner:
    def hold(self, refs):
        self.refs = refs  # keeps the objects referenced after the putter is gone
        return len(refs)

    def total(self) -> int:
        return int(solray.get(self.refs[0]).sum())


@solray.remote
class Putter:
    def put(self, value, owner=None):
        return [solray.put(value, _owner=owner)]  # nested: the caller borrows it


def test_put_owner_outlives_the_putter_and_dies_with_the_owner(ray_start):
    owner = Owner.remote()
    putter = Putter.remote()
    [owned] = solray.get(putter.put.remote("payload", owner), timeout=GET_TIMEOUT_S)
    [plain] = solray.get(putter.put.remote("payload"), timeout=GET_TIMEOUT_S)
    assert owned.owner_address != plain.owner_address  # the actor's, the putter's

    solray.kill(putter)
    # The putter's own object went with it; the one it put for the owner did not.
    wait_for_condition(lambda: _raises(plain, exceptions.OwnerDiedError), timeout=30)
    assert solray.get(owned, timeout=GET_TIMEOUT_S) == "payload"

    solray.kill(owner)
    wait_for_condition(lambda: _raises(owned, exceptions.OwnerDiedError), timeout=30)


def test_put_owner_keeps_the_object_while_the_owner_references_it(ray_start):
    """Objects are freed by their owner once nobody references them: here the
    owner actor holds the ref itself after the putter and the driver let go,
    so it stays its owner, and the value stays readable."""
    owner = Owner.remote()
    putter = Putter.remote()
    [ref] = solray.get(putter.put.remote(np.arange(N), owner), timeout=GET_TIMEOUT_S)
    assert solray.get(owner.hold.remote([ref]), timeout=GET_TIMEOUT_S) == 1
    solray.kill(putter)
    object_id = ref.hex()
    del ref
    rows = [row for row in list_objects() if row["object_id"] == object_id]
    assert [(row["is_owner"], row["location"]) for row in rows] == [(True, "shared_memory")], rows
    assert solray.get(owner.total.remote(), timeout=GET_TIMEOUT_S) == N * (N - 1) // 2


def test_put_owner_from_the_driver(ray_start):
    owner = Owner.remote()
    ref = solray.put({"big": np.ones(N)}, _owner=owner)
    assert ref.owner_address != context.core_worker.address
    assert solray.get(ref, timeout=GET_TIMEOUT_S)["big"].sum() == N
    solray.kill(owner)
    wait_for_condition(lambda: _raises(ref, exceptions.OwnerDiedError), timeout=30)


def test_put_owner_must_be_a_live_actor(ray_start):
    with pytest.raises(TypeError, match="_owner"):
        solray.put(1, _owner="not an actor")
    owner = Owner.remote()
    solray.kill(owner)
    with pytest.raises(exceptions.ActorDiedError, match="_owner"):
        solray.put(1, _owner=owner)


def _raises(ref, error) -> bool:
    try:
        solray.get(ref, timeout=GET_TIMEOUT_S)
    except error:
        return True
    return False


def test_put_owner_holds_the_refs_inside_the_value(ray_start):
    """The owner keeps the refs nested in an object it owns alive, as any
    owner does: here the only other holder of the inner object lets go."""
    owner = Owner.remote()
    inner = solray.put(np.arange(N))  # the driver's, in the store
    outer = solray.put([inner], _owner=owner)
    del inner
    [again] = solray.get(outer, timeout=GET_TIMEOUT_S)
    assert int(solray.get(again, timeout=GET_TIMEOUT_S).sum()) == N * (N - 1) // 2


def test_put_owner_on_another_node(cluster):
    """The object lives in the putter's node's store, its owner on a third
    node: it outlives the putter, and every node drops it when the owner dies."""
    cluster.add_node(num_cpus=1, resources={"putter": 1})
    cluster.add_node(num_cpus=1, resources={"owner": 1})
    solray.init(address=cluster.address)
    owner = Owner.options(resources={"owner": 0.1}).remote()
    putter = Putter.options(resources={"putter": 0.1}).remote()
    [ref] = solray.get(putter.put.remote(np.ones(N), owner), timeout=GET_TIMEOUT_S)
    solray.kill(putter)
    assert solray.get(ref, timeout=GET_TIMEOUT_S).sum() == N  # pulled to the driver's node

    solray.kill(owner)
    wait_for_condition(lambda: _raises(ref, exceptions.OwnerDiedError), timeout=30)
