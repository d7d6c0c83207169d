"""Several real nodes on this machine (`solray.cluster_utils.Cluster`):
routing by resources, spillback, object transfer between nodes, locality,
SPREAD and node affinity, placement groups, node failure and recovery,
heartbeat timeouts, and the cluster token.

Every node is a real process with its own workers and object store. Tasks
that must run at the same time meet at a barrier made of files in tmp_path
(each task touches a file and waits until all have), so a placement that
would run them one after another fails the test instead of passing by luck.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import numpy as np
import psutil
import pytest
from conftest import (
    barrier,
    logged,
    mapped_file,
    solray_log,
    store_file,
    wait_for_condition,
    wait_for_file,
)

import solray
from solray import exceptions
from solray._private import services, transport
from solray._private.protocol import Msg
from solray.cluster_utils import Cluster
from solray.util.placement_group import (
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from solray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)
from solray.util.state import list_actors

GET_TIMEOUT_S = 90
BARRIER_TIMEOUT_S = 60
MiB = 2**20


# -- helpers -----------------------------------------------------------------


def this_node() -> str:
    return solray.get_runtime_context().get_node_id()


@solray.remote
def node_of() -> str:
    return this_node()


@solray.remote
def meet(directory: str, parties: int) -> str:
    barrier(directory, parties, BARRIER_TIMEOUT_S)
    return this_node()


@solray.remote
class Where:
    def node(self) -> str:
        return this_node()


def node_request(cluster: Cluster, node, msg: Msg, body=None):
    """Ask one node directly (over its authenticated socket, as its peers do)."""

    async def query():
        conn = await transport.connect(node.address, cluster.token)
        try:
            return await conn.request(msg, body)
        finally:
            conn.close()

    return asyncio.run(query())


def alive_nodes() -> set[str]:
    return {n["NodeID"] for n in solray.nodes() if n["Alive"]}


def wait_for_free_cpus(cpus: float) -> None:
    """Until the cluster has exactly `cpus` free CPUs; with all of them, every
    lease (even one granted after its tasks had finished) is back, so the
    next placement starts from an idle cluster."""
    wait_for_condition(
        lambda: solray.available_resources().get("CPU", 0.0) == cpus,
        timeout=30,
        message=lambda: f"free CPUs {solray.available_resources().get('CPU')} != {cpus}",
    )


def exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_dead(node_id: str, timeout: float = 30) -> None:
    wait_for_condition(
        lambda: any(n["NodeID"] == node_id and not n["Alive"] for n in solray.nodes()),
        timeout=timeout,
        message=f"node {node_id[:8]} still alive in solray.nodes()",
    )


# -- routing -----------------------------------------------------------------


def test_custom_resources_route_tasks_and_actors(cluster):
    special = cluster.add_node(num_cpus=1, resources={"special": 1})
    plain = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)

    assert alive_nodes() == {cluster.head_node.node_id, special.node_id, plain.node_id}
    resources = solray.cluster_resources()
    assert resources["CPU"] == 3
    assert resources["special"] == 1

    refs = [node_of.options(resources={"special": 1}).remote() for _ in range(4)]
    assert solray.get(refs, timeout=GET_TIMEOUT_S) == [special.node_id] * 4
    # A fractional amount of the resource routes the same way.
    ref = node_of.options(resources={"special": 0.5}).remote()
    assert solray.get(ref, timeout=GET_TIMEOUT_S) == special.node_id

    actor = Where.options(resources={"special": 1}).remote()
    assert solray.get(actor.node.remote(), timeout=GET_TIMEOUT_S) == special.node_id


def test_node_ip_address_is_where_the_cluster_reaches_this_process(cluster):
    from solray._private import host
    from solray.util import get_node_ip_address

    # Not connected: the address this host routes from (as Ray's).
    assert get_node_ip_address() == host.default_node_ip()
    with pytest.raises(ConnectionError, match="No node of this cluster runs on 10.9.9.9"):
        solray.init(address=cluster.address, _node_ip_address="10.9.9.9")
    assert not solray.is_initialized()
    solray.init(address=cluster.address)
    assert get_node_ip_address() == "127.0.0.1"  # the Cluster's nodes listen on loopback

    @solray.remote
    def ip_in_task():
        return get_node_ip_address()

    assert solray.get(ip_in_task.remote(), timeout=GET_TIMEOUT_S) == "127.0.0.1"
    head = [n for n in solray.nodes() if n["NodeID"] == cluster.head_node.node_id][0]
    assert head["NodeManagerAddress"] == get_node_ip_address()
    assert solray.get_runtime_context().get_node_id() == cluster.head_node.node_id


def test_init_without_an_address_joins_the_cluster_ray_address_names(cluster):
    probe = "import solray; solray.init(); print(solray.get_runtime_context().get_node_id())"
    for variable in ("RAY_ADDRESS", "SOLRAY_ADDRESS"):
        env = {k: v for k, v in os.environ.items() if not k.endswith("_ADDRESS")}
        env[variable] = cluster.address
        run = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == cluster.head_node.node_id, variable


def test_tasks_spill_to_nodes_with_free_cpus(cluster, tmp_path):
    """5 tasks that must run at the same time on 5 CPUs, the driver's node
    has 1: the other four spill, two to each other node (a burst of
    spillbacks must not pile onto one node)."""
    a = cluster.add_node(num_cpus=2)
    b = cluster.add_node(num_cpus=2)
    solray.init(address=cluster.address)

    for attempt in range(3):
        wait_for_free_cpus(5)
        directory = tmp_path / str(attempt)
        directory.mkdir()
        refs = [meet.remote(str(directory), 5) for _ in range(5)]
        where = Counter(solray.get(refs, timeout=GET_TIMEOUT_S))
        assert where == {cluster.head_node.node_id: 1, a.node_id: 2, b.node_id: 2}


# -- objects between nodes ----------------------------------------------------

ARRAY_LEN = 100 * MiB // 8  # 100 MB of int64


@solray.remote(num_returns=2)
def make_array(n: int):
    return np.arange(n, dtype=np.int64), this_node()


@solray.remote
def array_sum(array) -> tuple[int, str, str | None]:
    """The sum, the node it ran on, and the file the array was read from."""
    return int(array.sum()), this_node(), mapped_file(array)


def test_large_object_produced_on_one_node_consumed_on_another(cluster):
    producer = cluster.add_node(num_cpus=1, resources={"producer": 1})
    consumer = cluster.add_node(num_cpus=1, resources={"consumer": 1})
    solray.init(address=cluster.address)

    array_ref, made_on = make_array.options(resources={"producer": 1}).remote(ARRAY_LEN)
    total, consumed_on, read_from = solray.get(
        array_sum.options(resources={"consumer": 1}).remote(array_ref), timeout=GET_TIMEOUT_S
    )
    assert solray.get(made_on, timeout=GET_TIMEOUT_S) == producer.node_id
    assert consumed_on == consumer.node_id
    assert total == ARRAY_LEN * (ARRAY_LEN - 1) // 2
    assert read_from == store_file(consumer.node_id)  # in place, in the consumer's store

    # The driver (on the head node) reads it too: pulled, zero-copy.
    array = solray.get(array_ref, timeout=GET_TIMEOUT_S)
    assert array.shape == (ARRAY_LEN,)
    assert array[0] == 0 and array[-1] == ARRAY_LEN - 1
    assert array[ARRAY_LEN // 2] == ARRAY_LEN // 2
    assert not array.flags.writeable
    assert mapped_file(array) == store_file()
    del array


def test_driver_gets_object_living_on_remote_node(cluster):
    remote = cluster.add_node(num_cpus=1, resources={"remote": 1})
    solray.init(address=cluster.address)

    @solray.remote(resources={"remote": 1})
    def matrix():
        return np.full((512, 1024), 7.0)  # 4 MiB: stored in the remote node's store

    ref = matrix.remote()
    array = solray.get(ref, timeout=GET_TIMEOUT_S)
    assert array.shape == (512, 1024) and float(array.sum()) == 7.0 * 512 * 1024
    assert not array.flags.writeable
    assert mapped_file(array) == store_file()  # pulled to the driver's node, zero-copy
    assert node_request(cluster, remote, Msg.STORE_STATS)["num_objects"] == 1
    del array
    # Dropping the last ref frees it on the node that made it, too.
    del ref
    wait_for_condition(
        lambda: node_request(cluster, remote, Msg.STORE_STATS)["num_objects"] == 0, timeout=30
    )


def test_object_needed_by_many_tasks_on_a_node_is_fetched_once(cluster):
    source = cluster.add_node(num_cpus=1, resources={"source": 1})
    sink = cluster.add_node(num_cpus=2, resources={"sink": 100})
    solray.init(address=cluster.address)

    n = 20 * MiB // 8
    array_ref, made_on = make_array.options(resources={"source": 1}).remote(n)
    assert solray.get(made_on, timeout=GET_TIMEOUT_S) == source.node_id
    refs = [array_sum.options(resources={"sink": 1}).remote(array_ref) for _ in range(8)]
    results = solray.get(refs, timeout=GET_TIMEOUT_S)
    assert {total for total, _, _ in results} == {n * (n - 1) // 2}
    assert {node for _, node, _ in results} == {sink.node_id}
    stats = node_request(cluster, sink, Msg.STORE_STATS)
    assert stats["num_objects"] == 1, stats
    assert 8 * n <= stats["used"] < 2 * 8 * n, stats  # one copy, not one per task


def test_task_runs_where_its_large_argument_lives(cluster):
    holder = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)

    on_holder = NodeAffinitySchedulingStrategy(holder.node_id, soft=False)
    array_ref, made_on = make_array.options(scheduling_strategy=on_holder).remote(4 * MiB)
    assert solray.get(made_on, timeout=GET_TIMEOUT_S) == holder.node_id
    for _ in range(3):
        wait_for_free_cpus(2)  # the holder has a free CPU
        total, ran_on, _ = solray.get(array_sum.remote(array_ref), timeout=GET_TIMEOUT_S)
        assert total == 4 * MiB * (4 * MiB - 1) // 2
        assert ran_on == holder.node_id


def test_nodes_sharing_a_spill_directory_keep_to_their_own(leak_check, tmp_path):
    """Two nodes of one cluster spill into the same user-named directory:
    each writes only in a subdirectory of its own, and one node stopping
    deletes its own files, not the other's nor the user's."""
    base = tmp_path / "spill"
    base.mkdir()
    (base / "mine.txt").write_text("the user's own file")
    spill = {"object_store_memory": 100 * MiB, "object_spilling_directory": str(base)}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, **spill})
    try:
        other = cluster.add_node(num_cpus=1, resources={"other": 1}, **spill)
        solray.init(address=cluster.address)
        n = 10 * MiB // 8

        @solray.remote(resources={"other": 1})
        def make(i):
            return np.full(n, i, dtype=np.int64)  # stored in the other node's store

        on_head = [solray.put(np.full(n, i, dtype=np.int64)) for i in range(15)]
        on_other = [make.remote(100 + i) for i in range(15)]
        solray.wait(on_other, num_returns=len(on_other), timeout=GET_TIMEOUT_S)

        session = os.path.basename(cluster.session_dir)
        directories = {}
        for node in (cluster.head_node, other):
            (directories[node.node_id],) = node_request(cluster, node, Msg.STORE_STATS)[
                "spill_dirs"
            ]
            assert directories[node.node_id] == str(base / f"solray_spill_{session}_{node.node_id}")
            assert os.listdir(directories[node.node_id]), "this node spilled nothing"
        head_dir, other_dir = directories[cluster.head_node.node_id], directories[other.node_id]
        head_files = sorted(os.listdir(head_dir))

        cluster.remove_node(other, allow_graceful=True)
        assert not os.path.exists(other_dir)
        assert sorted(os.listdir(head_dir)) == head_files
        for i, ref in enumerate(on_head):
            value = solray.get(ref, timeout=GET_TIMEOUT_S)
            assert value.shape == (n,) and bool((value == i).all()), i
            del value
        del on_head, on_other
    finally:
        cluster.shutdown()
    assert os.listdir(base) == ["mine.txt"]
    assert (base / "mine.txt").read_text() == "the user's own file"


# -- SPREAD and node affinity -------------------------------------------------


@pytest.mark.parametrize("cluster", [{"num_cpus": 2}], indirect=True)
def test_spread_tasks(cluster, tmp_path):
    a = cluster.add_node(num_cpus=2)
    b = cluster.add_node(num_cpus=2)
    solray.init(address=cluster.address)
    everywhere = {cluster.head_node.node_id, a.node_id, b.node_id}

    # 6 concurrent tasks on 3 nodes of 2 CPUs: every node takes two.
    spread = meet.options(scheduling_strategy="SPREAD")
    (tmp_path / "six").mkdir()
    refs = [spread.remote(str(tmp_path / "six"), 6) for _ in range(6)]
    where = Counter(solray.get(refs, timeout=GET_TIMEOUT_S))
    assert where == {node: 2 for node in everywhere}

    # 3 concurrent tasks, each node has room for two: SPREAD puts one on
    # each node (the default would pack two on the driver's node).
    wait_for_free_cpus(6)
    (tmp_path / "three").mkdir()
    refs = [spread.remote(str(tmp_path / "three"), 3) for _ in range(3)]
    assert set(solray.get(refs, timeout=GET_TIMEOUT_S)) == everywhere

    # Short SPREAD tasks without a barrier land on more than one node too.
    wait_for_free_cpus(6)
    refs = [node_of.options(scheduling_strategy="SPREAD").remote() for _ in range(8)]
    assert len(set(solray.get(refs, timeout=GET_TIMEOUT_S))) > 1


def test_spread_actors_use_every_node(cluster):
    a = cluster.add_node(num_cpus=1)
    b = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)

    actors = [Where.options(scheduling_strategy="SPREAD").remote() for _ in range(3)]
    where = solray.get([actor.node.remote() for actor in actors], timeout=GET_TIMEOUT_S)
    assert sorted(where) == sorted([cluster.head_node.node_id, a.node_id, b.node_id])


def test_node_affinity(cluster):
    target = cluster.add_node(num_cpus=1)
    doomed = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)

    hard = NodeAffinitySchedulingStrategy(target.node_id, soft=False)
    refs = [node_of.options(scheduling_strategy=hard).remote() for _ in range(5)]
    assert solray.get(refs, timeout=GET_TIMEOUT_S) == [target.node_id] * 5
    soft = NodeAffinitySchedulingStrategy(target.node_id, soft=True)
    wait_for_free_cpus(3)  # soft: there if it has room now
    assert solray.get(node_of.options(scheduling_strategy=soft).remote()) == target.node_id
    actor = Where.options(scheduling_strategy=hard).remote()
    assert solray.get(actor.node.remote(), timeout=GET_TIMEOUT_S) == target.node_id

    unknown = NodeAffinitySchedulingStrategy(os.urandom(28).hex(), soft=False)
    with pytest.raises(exceptions.TaskUnschedulableError):
        solray.get(node_of.options(scheduling_strategy=unknown).remote(), timeout=GET_TIMEOUT_S)

    cluster.remove_node(doomed)
    wait_dead(doomed.node_id)
    to_dead = NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)
    with pytest.raises(exceptions.TaskUnschedulableError):
        solray.get(node_of.options(scheduling_strategy=to_dead).remote(), timeout=GET_TIMEOUT_S)
    soft_to_dead = NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)
    ran_on = solray.get(
        node_of.options(scheduling_strategy=soft_to_dead).remote(), timeout=GET_TIMEOUT_S
    )
    assert ran_on in alive_nodes() and ran_on != doomed.node_id
    actor = Where.options(scheduling_strategy=soft_to_dead).remote()
    assert solray.get(actor.node.remote(), timeout=GET_TIMEOUT_S) in alive_nodes()


@solray.remote(num_cpus=1)
def hold_cpu(started: str, release: str) -> str:
    """Hold a CPU until the driver creates `release`."""
    open(started, "w").close()
    wait_for_file(release, timeout=BARRIER_TIMEOUT_S)
    return this_node()


def test_node_affinity_when_the_node_is_busy(cluster, tmp_path):
    """Ray's semantics for an alive target node without room right now: a
    hard or soft affinity waits for it; _spill_on_unavailable (soft) runs
    elsewhere; _fail_on_unavailable (hard) fails at once."""
    target = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)

    def strategy(**kwargs):
        return NodeAffinitySchedulingStrategy(target.node_id, **kwargs)

    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    blocker = hold_cpu.options(scheduling_strategy=strategy(soft=False)).remote(started, release)
    wait_for_file(started)
    wait_for_free_cpus(2)  # the control store's view shows the target busy

    # Soft, plain: it waits for the target (two other nodes are idle).
    waits = node_of.options(scheduling_strategy=strategy(soft=True)).remote()
    # Soft with _spill_on_unavailable: it runs elsewhere, while the target is busy.
    spilled = node_of.options(
        scheduling_strategy=strategy(soft=True, _spill_on_unavailable=True)
    ).remote()
    assert solray.get(spilled, timeout=GET_TIMEOUT_S) != target.node_id
    # Hard with _fail_on_unavailable: it fails at once.
    with pytest.raises(exceptions.TaskUnschedulableError, match="_fail_on_unavailable"):
        solray.get(
            node_of.options(
                scheduling_strategy=strategy(soft=False, _fail_on_unavailable=True)
            ).remote(),
            timeout=GET_TIMEOUT_S,
        )
    # Actors alike.
    busy_fail = Where.options(
        scheduling_strategy=strategy(soft=False, _fail_on_unavailable=True)
    ).remote()
    with pytest.raises(exceptions.ActorUnschedulableError, match="_fail_on_unavailable"):
        solray.get(busy_fail.node.remote(), timeout=GET_TIMEOUT_S)
    busy_spill = Where.options(
        scheduling_strategy=strategy(soft=True, _spill_on_unavailable=True)
    ).remote()
    assert solray.get(busy_spill.node.remote(), timeout=GET_TIMEOUT_S) != target.node_id
    waiting_actor = Where.options(scheduling_strategy=strategy(soft=True)).remote()
    ready, _ = solray.wait([waits], timeout=0.5)
    assert ready == []  # still waiting for the target, after the others ran

    open(release, "w").close()
    assert solray.get(blocker, timeout=GET_TIMEOUT_S) == target.node_id
    assert solray.get(waits, timeout=GET_TIMEOUT_S) == target.node_id
    assert solray.get(waiting_actor.node.remote(), timeout=GET_TIMEOUT_S) == target.node_id
    # With room on the target, _fail_on_unavailable runs there.
    solray.kill(waiting_actor)
    wait_for_free_cpus(3)
    fail_if_busy = strategy(soft=False, _fail_on_unavailable=True)
    assert solray.get(node_of.options(scheduling_strategy=fail_if_busy).remote()) == (
        target.node_id
    )

    # A hard affinity to a node that is gone fails actors too.
    gone = NodeAffinitySchedulingStrategy(os.urandom(28).hex(), soft=False)
    with pytest.raises(exceptions.ActorUnschedulableError, match="soft=False"):
        solray.get(Where.options(scheduling_strategy=gone).remote().node.remote())

    for bad in (
        {"soft": False, "_spill_on_unavailable": True},
        {"soft": True, "_fail_on_unavailable": True},
    ):
        with pytest.raises(ValueError, match="_on_unavailable"):
            NodeAffinitySchedulingStrategy(target.node_id, **bad)


def test_label_selectors_route_tasks_actors_and_bundles(cluster, capfd):
    ssd = cluster.add_node(num_cpus=1, labels={"disk": "ssd", "zone": "a"})
    hdd = cluster.add_node(num_cpus=1, labels={"disk": "hdd", "zone": "b"})
    solray.init(address=cluster.address)
    labels_of = {n["NodeID"]: n["Labels"] for n in solray.nodes()}
    assert labels_of[ssd.node_id] == {"disk": "ssd", "zone": "a", "ray.io/node-id": ssd.node_id}
    assert labels_of[cluster.head_node.node_id] == {"ray.io/node-id": cluster.head_node.node_id}

    @solray.remote
    def where_and_labels():
        return this_node(), solray.get_runtime_context().get_node_labels()

    on_ssd = where_and_labels.options(label_selector={"disk": "ssd"})
    node, labels = solray.get(on_ssd.remote(), timeout=GET_TIMEOUT_S)
    assert node == ssd.node_id and labels["disk"] == "ssd"
    runs_on = {
        "disk": ("hdd", {hdd.node_id}),
        "zone": ("in(a,b)", {ssd.node_id, hdd.node_id}),
    }
    for key, (expression, expected) in runs_on.items():
        refs = [node_of.options(label_selector={key: expression}).remote() for _ in range(4)]
        assert set(solray.get(refs, timeout=GET_TIMEOUT_S)) <= expected, (key, expression)
    # Negations match nodes that lack the label too (the head here).
    not_ssd = node_of.options(label_selector={"disk": "!ssd"})
    assert set(solray.get([not_ssd.remote() for _ in range(6)], timeout=GET_TIMEOUT_S)) <= {
        hdd.node_id,
        cluster.head_node.node_id,
    }
    assert solray.get(
        node_of.options(label_selector={"disk": "!in(ssd,hdd)"}).remote(), timeout=GET_TIMEOUT_S
    ) == (cluster.head_node.node_id)
    # With node affinity, the labels still have to match (a hard affinity to
    # a node that does not match can never run).
    mismatched = NodeAffinitySchedulingStrategy(ssd.node_id, soft=False)
    with pytest.raises(exceptions.TaskUnschedulableError, match="labels"):
        solray.get(
            node_of.options(
                scheduling_strategy=mismatched, label_selector={"disk": "hdd"}
            ).remote(),
            timeout=GET_TIMEOUT_S,
        )

    actor = Where.options(label_selector={"zone": "b"}).remote()
    assert solray.get(actor.node.remote(), timeout=GET_TIMEOUT_S) == hdd.node_id

    # No node matches: the task and the actor wait (with the infeasible
    # warning) until one joins.
    with solray_log() as records:
        pending = node_of.options(label_selector={"gpu": "h100"}).remote()
        pending_actor = Where.options(label_selector={"gpu": "h100"}).remote()
        wait_for_condition(
            lambda: logged(records, "labels matching {'gpu': 'h100'}"),
            message="no warning that no node matches the label selector",
        )
    assert "labels matching {'gpu': 'h100'}" in capfd.readouterr().err
    ready, _ = solray.wait([pending], timeout=0.5)
    assert ready == []
    gpu = cluster.add_node(num_cpus=1, labels={"gpu": "h100"})
    assert solray.get(pending, timeout=GET_TIMEOUT_S) == gpu.node_id
    assert solray.get(pending_actor.node.remote(), timeout=GET_TIMEOUT_S) == gpu.node_id

    # Placement group bundles, each with its own selector.
    pg = placement_group(
        [{"CPU": 1}, {"CPU": 1}],
        strategy="SPREAD",
        bundle_label_selector=[{"zone": "b"}, {"disk": "ssd"}],
    )
    assert pg.wait(timeout_seconds=GET_TIMEOUT_S)
    assert bundle_nodes(pg) == [hdd.node_id, ssd.node_id]
    unmatched = placement_group([{"CPU": 1}], bundle_label_selector=[{"zone": "c"}])
    assert not unmatched.wait(timeout_seconds=1)
    assert placement_group_table(unmatched)["state"] == "PENDING"
    for bad in ([{"zone": "a"}], [{"zone": "a"}, "zone=a"], [{"zone": "a"}, {"zone": "a b"}]):
        with pytest.raises((TypeError, ValueError), match="bundle_label_selector"):
            placement_group([{"CPU": 1}] * 2, bundle_label_selector=bad)


def test_fallback_strategy_tries_selectors_in_order(cluster):
    """Ray's fallback_strategy: when no node could ever host the work with
    its label_selector, the first fallback selector some node matches is
    used; while the primary matches a node, the primary is used."""
    ssd = cluster.add_node(num_cpus=1, labels={"disk": "ssd"})
    hdd = cluster.add_node(num_cpus=1, labels={"disk": "hdd"})
    solray.init(address=cluster.address)
    fallbacks = [{"label_selector": {"disk": "nvme"}}, {"label_selector": {"disk": "hdd"}}]
    task = node_of.options(label_selector={"disk": "tape"}, fallback_strategy=fallbacks)
    assert set(solray.get([task.remote() for _ in range(3)], timeout=GET_TIMEOUT_S)) == {
        hdd.node_id
    }
    primary = node_of.options(label_selector={"disk": "ssd"}, fallback_strategy=fallbacks)
    assert solray.get(primary.remote(), timeout=GET_TIMEOUT_S) == ssd.node_id
    actor = Where.options(label_selector={"disk": "tape"}, fallback_strategy=fallbacks).remote()
    assert solray.get(actor.node.remote(), timeout=GET_TIMEOUT_S) == hdd.node_id
    # Ray's validation of malformed fallbacks and selectors.
    bad = {
        "must be a list": {"label_selector": {"disk": "hdd"}},
        r"fallback_strategy\[0\] must be a dict": ["disk=hdd"],
        "must contain 'label_selector'": [{}],
        "unknown option": [{"label_selector": {"disk": "hdd"}, "num_cpus": 1}],
        "invalid label key": [{"label_selector": {"bad key!": "x"}}],
    }
    for message, value in bad.items():
        with pytest.raises((TypeError, ValueError), match=message):
            node_of.options(fallback_strategy=value)
        with pytest.raises((TypeError, ValueError), match=message):
            Where.options(fallback_strategy=value)
    with pytest.raises(ValueError, match="empty value"):
        node_of.options(label_selector={"disk": "in(a,)"})


@pytest.mark.parametrize("cluster", [{"num_cpus": 4}], indirect=True)
def test_placement_group_cpu_fraction_and_soft_target(cluster):
    other = cluster.add_node(num_cpus=4)
    solray.init(address=cluster.address)
    head = cluster.head_node.node_id

    # At most half the CPUs of a node in bundles of any group.
    half = placement_group([{"CPU": 1}] * 2, strategy="STRICT_PACK", _max_cpu_fraction_per_node=0.5)
    assert half.wait(timeout_seconds=GET_TIMEOUT_S)
    (node,) = set(bundle_nodes(half))
    wait_for_free_cpus(6)  # placements below see the cluster as it is
    second = placement_group(
        [{"CPU": 1}] * 2, strategy="STRICT_PACK", _max_cpu_fraction_per_node=0.5
    )
    assert second.wait(timeout_seconds=GET_TIMEOUT_S)
    assert set(bundle_nodes(second)) == {head, other.node_id} - {node}
    wait_for_free_cpus(4)
    # Both nodes are at their half now; a third such group waits, though two
    # free CPUs are left on each node...
    third = placement_group([{"CPU": 1}], _max_cpu_fraction_per_node=0.5)
    assert not third.wait(timeout_seconds=1)
    # ... which a group without the limit can have. Below 1, one CPU always
    # stays out of placement groups: 0.99 of 4 CPUs allows 3.
    unlimited = placement_group([{"CPU": 2}])
    assert unlimited.wait(timeout_seconds=GET_TIMEOUT_S)
    nearly = placement_group([{"CPU": 1}], _max_cpu_fraction_per_node=0.99)
    assert nearly.wait(timeout_seconds=GET_TIMEOUT_S)
    assert placement_group_table(third)["state"] == "PENDING"
    # Bundles of every group count: the third gets room once the node that
    # holds `half` and `unlimited` (four CPUs) has none of them.
    assert bundle_nodes(unlimited) == [node]  # the first of two equally free nodes
    remove_placement_group(half)
    assert not third.wait(timeout_seconds=1)
    remove_placement_group(unlimited)
    assert third.wait(timeout_seconds=GET_TIMEOUT_S)
    assert bundle_nodes(third) == [node]

    # _soft_target_node_id: STRICT_PACK on that node when it has room.
    for pg in (second, nearly, third):
        remove_placement_group(pg)
    target = next(n for n in (head, other.node_id) if n != node)
    wait_for_free_cpus(8)
    targeted = placement_group(
        [{"CPU": 1}] * 2, strategy="STRICT_PACK", _soft_target_node_id=target
    )
    assert targeted.wait(timeout_seconds=GET_TIMEOUT_S)
    assert set(bundle_nodes(targeted)) == {target}
    with pytest.raises(ValueError, match="_soft_target_node_id"):
        placement_group([{"CPU": 1}], strategy="PACK", _soft_target_node_id=target)
    for bad in (0, 1.5, "half"):
        with pytest.raises(ValueError, match="_max_cpu_fraction_per_node"):
            placement_group([{"CPU": 1}], _max_cpu_fraction_per_node=bad)


# -- placement groups ---------------------------------------------------------


def bundle_nodes(pg) -> list[str]:
    table = placement_group_table(pg)
    assert table["state"] == "CREATED", table
    return [table["bundles_to_node_id"][i] for i in range(pg.bundle_count)]


@pytest.mark.parametrize("cluster", [{"num_cpus": 2}], indirect=True)
def test_placement_group_strategies(cluster):
    a = cluster.add_node(num_cpus=2)
    b = cluster.add_node(num_cpus=2)
    solray.init(address=cluster.address)
    everywhere = {cluster.head_node.node_id, a.node_id, b.node_id}

    cases = [
        ("PACK", [{"CPU": 1}] * 2, lambda nodes: len(set(nodes)) == 1),
        ("STRICT_PACK", [{"CPU": 1}] * 2, lambda nodes: len(set(nodes)) == 1),
        ("PACK", [{"CPU": 2}, {"CPU": 1}], lambda nodes: len(set(nodes)) == 2),
        ("SPREAD", [{"CPU": 1}] * 3, lambda nodes: set(nodes) == everywhere),
        ("STRICT_SPREAD", [{"CPU": 1}] * 3, lambda nodes: set(nodes) == everywhere),
        ("SPREAD", [{"CPU": 1}] * 5, lambda nodes: set(nodes) == everywhere),
    ]
    for strategy, bundles, check in cases:
        wait_for_free_cpus(6)
        pg = placement_group(bundles, strategy=strategy)
        assert solray.get(pg.ready(), timeout=GET_TIMEOUT_S) == pg
        assert pg.wait(timeout_seconds=GET_TIMEOUT_S)
        nodes = bundle_nodes(pg)
        assert check(nodes), (strategy, bundles, nodes)
        wait_for_free_cpus(6 - sum(bundle["CPU"] for bundle in bundles))
        remove_placement_group(pg)
        assert not pg.wait(timeout_seconds=GET_TIMEOUT_S)


@pytest.mark.parametrize("cluster", [{"num_cpus": 2}], indirect=True)
def test_infeasible_placement_groups_wait(cluster):
    cluster.add_node(num_cpus=2)
    solray.init(address=cluster.address)

    too_spread = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")  # 2 nodes
    too_packed = placement_group([{"CPU": 2}, {"CPU": 1}], strategy="STRICT_PACK")
    assert not too_spread.wait(timeout_seconds=1)
    assert not too_packed.wait(timeout_seconds=0.5)
    assert placement_group_table(too_spread)["state"] == "PENDING"
    assert solray.available_resources()["CPU"] == 4  # nothing held by a pending group

    # A third node makes the STRICT_SPREAD group possible.
    cluster.add_node(num_cpus=1)
    assert too_spread.wait(timeout_seconds=GET_TIMEOUT_S)
    assert len(set(bundle_nodes(too_spread))) == 3
    for pg in (too_spread, too_packed):
        remove_placement_group(pg)
        assert not pg.wait(timeout_seconds=GET_TIMEOUT_S)
    wait_for_free_cpus(5)


@pytest.mark.parametrize("cluster", [{"num_cpus": 2}], indirect=True)
def test_tasks_and_actors_run_on_their_bundles_node(cluster):
    cluster.add_node(num_cpus=2)
    cluster.add_node(num_cpus=2)
    solray.init(address=cluster.address)
    full = solray.available_resources()

    pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert pg.wait(timeout_seconds=GET_TIMEOUT_S)
    nodes = bundle_nodes(pg)
    assert len(set(nodes)) == 3
    for index in range(3):
        in_bundle = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)
        refs = [node_of.options(scheduling_strategy=in_bundle).remote() for _ in range(3)]
        assert solray.get(refs, timeout=GET_TIMEOUT_S) == [nodes[index]] * 3
    actors = [
        Where.options(
            num_cpus=1,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=i
            ),
        ).remote()
        for i in (2, 0)
    ]
    where = solray.get([actor.node.remote() for actor in actors], timeout=GET_TIMEOUT_S)
    assert where == [nodes[2], nodes[0]]
    # Any bundle (index -1): one of the group's nodes.
    anywhere = PlacementGroupSchedulingStrategy(pg)
    assert solray.get(node_of.options(scheduling_strategy=anywhere).remote()) in nodes

    remove_placement_group(pg)
    assert not pg.wait(timeout_seconds=GET_TIMEOUT_S)
    wait_for_condition(
        lambda: solray.available_resources() == full,
        timeout=30,
        message=lambda: f"{solray.available_resources()} != {full}",
    )
    del actors


# -- node failure ---------------------------------------------------------------


@solray.remote(max_retries=3)
def square_when_released(i: int, directory: str) -> tuple[int, str]:
    """Records where it started, waits for the test's `release` file."""
    path = pathlib.Path(directory)
    node = this_node()
    (path / f"started-{node}-{uuid.uuid4().hex}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while not (path / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.01)
    return i * i, node


def started_on(directory: pathlib.Path, node_id: str) -> int:
    return len(list(directory.glob(f"started-{node_id}-*")))


def test_tasks_on_a_killed_node_are_retried_elsewhere(cluster, tmp_path):
    doomed = cluster.add_node(num_cpus=2)
    cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)
    head = cluster.head_node.node_id

    refs = [square_when_released.remote(i, str(tmp_path)) for i in range(6)]
    wait_for_condition(lambda: started_on(tmp_path, doomed.node_id) >= 1, timeout=60)
    cluster.remove_node(doomed)
    (tmp_path / "release").touch()

    results = solray.get(refs, timeout=GET_TIMEOUT_S)
    assert [value for value, _ in results] == [i * i for i in range(6)]
    assert doomed.node_id not in {node for _, node in results}
    assert len(list(tmp_path.glob("started-*"))) > 6  # the killed ones ran again
    wait_dead(doomed.node_id)
    assert head in alive_nodes()
    # The head and the driver keep going.
    assert solray.get([node_of.remote() for _ in range(4)], timeout=GET_TIMEOUT_S)


