"""`solray.util.collective` (Ray's `ray.util.collective`) on a real two-node
cluster: four actors, two per node, as ranks of groups; every collective's
result on every rank, in place as in Ray; send/recv pairs; and the errors a
user meets (a group not joined, a rank taken twice or out of range, ranks
calling different collectives, a rank that never joins, GPU backends)."""

from __future__ import annotations

import numpy as np
import psutil
import pytest
from conftest import _sessions, _shm_of, wait_for_condition

import solray
import solray.util.collective as col
from solray.cluster_utils import Cluster
from solray.util.collective.types import Backend, ReduceOp

TIMEOUT_S = 60


@solray.remote(num_cpus=0)
class Member:
    def run(self, fn, *args):
        return fn(*args)

    def node(self):
        return solray.get_runtime_context().get_node_id()


@pytest.fixture(scope="module")
def members():
    """Four actors: ranks 0 and 1 on the head node, 2 and 3 on the other."""
    sessions_before = _sessions()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 4}}
    )
    try:
        cluster.add_node(num_cpus=1, resources={"other": 4})
        solray.init(address=cluster.address)

        actors = [
            Member.options(resources={"head" if r < 2 else "other": 1}).remote() for r in range(4)
        ]
        nodes = solray.get([a.node.remote() for a in actors], timeout=TIMEOUT_S)
        assert nodes[0] == nodes[1] != nodes[2] == nodes[3]
        yield actors
    finally:
        solray.shutdown()
        cluster.shutdown()
    me = psutil.Process()
    wait_for_condition(lambda: not me.children(recursive=True), timeout=15)
    wait_for_condition(lambda: not _shm_of(_sessions() - sessions_before), timeout=10)


def on_all(actors, fn, *args):
    """fn(rank, *args) on every actor at once (collectives need every rank)."""
    return solray.get([a.run.remote(fn, r, *args) for r, a in enumerate(actors)], timeout=TIMEOUT_S)


def join(actors, group, world=None, **kwargs):
    def init(rank, group, kwargs):
        col.init_collective_group(world or len(actors), rank, group_name=group, **kwargs)
        return col.get_rank(group), col.get_collective_group_size(group)

    kwargs.setdefault("backend", "gloo")
    assert on_all(actors, init, group, kwargs) == [(r, len(actors)) for r in range(len(actors))]


def leave(actors, group):
    def destroy(rank, group):
        col.destroy_collective_group(group)
        return col.is_group_initialized(group), col.get_rank(group)

    assert on_all(actors, destroy, group) == [(False, -1)] * len(actors)


