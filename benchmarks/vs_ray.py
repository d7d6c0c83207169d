"""solray and Ray side by side, on this machine, in one run.

    python benchmarks/vs_ray.py --ray-python /tmp/venv-ray/bin/python [-k PATTERN] [--rounds 3]

The Python given must have Ray installed (a virtual environment of its own:
`python -m venv /tmp/venv-ray && /tmp/venv-ray/bin/pip install ray==2.60.0`;
never the project's). Each row runs in a fresh process per system, Ray and
solray alternately, `--rounds` times each; the table gives the median of
each and the ratio solray / Ray (above 1: solray ahead; for rows measured in
seconds the ratio is inverted, so above 1 still means solray is ahead).

Why one script, run in both interpreters: the workload is the same source
text, with `ray` bound to Ray or to `solray` (its API is Ray's), so nothing
differs but the system. Why alternating: the machine is shared and noisy;
neighbouring measurements see the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import object_transfer  # this folder's: the transfer rows, measured as there

MIB = 1 << 20


def rate(fn, seconds: float = 2.0, multiplier: float = 1) -> float:
    """Calls per second of `fn` (after a warm-up of half the time)."""
    start = time.perf_counter()
    while time.perf_counter() - start < seconds / 2:
        fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return multiplier * count / (time.perf_counter() - start)


# -- rows: each runs in a child process with `ray` bound to the system --------
# A row returns (value, unit, higher_is_better).


def row_get_stored(ray):
    ray.init(num_cpus=2)
    refs = [ray.put(np.full(200_000, i, dtype=np.int64)) for i in range(1000)]
    return rate(lambda: ray.get(refs)), "/s", True


def row_get_containing(ray):
    ray.init(num_cpus=2)

    @ray.remote
    def create():
        return [ray.put(1) for _ in range(10000)]

    ref = create.remote()
    return rate(lambda: ray.get(ref)), "/s", True


def row_wait(ray):
    ray.init(num_cpus=2)

    @ray.remote
    def small():
        return b"ok"

    def wait_1k():
        not_ready = [small.remote() for _ in range(1000)]
        for _ in range(1000):
            _, not_ready = ray.wait(not_ready)

    return rate(wait_1k), "/s", True


def row_tasks_sync(ray):
    ray.init(num_cpus=2)

    @ray.remote
    def small():
        return b"ok"

    return rate(lambda: ray.get(small.remote())), "/s", True


def row_tasks_async(ray):
    ray.init(num_cpus=2)

    @ray.remote
    def small():
        return b"ok"

    return rate(lambda: ray.get([small.remote() for _ in range(1000)]), multiplier=1000), "/s", True


def row_actor_sync(ray):
    ray.init(num_cpus=2)

    @ray.remote
    class Actor:
        def small(self):
            return b"ok"

    a = Actor.remote()
    return rate(lambda: ray.get(a.small.remote())), "/s", True


def row_async_actor_sync(ray):
    ray.init(num_cpus=2)

    @ray.remote
    class AsyncActor:
        async def small(self):
            return b"ok"

    a = AsyncActor.remote()
    return rate(lambda: ray.get(a.small.remote())), "/s", True


def _spill(ray, restore: bool):
    spill_dir = tempfile.mkdtemp(prefix="vs_ray_spill_")
    config = {
        "object_spilling_config": json.dumps(
            {"type": "filesystem", "params": {"directory_path": spill_dir}}
        )
    }
    ray.init(num_cpus=2, object_store_memory=512 * MIB, _system_config=config)
    try:
        size, count = 64 * MIB, 24  # 1.5 GiB through a 512 MiB store
        start = time.perf_counter()
        refs = [ray.put(np.full(size // 8, i, dtype=np.int64)) for i in range(count)]
        put_time = time.perf_counter() - start
        if not restore:
            return size * count / put_time / 1e9, "GB/s", True
        start = time.perf_counter()
        for i, ref in enumerate(refs):  # the oldest were spilled first: read them back
            assert int(ray.get(ref)[0]) == i
        return size * count / (time.perf_counter() - start) / 1e9, "GB/s", True
    finally:
        ray.shutdown()
        shutil.rmtree(spill_dir, ignore_errors=True)


def row_spill(ray):
    return _spill(ray, restore=False)


def row_restore(ray):
    return _spill(ray, restore=True)


def row_transfer(ray):
    return statistics.median(object_transfer.transfer(ray, rounds=3)), "GB/s", True


def row_broadcast(ray):
    return min(object_transfer.broadcast(ray, nodes=4, rounds=2)), "s", False


ROWS = {
    "get 1k stored objects of 1.6 MB": row_get_stored,
    "get object containing 10k refs": row_get_containing,
    "wait 1k refs": row_wait,
    "tasks sync": row_tasks_sync,
    "tasks async": row_tasks_async,
    "1:1 actor calls sync": row_actor_sync,
    "1:1 async-actor calls sync": row_async_actor_sync,
    "spill (put through a 512 MiB store)": row_spill,
    "restore (get of spilled objects)": row_restore,
    "transfer 1 GiB between two nodes": row_transfer,
    "broadcast 1 GiB to 4 nodes": row_broadcast,
}


def child(system: str, name: str) -> None:
    ray = __import__(system)
    try:
        value, unit, higher = ROWS[name](ray)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    print("RESULT " + json.dumps([value, unit, higher]), flush=True)


def measure(python: str, system: str, name: str) -> tuple[float, str, bool] | None:
    env = dict(os.environ, RAY_DEDUP_LOGS="0")
    done = subprocess.run(
        [python, os.path.abspath(__file__), "--child", system, name],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return tuple(json.loads(line[7:]))
    sys.stderr.write(f"{system} {name!r} failed:\n{done.stderr[-2000:]}\n")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-python", help="a Python with Ray installed")
    parser.add_argument("--solray-python", default=sys.executable)
    parser.add_argument("-k", dest="pattern", help="only rows whose name matches")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if not args.ray_python:
        parser.error("--ray-python is required (a Python with ray installed)")
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at start; medians of {args.rounds} rounds"
    )
    print("| row | solray | Ray | solray / Ray |")
    print("|---|---:|---:|---:|")
    for name in ROWS:
        if args.pattern and not re.search(args.pattern, name):
            continue
        figures: dict[str, list[float]] = {"solray": [], "ray": []}
        unit, higher = "", True
        for _ in range(args.rounds):
            for system, python in (("ray", args.ray_python), ("solray", args.solray_python)):
                result = measure(python, system, name)
                if result is not None:
                    figures[system].append(result[0])
                    unit, higher = result[1], result[2]
        ours, theirs = (
            statistics.median(figures[s]) if figures[s] else float("nan") for s in ("solray", "ray")
        )
        ratio = ours / theirs if higher else theirs / ours
        print(f"| {name} | {ours:,.2f} {unit} | {theirs:,.2f} {unit} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