def test_nodes_shows_a_killed_node_dead(cluster):
    doomed = cluster.add_node(num_cpus=1, resources={"gone": 1})
    solray.init(address=cluster.address)
    assert solray.cluster_resources()["gone"] == 1

    cluster.remove_node(doomed)
    wait_dead(doomed.node_id)
    row = next(n for n in solray.nodes() if n["NodeID"] == doomed.node_id)
    assert not row["alive"] and row["Resources"] == {}
    assert "gone" not in solray.cluster_resources()
    assert solray.cluster_resources()["CPU"] == 1
    assert solray.get(node_of.remote(), timeout=GET_TIMEOUT_S) == cluster.head_node.node_id


@solray.remote
def counted_array(directory: str, n: int):
    (pathlib.Path(directory) / f"run-{uuid.uuid4().hex}").touch()
    return np.arange(n, dtype=np.int64)


def test_lost_task_output_is_reconstructed(cluster, tmp_path):
    """A task's output (too big to be inline) lives only on node B; B dies;
    get() re-runs the task elsewhere from its lineage."""
    doomed = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)

    n = 64 * 1024  # 512 KiB: stored in B's store, not inline
    prefer_doomed = NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)
    ref = counted_array.options(scheduling_strategy=prefer_doomed, max_retries=1).remote(
        str(tmp_path), n
    )
    ready, _ = solray.wait([ref], timeout=GET_TIMEOUT_S, fetch_local=False)
    assert ready
    assert len(list(tmp_path.glob("run-*"))) == 1
    # Its lease is given back first: a re-run pushed to the lingering lease
    # of a worker whose node just died (before the driver saw the connection
    # drop) would spend the task's one retry.
    wait_for_free_cpus(2)

    cluster.remove_node(doomed)
    wait_dead(doomed.node_id)
    value = solray.get(ref, timeout=GET_TIMEOUT_S)
    assert np.array_equal(value, np.arange(n, dtype=np.int64))
    assert len(list(tmp_path.glob("run-*"))) == 2  # it really ran again
    del value


