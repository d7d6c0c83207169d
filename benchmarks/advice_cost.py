"""What advice on anti-patterns costs the task-submit hot path: the driver's
CPU time and wall time per task, SOLRAY_ANTI_PATTERN_ADVICE on and off
(BENCHMARKS.md, "Advice on anti-patterns").

    python benchmarks/advice_cost.py [rounds]

Each round runs the workload in fresh clusters, advice on, then off. The
driver's CPU time (time.process_time: its user thread and its I/O loop) is
the figure to read: it is where the advice works (the call site of each
`.remote()`, the reply's bookkeeping), and it barely moves when other
programs share the machine, unlike the wall-clock rate, printed too.
Workloads: "async", 2000 tasks submitted then one get of the list (Ray's
"single client tasks async" shape); "sync", get(f.remote()) 300 times (its
"tasks sync" shape, itself the get-in-a-loop anti-pattern).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time


def child() -> None:
    import solray as ray

    ray.init(num_cpus=2, include_dashboard=False)

    @ray.remote
    def small_value():
        return b"ok"

    ray.get([small_value.remote() for _ in range(2000)])  # warm up
    rows: dict[str, list[tuple[float, float]]] = {"async": [], "sync": []}
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        ray.get([small_value.remote() for _ in range(2000)])
        rows["async"].append(
            ((time.perf_counter() - wall) / 2000, (time.process_time() - cpu) / 2000)
        )
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(300):
            ray.get(small_value.remote())
        rows["sync"].append(((time.perf_counter() - wall) / 300, (time.process_time() - cpu) / 300))
    print(
        "  ".join(
            f"{name}: wall {statistics.median(w for w, _ in r) * 1e6:.0f} us, "
            f"driver cpu {statistics.median(c for _, c in r) * 1e6:.0f} us"
            for name, r in rows.items()
        ),
        flush=True,
    )
    ray.shutdown()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for i in range(rounds):
        for mode in ("on", "off"):
            env = dict(os.environ, SOLRAY_ANTI_PATTERN_ADVICE="1" if mode == "on" else "0")
            print(f"round {i + 1}, advice {mode:3}: ", end="", flush=True)
            subprocess.run(
                [sys.executable, __file__, "--child"],
                env=env,
                check=True,
                stderr=subprocess.DEVNULL,
            )


if __name__ == "__main__":
    child() if sys.argv[1:] == ["--child"] else main()
