"""Nested parallelism: the distributed quick-sort from Ray's task patterns.

Run:  python examples/quick_sort.py
"""

import time

from numpy import random

import solray as ray


def partition(collection):
    pivot = collection.pop()
    greater, lesser = [], []
    for element in collection:
        if element > pivot:
            greater.append(element)
        else:
            lesser.append(element)
    return lesser, pivot, greater


@ray.remote
def quick_sort_distributed(collection):
    # Use a threshold to avoid over-parallelizing.
    if len(collection) <= 100_000:
        return sorted(collection)
    lesser, pivot, greater = partition(collection)
    lesser = quick_sort_distributed.remote(lesser)
    greater = quick_sort_distributed.remote(greater)
    return ray.get(lesser) + [pivot] + ray.get(greater)


if __name__ == "__main__":
    start = time.perf_counter()
    ray.init()
    print(f"cluster up in {time.perf_counter() - start:.2f}s: {ray.cluster_resources()}")
    unsorted = random.randint(1_000_000, size=1_000_000).tolist()
    start = time.perf_counter()
    result = ray.get(quick_sort_distributed.remote(unsorted))
    elapsed = time.perf_counter() - start
    assert result == sorted(unsorted)
    print(f"sorted {len(result):,} numbers with nested tasks in {elapsed:.2f}s")
    ray.shutdown()