@solray.remote
def counted_plus_one(directory: str, name: str, array):
    (pathlib.Path(directory) / f"{name}-{uuid.uuid4().hex}").touch()
    return array + 1


@solray.remote
def nested_sum(arrays: list) -> int:
    return int(solray.get(arrays[0]).sum())


@solray.remote
class Summer:
    def sum(self, array) -> int:
        return int(array.sum())


def runs(directory: pathlib.Path, name: str) -> int:
    return len(list(directory.glob(f"{name}-*")))


def lose_node(cluster: Cluster, doomed, refs: list, free_cpus: float) -> None:
    """Wait until the refs' values exist and the cluster is idle (a re-run
    pushed to a lease lingering on the dying node would cost a retry), then
    kill the node and wait until the cluster knows."""
    ready, _ = solray.wait(refs, num_returns=len(refs), timeout=GET_TIMEOUT_S, fetch_local=False)
    assert len(ready) == len(refs)
    wait_for_free_cpus(free_cpus)
    cluster.remove_node(doomed)
    wait_dead(doomed.node_id)


def test_lost_chain_is_rebuilt_for_every_reader(cluster, tmp_path):
    """a -> b -> c live only on a node that dies. Tasks taking c or b, an
    actor call taking c and a task reading c nested in a list, all at once,
    rebuild the chain recursively (a first), each link exactly once."""
    doomed = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)
    head = NodeAffinitySchedulingStrategy(cluster.head_node.node_id, soft=False)
    summer = Summer.options(scheduling_strategy=head).remote()
    solray.get(summer.sum.remote(np.zeros(1)), timeout=GET_TIMEOUT_S)

    n = 64 * 1024  # 512 KiB: kept in the node's store, not inline
    on_doomed = counted_plus_one.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)
    )
    a = on_doomed.remote(str(tmp_path), "a", np.arange(n, dtype=np.int64))
    b = on_doomed.remote(str(tmp_path), "b", a)
    c = on_doomed.remote(str(tmp_path), "c", b)
    lose_node(cluster, doomed, [a, b, c], free_cpus=2)
    del a  # held by b's lineage only

    base = n * (n - 1) // 2
    readers = [
        array_sum.remote(c),
        array_sum.remote(b),
        summer.sum.remote(c),
        nested_sum.remote([c]),
    ]
    sums = solray.get(readers, timeout=GET_TIMEOUT_S)
    assert [s if isinstance(s, int) else s[0] for s in sums] == [
        base + 3 * n,
        base + 2 * n,
        base + 3 * n,
        base + 3 * n,
    ]
    assert (runs(tmp_path, "a"), runs(tmp_path, "b"), runs(tmp_path, "c")) == (2, 2, 2)
    assert int(solray.get(c, timeout=GET_TIMEOUT_S).sum()) == base + 3 * n


