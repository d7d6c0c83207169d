"""Objects read in bulk and moved between real nodes on this machine
(`solray.cluster_utils.Cluster`): a get of many stored objects, some here and
some on another node, reads them all in place; large objects arrive intact
however many pull them at once.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
from conftest import mapped_file, store_file, wait_for_condition
from test_multinode import node_request

import solray
from solray import exceptions
from solray._private.protocol import Msg
from solray.cluster_utils import Cluster

GET_TIMEOUT_S = 90
ELEMENTS = 200_000  # int64: 1.6 MB, stored (above the inline limit)


@solray.remote
def filled(i: int):
    return np.full(ELEMENTS, i, dtype=np.int64)


@solray.remote
def sums_and_files(*arrays) -> list[tuple[int, str | None]]:
    return [(int(a.sum()), mapped_file(a)) for a in arrays]


def test_get_of_many_stored_objects_here_and_on_another_node(cluster):
    remote = cluster.add_node(num_cpus=1, resources={"remote": 1})
    solray.init(address=cluster.address)

    here = [solray.put(np.full(ELEMENTS, i, dtype=np.int64)) for i in range(20)]
    there = [filled.options(resources={"remote": 1}).remote(100 + i) for i in range(20)]
    # Mixed, with repeats: every value comes back, read in place from this
    # node's store (those made on the other node are pulled here).
    refs = [*here, *there, here[3], there[5], here[3]]
    values = solray.get(refs, timeout=GET_TIMEOUT_S)
    expected = [*range(20), *range(100, 120), 3, 105, 3]
    assert [int(v[0]) for v in values] == expected
    assert all(
        int(v[-1]) == e and v.shape == (ELEMENTS,) for v, e in zip(values, expected, strict=True)
    )
    assert {mapped_file(v) for v in values} == {store_file()}

    # A task on the other node gets many stored arguments at once (pulling
    # those made here), each in place in its own store.
    results = solray.get(
        sums_and_files.options(resources={"remote": 1}).remote(*here[:10], *there[:10]),
        timeout=GET_TIMEOUT_S,
    )
    assert [s for s, _ in results] == [ELEMENTS * i for i in [*range(10), *range(100, 110)]]
    assert {f for _, f in results} == {store_file(remote.node_id)}

    # The views pinned the objects only while they lived: once the values
    # and refs are gone, the other node frees every copy it held.
    del values, here, there, refs
    wait_for_condition(
        lambda: node_request(cluster, remote, Msg.STORE_STATS)["num_objects"] == 0, timeout=30
    )


# -- large objects between nodes ------------------------------------------------

MiB = 1 << 20


@solray.remote
def ramp(n: int, base: int):
    """n int64s base, base+1, ...: any byte out of place shows."""
    return np.arange(base, base + n, dtype=np.int64)


@solray.remote
def check_ramps(arrays: list, bases: list) -> list[bool]:
    return [_is_ramp(a, b) for a, b in zip(solray.get(arrays), bases, strict=True)]


def _is_ramp(array, base: int) -> bool:
    return bool((array == np.arange(base, base + array.shape[0], dtype=np.int64)).all())


def test_large_objects_arrive_intact_under_concurrent_pulls(cluster):
    """Objects made on one node are pulled at once by two other nodes (by
    several readers on each) and by the driver's node: every copy is whole."""
    maker = cluster.add_node(num_cpus=1, resources={"maker": 1})
    for name in ("b", "c"):
        cluster.add_node(num_cpus=2, resources={name: 2})
    solray.init(address=cluster.address)
    n = 48 * MiB // 8 + 13  # not a multiple of any stripe or page size
    bases = [i * 10**9 for i in range(4)]
    arrays = [ramp.options(resources={"maker": 1}).remote(n, b) for b in bases]
    solray.wait(arrays, num_returns=len(arrays), fetch_local=False, timeout=GET_TIMEOUT_S)

    checks = [
        check_ramps.options(resources={name: 1}).remote(arrays, bases)
        for name in ("b", "c", "b", "c")
    ]
    local = solray.get(arrays, timeout=GET_TIMEOUT_S)
    assert [_is_ramp(a, b) for a, b in zip(local, bases, strict=True)] == [True] * 4
    assert solray.get(checks, timeout=GET_TIMEOUT_S) == [[True] * 4] * 4
    assert {mapped_file(a) for a in local} == {store_file()}
    assert maker.node_id != solray.get_runtime_context().get_node_id()


def _arena_bytes(node_id: str | None = None) -> int:
    """Bytes of a node's arena that hold pages: it grows as a pull writes."""
    return os.stat(store_file(node_id)).st_blocks * 512


