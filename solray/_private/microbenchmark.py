"""`solray microbenchmark`: Ray's `ray microbenchmark` workloads, same names.

Each workload runs as in Ray's ray_perf.py: a one-second warm-up to size a
batch, then four timed rounds; the row prints the mean and standard deviation
of the rounds' rates, as `NAME per second X +- Y`.
"""

from __future__ import annotations

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

    ray.init()
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
    finally:
        ray.shutdown()
    return results