@solray.remote
def crash_once(directory: str, n: int):
    """Exits its worker the first time it runs; returns an array after."""
    marker = pathlib.Path(directory) / "crashed"
    if not marker.exists():
        marker.touch()
        os._exit(1)
    return np.arange(n, dtype=np.int64)


@solray.remote
def put_for(owner, n: int) -> list:
    """A put owned by the actor `owner`, stored on this task's node."""
    return [solray.put(np.arange(n, dtype=np.int64), _owner=owner)]


def test_lost_objects_that_cannot_be_rebuilt_raise_rays_errors(cluster, tmp_path):
    doomed = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)
    head = NodeAffinitySchedulingStrategy(cluster.head_node.node_id, soft=False)
    summer = Summer.options(scheduling_strategy=head).remote()
    solray.get(summer.sum.remote(np.zeros(1)), timeout=GET_TIMEOUT_S)

    n = 64 * 1024
    # None of these runs again: the node they must run on may go.
    on_doomed = NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)
    no_retries = counted_array.options(scheduling_strategy=on_doomed, max_retries=0).remote(
        str(tmp_path), n
    )
    # Its one retry went to the crash: none is left to rebuild it.
    retried = crash_once.options(scheduling_strategy=on_doomed, max_retries=1).remote(
        str(tmp_path), n
    )
    # A put has no lineage. Its owner (the actor) lives on; its value died
    # with the node of the task that put it.
    (put_ref,) = solray.get(
        put_for.options(scheduling_strategy=on_doomed).remote(summer, n), timeout=GET_TIMEOUT_S
    )
    lose_node(cluster, doomed, [no_retries, retried, put_ref], free_cpus=2)
    assert runs(tmp_path, "run") == 1

    with pytest.raises(exceptions.ObjectReconstructionFailedError, match="max_retries=0"):
        solray.get(no_retries, timeout=GET_TIMEOUT_S)
    with pytest.raises(exceptions.ObjectReconstructionFailedError, match="max_retries=0"):
        solray.get(array_sum.remote(no_retries), timeout=GET_TIMEOUT_S)
    with pytest.raises(exceptions.ObjectReconstructionFailedMaxAttemptsExceededError):
        solray.get(summer.sum.remote(retried), timeout=GET_TIMEOUT_S)
    with pytest.raises(exceptions.ObjectLostError) as lost:
        solray.get(put_ref, timeout=GET_TIMEOUT_S)
    assert type(lost.value) is exceptions.ObjectLostError
    with pytest.raises(exceptions.ObjectLostError):
        solray.get(array_sum.remote(put_ref), timeout=GET_TIMEOUT_S)
    assert runs(tmp_path, "run") == 1  # nothing ran again


