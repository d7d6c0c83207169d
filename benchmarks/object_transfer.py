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

import solray as ray
from solray.cluster_utils import Cluster

GIB = 1 << 30
STORE = int(2.5 * GIB)


def transfer(rounds: int = 5) -> list[float]:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE}
    )
    cluster.add_node(num_cpus=1, resources={"b": 1}, object_store_memory=STORE)
    ray.init(address=cluster.address)
    try:

        @ray.remote(resources={"b": 1})
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
        cluster.shutdown()


def broadcast(nodes: int = 4, rounds: int = 3) -> list[float]:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE}
    )
    for i in range(nodes):
        cluster.add_node(num_cpus=1, resources={f"n{i}": 1}, object_store_memory=STORE)
    ray.init(address=cluster.address)
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
        cluster.shutdown()


if __name__ == "__main__":
    rates = transfer()
    print(
        f"object transfer between two nodes: {statistics.mean(rates):.2f} GB/s "
        f"+- {statistics.pstdev(rates):.2f} (1 GiB, {len(rates)} rounds)"
    )
    times = broadcast()
    print(
        f"broadcast 1 GiB to 4 nodes: {statistics.mean(times):.2f} s "
        f"+- {statistics.pstdev(times):.2f} ({len(times)} rounds)"
    )
