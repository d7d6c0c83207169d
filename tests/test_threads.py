"""Many user threads against one core worker, on a real local cluster.

A driver's threads (and a worker's actor threads) share one core worker with
its I/O loop thread. The rule that keeps this safe (docs/architecture.md,
"Threads in a core worker") is tested here the way a user would break it:
eight threads putting, passing, nesting and dropping refs (some in reference
cycles, which the garbage collector frees on whatever thread it runs) and
submitting tasks at once, while another thread takes object reports. Every
report must list the driver's objects, no thread may get stuck, and once the
threads are done every object they made must be freed: the node's store
back to its baseline, and nothing of them left in the owner's tables.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import threading
import time

import numpy as np
import pytest
from conftest import wait_for_condition

import solray as ray
from solray._private import context
from solray._private.protocol import Msg
from solray.util.state import list_objects

LARGE = 150 * 1024  # bytes: above the 100 KiB inline limit, so in the node's store
GET_TIMEOUT_S = 30  # a hang fails the test instead of blocking it
RUN_S = 20
THREADS = 8


def store_stats() -> dict:
    return context.core_worker.request("node", Msg.STORE_STATS, None)


def resolve(value):
    """A comparable digest of a value, following the refs inside lists (a
    digest is a tuple, left as it is: digests are digested again)."""
    if isinstance(value, ray.ObjectRef):
        return ("ref", resolve(ray.get(value, timeout=GET_TIMEOUT_S)))
    if isinstance(value, np.ndarray):
        return ("array", value.size, int(value[0]))
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


@ray.remote
def echo(value):
    return value


@ray.remote
def read_all(box):
    """Reads refs nested in its argument: the worker borrows them."""
    return [resolve(ray.get(ref, timeout=GET_TIMEOUT_S)) for ref in box]


def owner_tables(cw, object_ids: set[bytes]) -> dict:
    """What the driver's core worker still keeps of these objects (read on
    its loop thread, which owns the tables)."""

    async def read():
        return {
            "counted": sorted(i.hex() for i in cw.refs.snapshot() if i in object_ids),
            "in_memory_store": sorted(i.hex() for i in object_ids if cw.memory_store.contains(i)),
            "contained": sorted(i.hex() for i in cw.ownership.contained if i in object_ids),
            "pending_tasks": len(cw.task_manager.tasks),
        }

    return cw.call(read(), timeout=10)


@pytest.mark.timeout(120)
def test_threads_share_a_core_worker_and_everything_is_freed(ray_start):
    cw = context.core_worker
    ray.get([echo.remote(i) for i in range(4)])  # workers started
    before = store_stats()
    anchors = [ray.put(f"anchor {i}") for i in range(3)]
    anchor_ids = {a.hex() for a in anchors}
    made: list[set[bytes]] = [set() for _ in range(THREADS)]
    errors: list[str] = []
    stop = threading.Event()
    ops = [0] * THREADS
    polls = []

    def user_thread(index: int) -> None:
        rng = random.Random(index)
        live: list[tuple] = []  # (ref, what resolve(ray.get(ref)) must give)

        def keep(ref, expected) -> None:
            made[index].add(ref._id)
            live.append((ref, expected))

        def pick(k: int) -> list[tuple]:
            return rng.sample(live, min(k, len(live)))

        try:
            while not stop.is_set():
                ops[index] += 1
                n = ops[index]
                op = rng.randrange(10) if live else rng.randrange(2)
                if op == 0:
                    keep(ray.put((index, n)), (index, n))
                elif op == 1:
                    keep(ray.put(np.full(LARGE, n % 256, np.uint8)), ("array", LARGE, n % 256))
                elif op == 2:
                    chosen = pick(rng.randint(1, 3))
                    keep(ray.put([r for r, _ in chosen]), [("ref", e) for _, e in chosen])
                elif op == 3:
                    ref, expected = pick(1)[0]
                    keep(echo.remote(ref), expected)
                elif op == 4:
                    chosen = pick(rng.randint(1, 3))
                    keep(read_all.remote([r for r, _ in chosen]), [e for _, e in chosen])
                elif op == 5:  # refs returned inside a task's result
                    chosen = pick(2)
                    keep(echo.remote([r for r, _ in chosen]), [("ref", e) for _, e in chosen])
                elif op == 6:
                    ref, expected = pick(1)[0]
                    got = resolve(ray.get(ref, timeout=GET_TIMEOUT_S))
                    if got != expected:
                        errors.append(f"thread {index}: {ref} read {got!r}, not {expected!r}")
                elif op == 7:  # fire and forget: a result dropped before it exists
                    echo.remote([r for r, _ in pick(2)])
                elif op == 8:
                    # Refs in a reference cycle: the garbage collector frees
                    # them, on whatever thread it happens to run (the loop's
                    # too), wherever that thread is (holding a lock, say).
                    cycle = [r for r, _ in pick(2)]
                    cycle.append(cycle)
                    del cycle
                else:
                    for _ in range(rng.randint(1, 4)):
                        if live:
                            live.pop(rng.randrange(len(live)))
                if len(live) > 24:
                    del live[: len(live) // 2]
        except Exception as e:  # reported below, with the thread it came from
            errors.append(f"thread {index}: {e!r}")
            stop.set()

    def poller() -> None:
        pid = os.getpid()
        while not stop.is_set():
            try:
                rows = list_objects(limit=10**9)
            except Exception as e:
                errors.append(f"list_objects failed: {e!r}")
                return
            mine = {row["object_id"] for row in rows if row["pid"] == pid}
            if not anchor_ids <= mine:
                errors.append(
                    f"object report {len(polls)} is missing the driver's objects "
                    f"({len(mine)} driver rows, anchors missing: {sorted(anchor_ids - mine)})"
                )
            polls.append(len(mine))

    threads = [threading.Thread(target=user_thread, args=(i,)) for i in range(THREADS)]
    threads.append(threading.Thread(target=poller))
    # Threads take turns every 5 ms by default; switching far more often
    # makes interleavings that would take hours to meet by chance.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for t in threads:
            t.start()
        stop.wait(RUN_S)
        stop.set()
        deadline = time.monotonic() + 2 * GET_TIMEOUT_S
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        stop.set()
        sys.setswitchinterval(switch_interval)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert not errors, "\n".join(errors[:20])
    # It really was concurrent work, with reports taken throughout.
    assert min(ops) > 50, ops
    assert len(polls) >= 10 and max(polls) > len(anchors), polls

    object_ids = set().union(*made)
    del anchors
    gc.collect()

    def freed() -> bool:
        stats = store_stats()
        tables = owner_tables(cw, object_ids)
        return (
            stats["used"] == before["used"]
            and stats["num_objects"] == before["num_objects"]
            and not any(tables.values())
            and not list_objects(filters=[("pid", "=", os.getpid())], limit=10**9)
        )

    def describe() -> str:
        rows = list_objects(filters=[("pid", "=", os.getpid())], limit=10**9)
        return (
            f"not everything was freed: store {store_stats()} (before {before}), "
            f"owner tables {owner_tables(cw, object_ids)}, "
            f"{len(rows)} driver rows listed: {rows[:3]}"
        )

    wait_for_condition(freed, timeout=30, message=describe)