@solray.remote
def array_rebuilt_when_released(directory: str, n: int):
    """Returns at once when first run; a re-run waits for the file `release`."""
    ran = pathlib.Path(directory) / "ran"
    if ran.exists():
        wait_for_file(pathlib.Path(directory) / "release", timeout=GET_TIMEOUT_S)
    ran.touch()
    return np.arange(n, dtype=np.int64)


def test_get_timeout_bounds_the_wait_for_a_rebuild(cluster, tmp_path):
    doomed = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)
    n = 64 * 1024
    ref = array_rebuilt_when_released.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)
    ).remote(str(tmp_path), n)
    lose_node(cluster, doomed, [ref], free_cpus=2)

    with pytest.raises(exceptions.GetTimeoutError, match="being rebuilt"):
        solray.get(ref, timeout=1)
    (tmp_path / "release").touch()
    assert int(solray.get(ref, timeout=GET_TIMEOUT_S).sum()) == n * (n - 1) // 2


def test_put_object_survives_loss_of_a_node_that_read_it(cluster):
    reader = cluster.add_node(num_cpus=1, resources={"reader": 1})
    other = cluster.add_node(num_cpus=1, resources={"other": 1})
    solray.init(address=cluster.address)

    n = 4 * MiB
    ref = solray.put(np.arange(n, dtype=np.int64))  # lives in the driver's node's store
    expected = n * (n - 1) // 2
    result = solray.get(array_sum.options(resources={"reader": 1}).remote(ref), timeout=60)
    assert result[:2] == (expected, reader.node_id)

    cluster.remove_node(reader)  # had a copy
    wait_dead(reader.node_id)
    assert int(solray.get(ref, timeout=GET_TIMEOUT_S).sum()) == expected
    result = solray.get(array_sum.options(resources={"other": 1}).remote(ref), timeout=60)
    assert result[:2] == (expected, other.node_id)


