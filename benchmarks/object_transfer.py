"""Object transfer between nodes on this machine (results go in BENCHMARKS.md).

    python benchmarks/object_transfer.py

1. Transfer: a task on node B makes a 1 GiB array; the driver (on the head)
   reads it, which pulls it into the head's store. GB/s over several rounds.
2. Broadcast: the driver puts a 1 GiB array; one task on each of 4 other nodes
   reads it. Seconds until all four have it (Ray's envelope: 1 GiB to 50 nodes
   in 16.9 s).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

GIB = 1 << 30
STORE = int(2.5 * GIB)


def cluster_of(ray, nodes: int):
    """A head (the driver's node) and `nodes` nodes with resources n0, n1, ...;
    `ray` is solray or Ray (vs_ray.py measures both with these functions)."""
    cluster_utils = __import__(f"{ray.__name__}.cluster_utils", fromlist=["Cluster"])
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE}
    )
    for i in range(nodes):
        cluster.add_node(num_cpus=1, resources={f"n{i}": 1}, object_store_memory=STORE)
    ray.init(address=cluster.address)
    return cluster


def transfer(ray, rounds: int = 5) -> list[float]:
    """GB/s of each round's pull of 1 GiB from node n0 into the head."""
    cluster = cluster_of(ray, 1)
    try:

        @ray.remote(resources={"n0": 1})
        def make(i):
            return np.full(GIB // 8, i, dtype=np.int64)

        rates = []
        for i in range(rounds + 1):
            ref = make.remote(i)
            ray.wait([ref], fetch_local=False)
            start = time.perf_counter()
            value = ray.get(ref)
            elapsed = time.perf_counter() - start
            assert value[0] == i
            del value, ref
            if i:  # the first round warms the receiving arena's pages
                rates.append(GIB / elapsed / 1e9)
        return rates
    finally:
        ray.shutdown()
        cluster.shutdown()


def broadcast(ray, nodes: int = 4, rounds: int = 3) -> list[float]:
    """Seconds of each round until all `nodes` nodes hold a 1 GiB put."""
    cluster = cluster_of(ray, nodes)
    try:

        @ray.remote
        def first(a):
            return int(a[0])

        times = []
        for r in range(rounds):
            ref = ray.put(np.full(GIB // 8, r, dtype=np.int64))
            start = time.perf_counter()
            got = ray.get([first.options(resources={f"n{i}": 1}).remote(ref) for i in range(nodes)])
            times.append(time.perf_counter() - start)
            assert got == [r] * nodes
            del ref
        return times
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    import solray

    rates = transfer(solray)
    print(
        f"object transfer between two nodes: {statistics.mean(rates):.2f} GB/s "
        f"+- {statistics.pstdev(rates):.2f} (1 GiB, {len(rates)} rounds)"
    )
    times = broadcast(solray)
    print(
        f"broadcast 1 GiB to 4 nodes: {statistics.mean(times):.2f} s "
        f"+- {statistics.pstdev(times):.2f} ({len(times)} rounds)"
    )
