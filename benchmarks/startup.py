"""Start-up time and idle memory of a local cluster (BENCHMARKS.md).

    python benchmarks/startup.py

Measures import + init() + the first task's result, then, with the cluster
idle, the resident memory of its processes (control store, node, workers,
worker fork server), not counting the driver.
"""

import time

start = time.perf_counter()

import psutil  # noqa: E402

import solray as ray  # noqa: E402

ray.init()


@ray.remote
def first():
    return 1


ray.get(first.remote())
elapsed = time.perf_counter() - start
time.sleep(3)  # let the pool settle: idle means idle
processes = psutil.Process().children(recursive=True)
rss = sum(p.memory_info().rss for p in processes)
uss = sum(p.memory_full_info().uss for p in processes)
print(f"import + init() + first task result: {elapsed:.2f} s")
print(
    f"idle cluster: {len(processes)} processes, {rss / 1e6:.0f} MB resident "
    f"({uss / 1e6:.0f} MB unique to them)"
)
ray.shutdown()