def test_actor_restarts_on_another_node(cluster):
    doomed = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)

    prefer_doomed = NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)
    actor = Where.options(max_restarts=1, scheduling_strategy=prefer_doomed).remote()
    assert solray.get(actor.node.remote(), timeout=GET_TIMEOUT_S) == doomed.node_id

    cluster.remove_node(doomed)
    where = []

    def restarted() -> bool:
        try:
            where.append(solray.get(actor.node.remote(), timeout=10))
            return True
        except exceptions.RayActorError:
            return False

    wait_for_condition(restarted, timeout=60, interval=0.1)
    assert where[-1] != doomed.node_id and where[-1] in alive_nodes()
    assert solray.get(actor.node.remote(), timeout=GET_TIMEOUT_S) == where[-1]
    (row,) = list_actors(filters=[("actor_id", "=", actor._actor_id.hex())], detail=True)
    assert row["state"] == "ALIVE" and row["num_restarts"] == 1 and row["node_id"] == where[-1]


@solray.remote
class Logged:
    """Appends its pid to `log` each time its constructor runs."""

    def __init__(self, log: str):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")

    def node(self) -> str:
        return this_node()


def test_actors_on_a_dead_node_hold_nothing(cluster, tmp_path):
    """The node two actors live on dies. The one that may not restart is dead
    and holds nothing anywhere; the one that may restarts on the head, holding
    exactly its CPU there, and gives it back when killed."""
    doomed = cluster.add_node(num_cpus=2)
    solray.init(address=cluster.address)
    on_doomed = NodeAffinitySchedulingStrategy(doomed.node_id, soft=True)
    once_log, twice_log = tmp_path / "once", tmp_path / "twice"
    once = Logged.options(num_cpus=1, scheduling_strategy=on_doomed).remote(str(once_log))
    twice = Logged.options(num_cpus=1, max_restarts=1, scheduling_strategy=on_doomed).remote(
        str(twice_log)
    )
    assert (
        solray.get([once.node.remote(), twice.node.remote()], timeout=GET_TIMEOUT_S)
        == [doomed.node_id] * 2
    )
    wait_for_free_cpus(1)  # the head's

    cluster.remove_node(doomed)
    wait_dead(doomed.node_id)
    where = []

    def restarted() -> bool:
        try:
            where.append(solray.get(twice.node.remote(), timeout=10))
            return True
        except exceptions.RayActorError:
            return False

    wait_for_condition(restarted, timeout=60, interval=0.1)
    assert where[-1] == cluster.head_node.node_id
    with pytest.raises(exceptions.ActorDiedError):
        solray.get(once.node.remote(), timeout=GET_TIMEOUT_S)
    wait_for_free_cpus(0)  # the restarted actor holds the head's CPU
    assert solray.cluster_resources()["CPU"] == 1

    solray.kill(twice)
    wait_for_free_cpus(1)
    newcomer = Logged.options(num_cpus=1).remote(str(tmp_path / "newcomer"))
    assert solray.get(newcomer.node.remote(), timeout=GET_TIMEOUT_S) == cluster.head_node.node_id
    rows = {r["actor_id"]: r for r in list_actors(detail=True)}
    assert rows[once._actor_id.hex()]["state"] == "DEAD"
    assert rows[twice._actor_id.hex()]["num_restarts"] == 1
    assert len(once_log.read_text().split()) == 1
    assert len(twice_log.read_text().split()) == 2