@pytest.mark.parametrize("retries", [0, 1])
def test_sending_node_killed_mid_transfer(cluster, retries):
    """The node sending an object dies part way through: the get fails with
    ObjectLostError (nothing can make it again), or, where the task may run
    again, gets the value made anew on another node; never a truncated one."""
    makers = [cluster.add_node(num_cpus=1, resources={"maker": 1}) for _ in range(2)]
    solray.init(address=cluster.address)
    n = 1024 * MiB // 8

    @solray.remote(resources={"maker": 1}, num_returns=2, max_retries=retries)
    def made(n):
        return np.arange(n, dtype=np.int64), solray.get_runtime_context().get_node_id()

    array, made_on = made.remote(n)
    (sender,) = [m for m in makers if m.node_id == solray.get(made_on, timeout=GET_TIMEOUT_S)]
    solray.wait([array], fetch_local=False, timeout=GET_TIMEOUT_S)

    before = _arena_bytes()
    outcome: list = []

    def get():
        try:
            value = solray.get(array, timeout=GET_TIMEOUT_S)
            outcome.append(bool(value.shape == (n,) and _is_ramp(value, 0)))
            del value
        except Exception as e:
            outcome.append(e)

    reader = threading.Thread(target=get)
    reader.start()
    # Stop the sender once part of the object has arrived here, and check
    # that it is only part, then kill it.
    wait_for_condition(lambda: _arena_bytes() >= before + 32 * MiB, interval=0.002)
    os.kill(sender._process.popen.pid, signal.SIGSTOP)
    assert _arena_bytes() < before + n * 8, "the transfer ended before the sender was stopped"
    cluster.remove_node(sender)
    reader.join(GET_TIMEOUT_S)
    assert not reader.is_alive()
    if retries:
        assert outcome == [True]  # made again on the other node, pulled whole
    else:
        assert len(outcome) == 1 and isinstance(outcome[0], exceptions.ObjectLostError)


@solray.remote
def is_ramp(array, base: int) -> bool:
    return _is_ramp(array, base)


def test_a_whole_copy_serves_a_pull_when_its_origin_dies(cluster):
    """A node that pulled a whole copy tells the object's origin, which then
    names it to later pullers (STORE_HOLDERS). The origin is stopped and
    killed part way through sending the object to a third node: that pull
    goes on from the copy, and the value arrives whole (the task that made
    it cannot run again, so nothing else could have brought it)."""
    origin = cluster.add_node(num_cpus=1, resources={"origin": 1})
    holder = cluster.add_node(num_cpus=1, resources={"holder": 1})
    puller = cluster.add_node(num_cpus=1, resources={"puller": 1})
    solray.init(address=cluster.address)
    n = 512 * MiB // 8
    array = ramp.options(resources={"origin": 1}, max_retries=0).remote(n, 7)
    solray.wait([array], fetch_local=False, timeout=GET_TIMEOUT_S)
    assert solray.get(is_ramp.options(resources={"holder": 1}).remote(array, 7), timeout=60)

    def holders() -> list[str]:
        answer = node_request(cluster, origin, Msg.STORE_HOLDERS, {"id": array.binary()})
        return answer["holders"]

    wait_for_condition(lambda: holders() == [holder.address], timeout=30)

    before = _arena_bytes(puller.node_id)
    check = is_ramp.options(resources={"puller": 1}).remote(array, 7)
    # The origin is idle, so the pull starts there; stop it part way.
    wait_for_condition(
        lambda: _arena_bytes(puller.node_id) >= before + 32 * MiB, interval=0.002, timeout=60
    )
    os.kill(origin._process.popen.pid, signal.SIGSTOP)
    assert _arena_bytes(puller.node_id) < before + n * 8, "the pull ended before the stop"
    cluster.remove_node(origin)
    assert solray.get(check, timeout=GET_TIMEOUT_S) is True


def test_the_origin_forgets_a_holder_that_left(cluster):
    """A node that held a whole copy and left the cluster is no longer named
    to pullers (each would try it first, and wait for it to fail)."""
    origin = cluster.add_node(num_cpus=1, resources={"origin": 1})
    holder = cluster.add_node(num_cpus=1, resources={"holder": 1})
    solray.init(address=cluster.address)
    array = ramp.options(resources={"origin": 1}).remote(8 * MiB // 8, 3)
    assert solray.get(is_ramp.options(resources={"holder": 1}).remote(array, 3), timeout=60)

    def holders() -> list[str]:
        answer = node_request(cluster, origin, Msg.STORE_HOLDERS, {"id": array.binary()})
        return answer["holders"]

    wait_for_condition(lambda: holders() == [holder.address], timeout=30)
    cluster.remove_node(holder)
    wait_for_condition(lambda: holders() == [], timeout=30, message=lambda: holders())


def test_transfer_under_store_pressure(leak_check):
    """Both stores are smaller than what moves between them: the sender
    restores spilled objects to send them, the receiver spills to make room
    for each copy, and every value arrives whole."""
    small = {"object_store_memory": 120 * MiB}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, **small})
    try:
        sender = cluster.add_node(num_cpus=1, resources={"maker": 1}, **small)
        solray.init(address=cluster.address)
        n = 40 * MiB // 8
        bases = [i * 10**9 for i in range(6)]  # 240 MiB in all: twice each store
        arrays = [ramp.options(resources={"maker": 1}).remote(n, b) for b in bases]
        solray.wait(arrays, num_returns=len(arrays), fetch_local=False, timeout=GET_TIMEOUT_S)
        assert node_request(cluster, sender, Msg.STORE_STATS)["num_spilled"] > 0

        for array, base in zip(arrays, bases, strict=True):
            value = solray.get(array, timeout=GET_TIMEOUT_S)
            assert value.shape == (n,) and _is_ramp(value, base), base
            del value
        stats = node_request(cluster, cluster.head_node, Msg.STORE_STATS)
        assert stats["spilled_objects_total"] > 0  # the copies made room for each other
        # Read again: the spilled copies come back whole too.
        for array, base in zip(arrays, bases, strict=True):
            value = solray.get(array, timeout=GET_TIMEOUT_S)
            assert _is_ramp(value, base), base
            del value
        del arrays
    finally:
        cluster.shutdown()
