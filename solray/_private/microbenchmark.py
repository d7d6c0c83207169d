"""`solray microbenchmark`: Ray's `ray microbenchmark` workloads, same names.

Each workload runs as in Ray's ray_perf.py: a one-second warm-up to size a
batch, then four timed rounds; the row prints the mean and standard deviation
of the rounds' rates, as `NAME per second X +- Y`.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np


def timeit(
    name: str,
    fn: Callable[[], object],
    multiplier: float = 1,
    round_seconds: float = 2.0,
    rounds: int = 4,
) -> tuple[str, float, float]:
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < round_seconds / 2:
        fn()
        count += 1
    step = count // 10 + 1
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < round_seconds:
            for _ in range(step):
                fn()
            count += step
        rates.append(multiplier * count / (time.perf_counter() - start))
    mean = statistics.mean(rates)
    sd = statistics.pstdev(rates)
    print(f"{name} per second {round(mean, 2)} +- {round(sd, 2)}", flush=True)
    return name, mean, sd


def run(pattern: str | None = None, round_seconds: float = 2.0) -> list[tuple[str, float, float]]:
    import solray as ray

    selected = re.compile(pattern) if pattern else None
    results = []

    def bench(name, fn, multiplier=1):
        if selected is None or selected.search(name):
            results.append(timeit(name, fn, multiplier, round_seconds))

    ray.init(resources={"custom": 100})
    try:

        @ray.remote
        def small_value():
            return b"ok"

        @ray.remote
        def do_put_small():
            for _ in range(100):
                ray.put(0)

        @ray.remote
        def do_put():
            for _ in range(10):
                ray.put(np.zeros(10 * 1024 * 1024, dtype=np.int64))

        @ray.remote
        def create_object_containing_ref():
            return [ray.put(1) for _ in range(10000)]

        value = ray.put(0)
        bench("single client get calls (Plasma Store)", lambda: ray.get(value))
        bench("single client put calls (Plasma Store)", lambda: ray.put(0))
        bench(
            "multi client put calls (Plasma Store)",
            lambda: ray.get([do_put_small.remote() for _ in range(10)]),
            1000,
        )
        arr = np.zeros(100 * 1024 * 1024, dtype=np.int64)
        bench("single client put gigabytes", partial(ray.put, arr), 8 * 0.1)
        del arr
        bench(
            "single client tasks and get batch",
            lambda: ray.get([small_value.remote() for _ in range(1000)]),
        )
        bench(
            "multi client put gigabytes",
            lambda: ray.get([do_put.remote() for _ in range(10)]),
            10 * 8 * 0.1,
        )
        name = "single client get 1k stored objects of 1.6 MB"
        if selected is None or selected.search(name):
            # Each value is in the store (above the inline limit), so every
            # get reads 1,000 objects in place: the rate is gets of all 1,000.
            stored = [ray.put(np.full(200_000, i, dtype=np.int64)) for i in range(1000)]
            bench(name, lambda: ray.get(stored))
            del stored
        if selected is None or selected.search("single client get object containing 10k refs"):
            containing = create_object_containing_ref.remote()
            bench("single client get object containing 10k refs", lambda: ray.get(containing))

        def wait_multiple_refs():
            not_ready = [small_value.remote() for _ in range(1000)]
            for _ in range(1000):
                _, not_ready = ray.wait(not_ready)

        bench("single client wait 1k refs", wait_multiple_refs)
        bench("single client tasks sync", lambda: ray.get(small_value.remote()))
        bench(
            "single client tasks async",
            lambda: ray.get([small_value.remote() for _ in range(1000)]),
            1000,
        )
        _actor_rows(ray, bench, selected, small_value)

        def placement_group_create_removal(num_pgs: int = 100) -> None:
            pgs = [ray.util.placement_group(bundles=[{"custom": 0.001}]) for _ in range(num_pgs)]
            for pg in pgs:
                pg.wait(timeout_seconds=30)
            for pg in pgs:
                ray.util.remove_placement_group(pg)

        bench("placement group create/removal", placement_group_create_removal, 100)
    finally:
        ray.shutdown()
    return results


def _actor_rows(ray, bench, selected, small_value) -> None:
    """Ray's actor rows, with its workloads and multipliers."""

    def wanted(*names: str) -> bool:
        return selected is None or any(selected.search(n) for n in names)

    @ray.remote
    class Actor:
        def small_value(self):
            return b"ok"

        def small_value_arg(self, x):
            return b"ok"

        def small_value_batch(self, n):
            ray.get([small_value.remote() for _ in range(n)])

    @ray.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

        async def small_value_with_arg(self, x):
            return b"ok"

    @ray.remote(num_cpus=0)
    class Client:
        def __init__(self, servers):
            self.servers = servers if isinstance(servers, list) else [servers]

        def small_value_batch(self, n):
            results = []
            for s in self.servers:
                results.extend([s.small_value.remote() for _ in range(n)])
            ray.get(results)

        def small_value_batch_arg(self, n):
            x = ray.put(0)
            results = []
            for s in self.servers:
                results.extend([s.small_value_arg.remote(x) for _ in range(n)])
            ray.get(results)

    n_cpu = max(1, (os.cpu_count() or 2) // 2)

    if wanted("multi client tasks async"):
        actors = [Actor.remote() for _ in range(4)]
        bench(
            "multi client tasks async",
            lambda: ray.get([a.small_value_batch.remote(10000) for a in actors]),
            10000 * 4,
        )
        del actors

    if wanted("1:1 actor calls sync"):
        a = Actor.remote()
        bench("1:1 actor calls sync", lambda: ray.get(a.small_value.remote()))
    if wanted("1:1 actor calls async"):
        a = Actor.remote()
        bench(
            "1:1 actor calls async",
            lambda: ray.get([a.small_value.remote() for _ in range(1000)]),
            1000,
        )
    if wanted("1:1 actor calls concurrent"):
        a = Actor.options(max_concurrency=16).remote()
        bench(
            "1:1 actor calls concurrent",
            lambda: ray.get([a.small_value.remote() for _ in range(1000)]),
            1000,
        )
    if wanted("1:n actor calls async"):
        actors = [Actor.remote() for _ in range(n_cpu)]
        client = Client.remote(actors)
        bench(
            "1:n actor calls async",
            lambda: ray.get(client.small_value_batch.remote(5000)),
            5000 * len(actors),
        )

    @ray.remote
    def work(actors, n):
        ray.get([actors[i % len(actors)].small_value.remote() for i in range(n)])

    if wanted("n:n actor calls async"):
        actors = [Actor.remote() for _ in range(n_cpu)]
        bench(
            "n:n actor calls async",
            lambda: ray.get([work.remote(actors, 5000) for _ in range(4)]),
            4 * 5000,
        )
    if wanted("n:n actor calls with arg async"):
        clients = [Client.remote(Actor.remote()) for _ in range(n_cpu)]
        bench(
            "n:n actor calls with arg async",
            lambda: ray.get([c.small_value_batch_arg.remote(1000) for c in clients]),
            1000 * len(clients),
        )
    if wanted("1:1 async-actor calls sync"):
        a = AsyncActor.remote()
        bench("1:1 async-actor calls sync", lambda: ray.get(a.small_value.remote()))
    if wanted("1:1 async-actor calls async"):
        a = AsyncActor.remote()
        bench(
            "1:1 async-actor calls async",
            lambda: ray.get([a.small_value.remote() for _ in range(1000)]),
            1000,
        )
    if wanted("1:1 async-actor calls with args async"):
        a = AsyncActor.remote()
        bench(
            "1:1 async-actor calls with args async",
            lambda: ray.get([a.small_value_with_arg.remote(i) for i in range(1000)]),
            1000,
        )
    if wanted("1:n async-actor calls async"):
        actors = [AsyncActor.remote() for _ in range(n_cpu)]
        client = Client.remote(actors)
        bench(
            "1:n async-actor calls async",
            lambda: ray.get(client.small_value_batch.remote(5000)),
            5000 * len(actors),
        )
    if wanted("n:n async-actor calls async"):
        actors = [AsyncActor.remote() for _ in range(n_cpu)]
        bench(
            "n:n async-actor calls async",
            lambda: ray.get([work.remote(actors, 5000) for _ in range(4)]),
            4 * 5000,
        )