def test_every_collective_on_four_ranks_across_two_nodes(members):
    join(members, "ops")

    def allreduce(rank, op):
        tensor = np.arange(4, dtype=np.float64) + rank  # rank r: [r, r+1, r+2, r+3]
        col.allreduce(tensor, "ops", op)
        return tensor  # the same array: allreduce changed it in place

    base = np.arange(4, dtype=np.float64)
    per_rank = [base + r for r in range(4)]
    for op, expect in [
        (ReduceOp.SUM, sum(per_rank)),
        (ReduceOp.PRODUCT, per_rank[0] * per_rank[1] * per_rank[2] * per_rank[3]),
        (ReduceOp.MIN, per_rank[0]),
        (ReduceOp.MAX, per_rank[3]),
    ]:
        for got in on_all(members, allreduce, op):
            np.testing.assert_array_equal(got, expect)

    def reduce(rank):
        tensor = np.full((2, 3), rank + 1, dtype=np.int64)
        col.reduce(tensor, dst_rank=2, group_name="ops")
        return tensor

    got = on_all(members, reduce)
    np.testing.assert_array_equal(got[2], np.full((2, 3), 1 + 2 + 3 + 4))
    for r in (0, 1, 3):  # the others keep their own
        np.testing.assert_array_equal(got[r], np.full((2, 3), r + 1))

    def broadcast(rank):
        tensor = np.array([rank, rank * 10], dtype=np.int32)
        col.broadcast(tensor, src_rank=3, group_name="ops")
        return tensor

    for got in on_all(members, broadcast):
        np.testing.assert_array_equal(got, [3, 30])
        assert got.dtype == np.int32

    def allgather(rank):
        out = [np.zeros(3, dtype=np.float32) for _ in range(4)]
        col.allgather(out, np.full(3, rank * 1.5, dtype=np.float32), "ops")
        return out

    for got in on_all(members, allgather):
        for r in range(4):
            np.testing.assert_array_equal(got[r], np.full(3, r * 1.5, dtype=np.float32))

    def reducescatter(rank):
        # rank r contributes [r*10 + j] as its piece for rank j
        pieces = [np.array([rank * 10 + j], dtype=np.int64) for j in range(4)]
        tensor = np.zeros(1, dtype=np.int64)
        col.reducescatter(tensor, pieces, "ops", ReduceOp.MAX)
        return tensor

    got = on_all(members, reducescatter)
    assert [int(t[0]) for t in got] == [30 + j for j in range(4)]

    def send_recv(rank):
        # 0 -> 3 and 3 -> 0 across the nodes (twice: pairs keep their order); 1 -> 2.
        if rank == 0:
            col.send(np.array([1.0, 2.0]), 3, "ops")
            col.send(np.array([3.0, 4.0]), 3, "ops")
            back = np.zeros(2)
            col.recv(back, 3, "ops")
            return back
        if rank == 3:
            first, second = np.zeros(2), np.zeros(2)
            col.recv(first, 0, "ops")
            col.recv(second, 0, "ops")
            col.send(first + second, 0, "ops")
            return np.concatenate([first, second])
        if rank == 1:
            col.send(np.arange(5, dtype=np.uint8), 2, "ops")
            return None
        into = np.zeros(5, dtype=np.uint8)
        col.recv(into, 1, "ops")
        return into

    got = on_all(members, send_recv)
    np.testing.assert_array_equal(got[0], [4.0, 6.0])
    np.testing.assert_array_equal(got[3], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(got[2], np.arange(5, dtype=np.uint8))

    leave(members, "ops")


def test_large_arrays(members):
    join(members, "large")

    def allreduce(rank):
        tensor = np.full(2**20, rank + 1.0)  # 8 MiB per rank
        col.allreduce(tensor, "large")
        out = [np.empty(2**19) for _ in range(4)]
        col.allgather(out, np.full(2**19, float(rank)), "large")
        return float(tensor.min()), float(tensor.max()), [float(o.sum()) for o in out]

    for low, high, gathered in on_all(members, allreduce):
        assert low == high == 10.0
        assert gathered == [r * 2.0**19 for r in range(4)]
    leave(members, "large")


def test_barrier_waits_for_every_rank(members):
    join(members, "bar")

    def barrier(rank):
        col.barrier("bar")
        return rank

    first = [members[r].run.remote(barrier, r) for r in range(3)]
    ready, _ = solray.wait(first, num_returns=1, timeout=1.0)
    assert ready == []  # rank 3 has not arrived: nobody passes
    assert solray.get(first + [members[3].run.remote(barrier, 3)], timeout=TIMEOUT_S) == [
        0,
        1,
        2,
        3,
    ]
    leave(members, "bar")


def test_declared_group_joins_at_first_call(members):
    col.create_collective_group(
        members, 4, [3, 2, 1, 0], backend=Backend.GLOO, group_name="declared"
    )
    with pytest.raises(RuntimeError, match="Trying to initialize a group twice"):
        col.create_collective_group(members, 4, [0, 1, 2, 3], backend="gloo", group_name="declared")

    def allreduce(position):
        tensor = np.array([position])
        col.allreduce(tensor, "declared")
        return col.get_rank("declared"), int(tensor[0])

    assert on_all(members, allreduce) == [(3, 6), (2, 6), (1, 6), (0, 6)]
    leave(members, "declared")


def test_lifecycle_errors(members):
    def not_joined(rank):
        errors = []
        for call in (
            lambda: col.allreduce(np.zeros(1), "nope"),
            lambda: col.barrier("nope"),
            lambda: col.send(np.zeros(1), 0, "nope"),
        ):
            try:
                call()
            except RuntimeError as e:
                errors.append(str(e))
        return errors, col.get_rank("nope"), col.get_collective_group_size("nope")

    errors, rank, size = solray.get(members[0].run.remote(not_joined, 0), timeout=TIMEOUT_S)
    assert errors == ["The collective group 'nope' is not initialized in the process."] * 3
    assert (rank, size) == (-1, -1)

    # The driver is no actor or task.
    with pytest.raises(RuntimeError, match="only used inside a Ray actor or task"):
        col.init_collective_group(1, 0, backend="gloo", group_name="driver")

    def init_error(rank, world, my_rank, backend, group):
        try:
            col.init_collective_group(world, my_rank, backend=backend, group_name=group)
        except Exception as e:
            return type(e).__name__, str(e)
        return None

    def check(args, kind, words, member=0):
        name, message = solray.get(
            members[member].run.remote(init_error, 0, *args), timeout=TIMEOUT_S
        )
        assert name == kind and words in message, (name, message)

    check((4, 4, "gloo", "g"), "ValueError", "rank must be an int in [0, 4), got 4")
    check((4, -1, "gloo", "g"), "ValueError", "got -1")
    check((4, 0, "nccl", "g"), "RuntimeError", "NCCL is not available")
    check((4, 0, "mpi", "g"), "RuntimeError", "Ray does not support MPI backend")
    check((4, 0, "tcp", "g"), "ValueError", "Unrecognized backend: 'tcp'")
    check((0, 0, "gloo", "g"), "ValueError", "world_size must be a positive int")

    # Two actors claiming one rank: the second is refused, naming the rank.
    join(members[:2], "twice", world=2)
    check((2, 1, "gloo", "twice"), "RuntimeError", "rank 1 of collective group 'twice' is", 2)

    def init_again(rank):
        try:
            col.init_collective_group(2, rank, backend="gloo", group_name="twice")
        except RuntimeError as e:
            return str(e)

    assert on_all(members[:2], init_again) == ["Trying to initialize a group twice."] * 2

    def bad_peer(rank):
        errors = []
        for call in (
            lambda: col.send(np.zeros(1), 2, "twice"),
            lambda: col.recv(np.zeros(1), rank, "twice"),
            lambda: col.broadcast(np.zeros(1), -1, "twice"),
            lambda: col.allreduce([1.0], "twice"),
            lambda: col.allgather([np.zeros(1)], np.zeros(1), "twice"),
            lambda: col.allreduce_multigpu([np.zeros(1)], "twice"),
        ):
            try:
                call()
            except (RuntimeError, ValueError) as e:
                errors.append(f"{type(e).__name__}: {e}")
        return errors

    errors = solray.get(members[0].run.remote(bad_peer, 0), timeout=TIMEOUT_S)
    assert errors[0] == "ValueError: rank '2' must be less than world size '2'"
    assert errors[1] == "RuntimeError: The source rank '0' is self."
    assert errors[2] == "ValueError: rank '-1' is negative."
    assert errors[3].startswith("RuntimeError: Unrecognized tensor type '<class 'list'>'")
    assert "must be equal to world_size (2), got 1" in errors[4]
    assert "allreduce_multigpu requires NCCL" in errors[5]
    assert len(errors) == 6

    # After destroy, the group is gone and its name (and ranks) free again.
    leave(members[:2], "twice")
    join(members[2:], "twice", world=2)
    leave(members[2:], "twice")


def test_ranks_calling_different_collectives_get_an_error(members):
    join(members[:2], "mixed", world=2)

    def mixed(rank):
        try:
            if rank == 0:
                col.allgather([np.ones(2), np.ones(2)], np.ones(2), "mixed")
            else:
                col.reducescatter(np.ones(2), [np.ones(2), np.ones(2)], "mixed")
        except RuntimeError as e:
            return str(e)

    got = on_all(members[:2], mixed)
    assert "rank 1 called reducescatter where rank 0 called allgather" in got[0]
    assert "rank 0 called allgather where rank 1 called reducescatter" in got[1]

    def shapes(rank):
        try:
            col.allreduce(np.ones(2 + rank), "mixed")
        except RuntimeError as e:
            return str(e)

    got = on_all(members[:2], shapes)
    assert "got shape (3,) float64 from rank 1, rank 0 has (2,) float64" in got[0]
    assert got[1].startswith("allreduce failed on rank 0: ")
    assert got[0] in got[1]
    leave(members[:2], "mixed")


def test_a_rank_that_never_joins_times_out(members):
    def lonely(rank):
        try:
            col.init_collective_group(
                3, rank, backend="gloo", group_name="lonely", gloo_timeout=500
            )
        except RuntimeError as e:
            return str(e), col.is_group_initialized("lonely")

    got = on_all(members[:2], lonely)
    for message, joined in got:
        assert "of 3 did not join within 0.5 s" in message and "2]" in message
        assert not joined
    # Their ranks were released: the group can form now.
    join(members[:3], "lonely", world=3)
    leave(members[:3], "lonely")


def test_a_rank_that_died_is_named(members):
    pair = [Member.options(resources={"head": 1}).remote() for _ in range(2)]
    join(pair, "dead", world=2)
    solray.kill(pair[1])

    def send(rank):
        try:
            col.send(np.ones(3), 1, "dead")
        except RuntimeError as e:
            return str(e)

    message = solray.get(pair[0].run.remote(send, 0), timeout=TIMEOUT_S)
    assert message.startswith("collective group 'dead': send on rank 0 could not send to rank 1")
    solray.kill(pair[0])


def test_util_exports_collective():
    import solray.util

    assert "collective" in solray.util.__all__
    assert solray.util.collective is col
    assert col.gloo_available() and not col.nccl_available()
    assert [op.name for op in ReduceOp] == ["SUM", "PRODUCT", "MIN", "MAX"]
    assert Backend("GLOO") == "gloo"