@pytest.mark.parametrize("cluster", [{"_system_config": {"heartbeat_timeout_s": 5}}], indirect=True)
def test_hung_node_is_declared_dead_after_heartbeat_timeout(cluster):
    """A SIGSTOPped node keeps its connection open but stops reporting; the
    control store (started with the configured timeout) declares it dead, and
    the node, once resumed, finds itself cut off and exits."""
    control = next(
        p for p in psutil.Process().children() if "solray._private.control_store" in p.cmdline()
    )
    cmdline = control.cmdline()
    assert cmdline[cmdline.index("--heartbeat-timeout-s") + 1] == "5.0"

    hung = cluster.add_node(num_cpus=1)
    solray.init(address=cluster.address)
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        wait_dead(hung.node_id, timeout=60)
        assert cluster.head_node.node_id in alive_nodes()
        assert solray.get(node_of.remote(), timeout=GET_TIMEOUT_S) == cluster.head_node.node_id
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    wait_for_condition(lambda: exited(hung.pid), timeout=30, message="the hung node kept running")
    cluster.remove_node(hung)


def test_driver_with_the_wrong_token_is_refused(cluster):
    script = (
        "import solray\n"
        "try:\n"
        f"    solray.init(address={cluster.address!r})\n"
        "except ConnectionError as e:\n"
        "    print('REFUSED', e)\n"
        "else:\n"
        "    print('CONNECTED')\n"
    )
    env = dict(os.environ, SOLRAY_TOKEN=os.urandom(32).hex())
    env.pop("SOLRAY_TOKEN_FILE", None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("REFUSED"), out.stdout + out.stderr
    assert "token" in out.stdout
    # The cluster is unharmed.
    solray.init(address=cluster.address)
    assert solray.get(node_of.remote(), timeout=GET_TIMEOUT_S) == cluster.head_node.node_id


def test_stale_session_on_the_same_address_is_ignored(cluster, tmp_path):
    """Sessions of clusters that are gone stay on disk if their driver was
    killed; one whose control store had the address our cluster has now must
    not lend init() its (wrong) token."""
    temp_dir = str(tmp_path)
    live = services.new_session_dir(temp_dir)
    services.write_session_file(live, "127.0.0.1:1", cluster.address, cluster.token)
    # A driver that recorded newer sessions, then died.
    with subprocess.Popen(["sleep", "600"]) as dead:
        for _ in range(8):
            stale = services.new_session_dir(temp_dir)
            services.write_session_file(
                stale, "127.0.0.1:1", cluster.address, os.urandom(32), pid=dead.pid
            )
            newer = time.time() + 60
            os.utime(os.path.join(stale, "cluster.json"), (newer, newer))
        dead.kill()

    solray.init(address=cluster.address, _temp_dir=temp_dir)
    assert solray.get(node_of.remote(), timeout=GET_TIMEOUT_S) == cluster.head_node.node_id
