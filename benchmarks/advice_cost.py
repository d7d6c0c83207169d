"""What advice on anti-patterns costs the task-submit hot path
(BENCHMARKS.md, "Advice on anti-patterns").

    python benchmarks/advice_cost.py [periods]

One driver switches its advice off and on, period after period (the
owner does all of the work: the call site of each `.remote()`, the get's
check, the reply's bookkeeping; a worker only times the function and adds a
key to its reply, which the owner ignores while off), so both settings
share the machine's load, which on a shared machine moves throughput by
tens of percent between runs. Two of Ray's microbenchmark shapes: "sync",
get(f.remote()) for 0.5 s per period (itself the get-in-a-loop
anti-pattern, so the get's own check is measured too), and "async", 1000
tasks submitted then one get of the list, per period. Prints the medians of
tasks per second and of the driver's CPU time per task (time.process_time:
its user thread and its I/O loop).
"""

from __future__ import annotations

import statistics
import sys
import time

import solray as ray
from solray._private import context


@ray.remote
def small_value():
    return b"ok"


def measure(periods: int, run_period) -> dict:
    cw = context.core_worker
    rates: dict[bool, list] = {False: [], True: []}
    cpus: dict[bool, list] = {False: [], True: []}
    for period in range(2 * periods):
        on = period % 2 == 1
        cw.advice.enabled = on
        wall, cpu = time.perf_counter(), time.process_time()
        n = run_period()
        rates[on].append(n / (time.perf_counter() - wall))
        cpus[on].append((time.process_time() - cpu) / n * 1e6)
    cw.advice.enabled = True
    return {on: (statistics.median(rates[on]), statistics.median(cpus[on])) for on in rates}


def sync_period() -> int:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.5:
        ray.get(small_value.remote())
        n += 1
    return n


def async_period() -> int:
    ray.get([small_value.remote() for _ in range(1000)])
    return 1000


def main() -> None:
    periods = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    ray.init(num_cpus=2, include_dashboard=False)
    ray.get([small_value.remote() for _ in range(2000)])  # warm up
    for name, run in (("sync", sync_period), ("async", async_period)):
        for on, (rate, cpu) in measure(periods, run).items():
            print(
                f"tasks {name:5} advice {'on ' if on else 'off'}: {rate:7.0f} per second, "
                f"driver CPU {cpu:6.1f} us per task",
                flush=True,
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
