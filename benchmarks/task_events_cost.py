"""What task events cost: CPU time per call over all of a local cluster's
processes (driver, control store, node, workers), events off and on
(BENCHMARKS.md).

    python benchmarks/task_events_cost.py [rounds]

Each round runs the workload twice, in fresh clusters, with
RAY_task_events_report_interval_ms=0 (off) and without (on), alternating.
CPU time is counted rather than throughput because it barely moves when
other programs share the machine; the wall-clock rate is printed too.
Processes are sampled every 50 ms, so a worker that exits loses at most its
last 50 ms.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

CALLS = 20_000


class CpuMeter:
    def __init__(self):
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.t0 = time.time()
        self.last: dict[int, float] = {}
        self.by_kind: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopped = False
        self.sample()
        self.by_kind.clear()
        threading.Thread(target=self.run, daemon=True).start()

    def sample(self) -> None:
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                times = p.cpu_times()
                cpu = times.user + times.system
                prev = self.last.get(p.pid)
                if prev is None:
                    prev = 0.0 if p.create_time() >= self.t0 else cpu
                kind = next(
                    (k for k in ("control_store", "node", "worker") if k in " ".join(p.cmdline())),
                    "driver",
                )
                with self.lock:
                    self.by_kind[kind] = self.by_kind.get(kind, 0.0) + max(0.0, cpu - prev)
                self.last[p.pid] = cpu
            except self.psutil.Error:
                pass

    def run(self) -> None:
        while not self.stopped:
            self.sample()
            time.sleep(0.05)

    def read(self) -> dict[str, float]:
        with self.lock:
            return dict(self.by_kind)


def workload() -> None:
    import solray as ray

    ray.init(num_cpus=2)

    @ray.remote
    def small_value():
        return b"ok"

    @ray.remote
    class Actor:
        def small_value(self):
            return b"ok"

    actor = Actor.remote()
    ray.get([small_value.remote() for _ in range(2000)])  # warm-up
    ray.get([actor.small_value.remote() for _ in range(2000)])
    time.sleep(1.5)  # the warm-up's events are merged before counting starts
    meter = CpuMeter()
    for label, batch in (
        ("tasks async", lambda: ray.get([small_value.remote() for _ in range(1000)])),
        ("actor calls async", lambda: ray.get([actor.small_value.remote() for _ in range(1000)])),
    ):
        before, start = meter.read(), time.perf_counter()
        for _ in range(CALLS // 1000):
            batch()
        wall = time.perf_counter() - start
        time.sleep(1.3)  # the last batch of events is shipped and merged, and counted
        after = meter.read()
        per_call = {k: 1e6 * (v - before.get(k, 0.0)) / CALLS for k, v in after.items()}
        parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(per_call.items()))
        print(
            f"{label}: {sum(per_call.values()):.0f} us CPU per call ({parts}); "
            f"{CALLS / wall:.0f} calls/s",
            flush=True,
        )
    meter.stopped = True
    ray.shutdown()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    for i in range(rounds):
        for mode, extra in (("off", {"RAY_task_events_report_interval_ms": "0"}), ("on", {})):
            print(f"== events {mode}, round {i + 1}", flush=True)
            env = dict(os.environ, **extra)
            subprocess.run([sys.executable, __file__, "--workload"], env=env, check=True)


if __name__ == "__main__":
    if "--workload" in sys.argv:
        workload()
    else:
        main()
