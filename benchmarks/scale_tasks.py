"""1,000,000 tiny tasks from one driver, submitted in batches (BENCHMARKS.md).

    python benchmarks/scale_tasks.py [--tasks N] [--batch B]

Prints the total time, the rate, and the driver's peak resident memory (Ray
queues 1M tasks in 184 s on a 64-core machine).
"""

from __future__ import annotations

import argparse
import threading
import time

import psutil

import solray as ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()

    me = psutil.Process()
    peak = [me.memory_info().rss]
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            peak[0] = max(peak[0], me.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    ray.init()

    @ray.remote
    def tiny(i):
        return i

    start = time.perf_counter()
    submitted = 0
    total = 0
    while submitted < args.tasks:
        n = min(args.batch, args.tasks - submitted)
        total += sum(ray.get([tiny.remote(submitted + i) for i in range(n)]))
        submitted += n
    elapsed = time.perf_counter() - start
    done.set()
    assert total == args.tasks * (args.tasks - 1) // 2
    ray.shutdown()
    print(
        f"{args.tasks:,} tasks in batches of {args.batch:,}: {elapsed:.1f} s "
        f"({args.tasks / elapsed:,.0f} tasks/s), driver peak RSS "
        f"{peak[0] / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
