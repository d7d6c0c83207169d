"""Distributed reference counting on a real local cluster.

Two halves of one promise:

- nothing unreachable stays: once every ref to an object is gone (in the
  driver, in workers, in actors, inside other objects), the object leaves
  the owner's memory store and the node's shared-memory store, and the state
  API no longer lists it;
- nothing reachable is freed: a ref held by a worker, an actor, another
  object, a closure or a running task keeps its object readable after the
  owner dropped its own ref.

"Back to baseline" is measured with the node's store accounting (bytes in
use, number of objects) and the driver's memory store, never with raw
/dev/shm usage (arena pages stay allocated after frees, by design).
"""

from __future__ import annotations

import gc
import os
import random
import time
from copy import copy

import numpy as np
import psutil
import pytest
from conftest import wait_for_condition

import solray as ray
from solray._private import context
from solray._private.protocol import Msg
from solray.util.state import list_objects

LARGE = 200_000  # uint8 elements above the 100 KiB inline limit: stored in shared memory
GET_TIMEOUT_S = 30  # a hang fails the test instead of blocking it


def store_stats() -> dict:
    return context.core_worker.request("node", Msg.STORE_STATS, None)


def snapshot() -> dict:
    """What the cluster holds right now, as far as freeing is concerned."""
    stats = store_stats()
    return {
        "used": stats["used"],
        "num_objects": stats["num_objects"],
        "memory_store": len(context.core_worker.memory_store),
    }


def wait_for_baseline(before: dict, *, objects_listed: bool = True, timeout: float = 20) -> None:
    """Poll until the store and the driver's memory store are back to `before`
    (and, by default, no process reports any object)."""
    gc.collect()

    def back() -> bool:
        now = snapshot()
        if now != before:
            return False
        return not objects_listed or not list_objects(limit=10_000)

    def describe() -> str:
        rows = list_objects(limit=10_000)
        return (
            f"not back to baseline: now {snapshot()}, before {before}, "
            f"driver refs {context.core_worker.refs.stats()} at {context.core_worker.address}, "
            f"{len(rows)} objects listed: {rows[:5]}"
        )

    wait_for_condition(back, timeout=timeout, message=describe)


def listed(ref) -> list[dict]:
    return list_objects(filters=[("object_id", "=", ref.hex())], limit=10_000)


def big(fill: int, n: int = LARGE) -> np.ndarray:
    return np.full(n, fill % 256, dtype=np.uint8)


def wait_for_file(path: str, timeout: float = 60.0) -> None:
    """Inside a task or actor: block until the driver creates `path`."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


@ray.remote
class Holder:
    """Keeps whatever refs it is given (nested in a list, so not resolved)."""

    def __init__(self):
        self.boxes = {}

    def pid(self):
        return os.getpid()

    def store(self, key, box):
        self.boxes[key] = box
        return True

    def read(self, key):
        return [summarize(ray.get(r, timeout=GET_TIMEOUT_S)) for r in self.boxes[key]]

    def drop(self, key):
        del self.boxes[key]
        gc.collect()
        return True

    def make(self, value):
        """A value this actor owns, returned inside a list."""
        return [ray.put(value)]


def summarize(value):
    """A comparable digest of a value: arrays by size and contents, refs by
    what they point to (fetched), containers element-wise."""
    if isinstance(value, np.ndarray):
        return ("array", value.size, int(value[0]), int(value.sum()))
    if isinstance(value, ray.ObjectRef):
        return ("ref", summarize(ray.get(value, timeout=GET_TIMEOUT_S)))
    if isinstance(value, (list, tuple)):
        return [summarize(v) for v in value]
    if isinstance(value, dict):
        return {k: summarize(v) for k, v in sorted(value.items())}
    return value


@ray.remote
def summarize_task(value):
    return summarize(value)


@ray.remote
def identity(value):
    return value


@pytest.fixture
def warm(ray_start):
    """The cluster, with workers warmed up, and the baseline to come back to."""
    ray.get([identity.remote(i) for i in range(4)])
    before = snapshot()
    assert before["num_objects"] == 0 and before["used"] == 0, before
    return before


# -- memory returns to its baseline ------------------------------------------


def test_puts_are_freed(warm):
    small = [ray.put(i) for i in range(200)]
    large = [ray.put(big(i)) for i in range(20)]
    stats = store_stats()
    assert stats["num_objects"] == 20  # small values stay inline in the driver
    assert stats["used"] >= 20 * LARGE
    assert len(listed(large[0])) == 1
    assert ray.get(small[7]) == 7 and ray.get(large[7])[0] == 7
    del small
    gc.collect()
    # Only the large ones are left, and still readable.
    wait_for_condition(lambda: len(context.core_worker.memory_store) == warm["memory_store"] + 20)
    assert [int(ray.get(r)[0]) for r in large] == list(range(20))
    del large
    wait_for_baseline(warm)


def test_a_value_read_from_the_store_outlives_its_ref(warm):
    """The store keeps a freed object's memory while an array read from it
    lives, and lets go once the array is gone."""
    ref = ray.put(big(3))
    array = ray.get(ref)
    del ref
    gc.collect()
    wait_for_condition(lambda: not list_objects(limit=10_000))
    assert store_stats()["num_objects"] == 1  # pinned by the array
    assert int(array.sum()) == 3 * LARGE
    del array
    wait_for_baseline(warm)


def test_each_value_of_a_get_keeps_its_own_pin(warm):
    """A get of many stored values pins each for as long as anything built on
    it lives (the array, a numpy view of it, a memoryview of it): held, it
    stays intact while its object is freed and new objects take the room the
    others gave back; the others' memory comes back as soon as they die, and
    each held one's when its last view does."""
    refs = [ray.put(big(i)) for i in range(8)]
    values = ray.get(refs)
    tail = values[2][10:]  # a numpy view: its base is what holds the pin
    exported = memoryview(values[5])  # a buffer export of the array
    whole = values[7]
    del values, refs
    gc.collect()
    wait_for_condition(lambda: store_stats()["num_objects"] == 3)
    # Same-sized objects take the five ranges given back, never a held one.
    fillers = [ray.put(big(200 + i)) for i in range(10)]
    assert [int(v[0]) for v in ray.get(fillers)] == [200 + i for i in range(10)]
    del fillers
    gc.collect()
    assert tail.size == LARGE - 10 and int(tail.sum()) == 2 * tail.size
    assert exported.nbytes == LARGE and bytes(exported) == bytes([5]) * LARGE
    assert int(whole.sum()) == 7 * LARGE
    wait_for_condition(lambda: store_stats()["num_objects"] == 3)
    del tail
    wait_for_condition(lambda: store_stats()["num_objects"] == 2)
    del exported
    wait_for_condition(lambda: store_stats()["num_objects"] == 1)
    assert int(whole[-1]) == 7
    del whole
    wait_for_baseline(warm)


def test_an_array_inside_a_stored_value_keeps_its_pin(warm):
    """A value pickle rebuilds (a dict of arrays) is read in place too: an
    array kept from it holds the object's memory after the dict and the ref
    are gone, intact while new objects come and go, until it dies."""
    ref = ray.put({"a": big(1), "b": big(2), "label": "x"})
    inner = ray.get(ref)["b"]
    del ref
    gc.collect()
    wait_for_condition(lambda: not list_objects(limit=10_000))
    assert store_stats()["num_objects"] == 1
    fillers = [ray.put(big(50 + i, 2 * LARGE)) for i in range(5)]
    del fillers
    gc.collect()
    assert inner.size == LARGE and int(inner.sum()) == 2 * LARGE
    with pytest.raises(ValueError):
        inner.flags.writeable = True  # read-only, as Ray's: never written in place
    del inner
    wait_for_baseline(warm)


class Unreadable:
    """A stored value (its payload is above the inline limit) that cannot be
    rebuilt where it is read."""

    def __init__(self):
        self.payload = bytes(LARGE)

    def __setstate__(self, state):
        raise ValueError("this value cannot be read")


def test_a_get_that_fails_part_way_lets_go_of_every_pin(warm):
    """A get of many stored values pins them all in one round trip; when one
    fails to deserialize, the ones read before it and the ones after it are
    all unpinned once the get has raised."""
    refs = [ray.put(big(1)), ray.put(Unreadable()), ray.put(big(3))]
    with pytest.raises(ValueError, match="cannot be read"):
        ray.get(refs)
    assert int(ray.get(refs[2])[0]) == 3
    del refs
    wait_for_baseline(warm)


def test_task_returns_are_freed(warm):
    @ray.remote(num_returns=2)
    def two(i):
        return i, big(i)

    @ray.remote
    def consume(array):
        return int(array[0])

    pairs = [two.remote(i) for i in range(10)]
    assert [ray.get(small) for small, _ in pairs] == list(range(10))
    # Large returns passed on to other tasks as arguments.
    assert ray.get([consume.remote(large) for _, large in pairs]) == list(range(10))
    # A large argument by value travels through the store, and is freed too.
    assert ray.get(consume.remote(big(9, 4 * LARGE))) == 9
    assert store_stats()["num_objects"] >= 10
    del pairs
    wait_for_baseline(warm)


def test_nested_refs_are_freed(warm):
    inner_small = ray.put("inner")
    inner_large = ray.put(big(5))
    outer_list = ray.put([inner_small, inner_large])
    outer_dict = ray.put({"a": inner_large, "b": [inner_small, {"c": inner_large}]})
    outer_outer = ray.put([outer_list, outer_dict])
    expected = summarize(ray.get(outer_outer))
    assert expected == [
        ("ref", [("ref", "inner"), ("ref", ("array", LARGE, 5, 5 * LARGE))]),
        (
            "ref",
            {
                "a": ("ref", ("array", LARGE, 5, 5 * LARGE)),
                "b": [("ref", "inner"), {"c": ("ref", ("array", LARGE, 5, 5 * LARGE))}],
            },
        ),
    ]
    # Drop the inner refs first: the outer objects keep them.
    del inner_small, inner_large, outer_list, outer_dict
    gc.collect()
    assert summarize(outer_outer) == ("ref", expected)
    assert ray.get(summarize_task.remote(outer_outer)) == expected
    assert ray.get(summarize_task.remote([outer_outer])) == [("ref", expected)]
    assert store_stats()["num_objects"] == 1
    del outer_outer
    wait_for_baseline(warm)

    # The other order: the outer goes first, the inner refs are still ours.
    inner = ray.put(big(6))
    outer = ray.put({"x": [inner]})
    del outer
    gc.collect()
    wait_for_condition(lambda: len(list_objects(limit=10_000)) == 1)
    assert int(ray.get(inner)[0]) == 6
    del inner
    wait_for_baseline(warm)


def test_streaming_generator_outputs_are_freed(warm):
    @ray.remote
    def produce(n):
        for i in range(n):
            yield big(i) if i % 2 else i

    # Read everything.
    gen = produce.remote(6)
    values = [ray.get(ref, timeout=GET_TIMEOUT_S) for ref in gen]
    assert [summarize(v) for v in values] == [summarize(big(i)) if i % 2 else i for i in range(6)]
    del values, gen
    wait_for_baseline(warm)

    # Read some, keep one, drop the generator: the unread ones go at once,
    # the kept one when its ref does.
    gen = produce.remote(8)
    first, second = next(gen), next(gen)
    assert ray.get(first, timeout=GET_TIMEOUT_S) == 0
    del first
    wait_for_condition(lambda: store_stats()["num_objects"] >= 4)  # the producer ran ahead
    del gen
    gc.collect()
    assert int(ray.get(second, timeout=GET_TIMEOUT_S)[0]) == 1
    wait_for_condition(
        lambda: store_stats()["num_objects"] == 1,
        message=lambda: f"unread items not freed: {store_stats()}",
    )
    del second
    wait_for_baseline(warm)


def test_dynamic_generator_outputs_are_freed(warm):
    @ray.remote(num_returns="dynamic")
    def produce(n):
        for i in range(n):
            yield big(i)

    refs = list(ray.get(produce.remote(4), timeout=GET_TIMEOUT_S))
    assert [int(ray.get(r)[0]) for r in refs] == [0, 1, 2, 3]
    del refs
    wait_for_baseline(warm)


def test_a_ref_stored_in_an_actor(warm):
    holder = Holder.remote()
    small, large = ray.put("kept by the actor"), ray.put(big(7))
    assert ray.get(holder.store.remote("k", [small, large]))
    # The actor is a registered borrower.
    large_hex = large.hex()
    wait_for_condition(
        lambda: any(
            row["borrowers"]
            for row in list_objects(filters=[("object_id", "=", large_hex)])
            if row["is_owner"]
        )
    )
    del small, large
    gc.collect()
    # The owner (the driver) dropped its refs; the actor still reads them.
    assert ray.get(holder.read.remote("k"), timeout=GET_TIMEOUT_S) == [
        "kept by the actor",
        summarize(big(7)),
    ]
    assert store_stats()["num_objects"] == 1
    # Still listed: owned by the driver, borrowed by the actor.
    rows = list_objects(limit=10_000)
    assert {row["type"] for row in rows} == {"DRIVER", "WORKER"}
    assert ray.get(holder.drop.remote("k"))
    wait_for_baseline(warm)
    del holder
    wait_for_baseline(warm)


def test_a_ref_passed_between_actors_and_tasks(warm):
    a, b = Holder.remote(), Holder.remote()
    ref = ray.put(big(8))

    @ray.remote
    def forward(box, actor):
        return ray.get(actor.store.remote("fwd", box))

    assert ray.get(a.store.remote("k", [ref]))
    assert ray.get(forward.remote([ref], b))
    del ref
    gc.collect()
    for actor in (a, b):
        assert ray.get(actor.read.remote("k" if actor is a else "fwd")) == [summarize(big(8))]
    assert ray.get(a.drop.remote("k"))
    assert ray.get(b.read.remote("fwd")) == [summarize(big(8))]
    assert store_stats()["num_objects"] == 1
    assert ray.get(b.drop.remote("fwd"))
    wait_for_baseline(warm)
    del a, b
    wait_for_baseline(warm)


def test_refs_made_by_a_task_with_put(warm):
    """A task that puts values and returns their refs owns them: they live
    while the caller holds the refs, and leave the store when it drops them."""

    @ray.remote
    def make(n):
        return [ray.put(big(i)) for i in range(n)] + [ray.put("small")]

    refs = ray.get(make.remote(3), timeout=GET_TIMEOUT_S)
    owner_rows = [row for row in listed(refs[0]) if row["is_owner"]]
    assert len(owner_rows) == 1 and owner_rows[0]["type"] == "WORKER"
    assert [int(ray.get(r)[0]) for r in refs[:3]] == [0, 1, 2]
    assert ray.get(refs[3]) == "small"
    assert ray.get(summarize_task.remote(refs)) == [
        ("ref", summarize(big(0))),
        ("ref", summarize(big(1))),
        ("ref", summarize(big(2))),
        ("ref", "small"),
    ]
    assert store_stats()["num_objects"] == 3
    del refs
    wait_for_baseline(warm)

    # Also a ref that is the whole return value.
    @ray.remote
    def make_one():
        return ray.put(big(4))

    ref = ray.get(make_one.remote(), timeout=GET_TIMEOUT_S)
    assert int(ray.get(ref, timeout=GET_TIMEOUT_S)[0]) == 4
    del ref
    wait_for_baseline(warm)


@ray.remote
def put_in_task(value):
    return [ray.put(value)]


@ray.remote
def put_in_worker(value):
    """A value the worker running this owns, returned inside a list."""
    return [ray.put(value)], os.getpid()


def test_an_idle_worker_owning_objects_is_kept(warm, tmp_path):
    """Idle workers beyond the pool size are stopped after a while, but not
    one that owns objects someone still references: they would be lost."""
    go = tmp_path / "go"
    holder = Holder.remote()  # a third worker: the pool is now above its size
    assert ray.get(holder.pid.remote()) != os.getpid()

    @ray.remote
    def wait_then_pid(go):
        wait_for_file(go)
        return os.getpid()

    blocked = wait_then_pid.remote(str(go))
    box, owner_pid = ray.get(put_in_worker.remote(big(21)), timeout=GET_TIMEOUT_S)
    go.touch()
    other_pid = ray.get(blocked, timeout=GET_TIMEOUT_S)
    assert other_pid != owner_pid
    # The other worker went idle later, so by the time it is stopped the
    # owner has been considered too.
    wait_for_condition(
        lambda: not psutil.pid_exists(other_pid),
        timeout=40,
        message="the idle worker was never stopped",
    )
    assert psutil.pid_exists(owner_pid)
    assert summarize(ray.get(box[0], timeout=GET_TIMEOUT_S)) == summarize(big(21))
    del box, blocked
    wait_for_baseline(warm)


def test_results_dropped_before_they_arrive(warm):
    """Calls return refs owned by another process inside lists, and the driver
    drops the results at once, while it keeps submitting: its registration as
    their borrower and its unregistration must reach the owner in order, or
    the owner keeps counting a borrower that is gone."""
    maker = Holder.remote()
    assert ray.get(maker.pid.remote())
    results = []
    for i in range(400):
        maker.make.remote(i)  # [ref owned by the actor], dropped at once
        if i % 4 == 0:
            put_in_task.remote(i)  # the same with a worker as the owner
        results.append(identity.remote(i))  # keeps the driver submitting
        if i % 20 == 19:
            assert ray.get(results, timeout=GET_TIMEOUT_S) == list(range(i - 19, i + 1))
            results.clear()
    assert ray.get(maker.pid.remote(), timeout=GET_TIMEOUT_S)
    wait_for_baseline(warm)
    del maker
    wait_for_baseline(warm)


# -- nothing reachable is freed ------------------------------------------------


def test_a_worker_keeps_a_borrowed_ref_after_the_owner_dropped_it(warm, tmp_path):
    go = tmp_path / "go"

    @ray.remote
    def hold_then_read(box, go):
        wait_for_file(go)
        gc.collect()
        return summarize(ray.get(box[0], timeout=GET_TIMEOUT_S))

    ref = ray.put(big(11))
    result = hold_then_read.remote([ref], str(go))
    del ref
    gc.collect()
    go.touch()
    assert ray.get(result, timeout=GET_TIMEOUT_S) == summarize(big(11))
    del result
    wait_for_baseline(warm)


def test_a_ref_nested_in_an_argument_lives_while_the_task_runs(warm, tmp_path):
    """The driver drops the ref right after submitting; the task reads it
    later, and only then is it freed."""
    go = tmp_path / "go"

    @ray.remote
    def read_later(box, go):
        wait_for_file(go)
        return [summarize(ray.get(r, timeout=GET_TIMEOUT_S)) for r in box["refs"]]

    small, large = ray.put("small"), ray.put(big(12))
    result = read_later.remote({"refs": [small, large]}, str(go))
    del small, large
    gc.collect()
    assert store_stats()["num_objects"] == 1
    go.touch()
    assert ray.get(result, timeout=GET_TIMEOUT_S) == ["small", summarize(big(12))]
    del result
    wait_for_baseline(warm)


def test_an_inner_ref_lives_while_its_outer_object_does(warm):
    inner = ray.put(big(13))
    outer = ray.put([inner])
    del inner
    gc.collect()
    # Nothing freed: the outer value holds the inner ref.
    assert store_stats()["num_objects"] == 1
    (got,) = ray.get(outer)
    assert int(ray.get(got)[0]) == 13
    del got
    assert ray.get(summarize_task.remote(outer)) == [("ref", summarize(big(13)))]
    del outer
    wait_for_baseline(warm)


class Dropping:
    """Unpickles to a marker, dropping the ref it was pickled with (user
    code letting go of a ref while a value is being read)."""

    def __init__(self, ref):
        self.ref = ref

    def __reduce__(self):
        return (_dropped_marker, (self.ref,))


def _dropped_marker(ref):
    return "dropped"


class Reading:
    """Unpickles to the value of its ref: a get inside another get's read."""

    def __init__(self, ref):
        self.ref = ref

    def __reduce__(self):
        return (_read_marker, (self.ref,))


def _read_marker(ref):
    return ("read", ray.get(ref, timeout=GET_TIMEOUT_S))


def test_every_ref_a_read_makes_is_counted(warm):
    """The refs one get deserializes are counted together once it is done:
    each instance of a ref repeated in the value counts, one that user code
    drops while unpickling does not take another's count, and a get made
    while unpickling counts its own."""
    target = ray.put(big(21))
    inner = ray.put(big(22))
    # (Copies: pickle writes an instance repeated in a value once.)
    outer = ray.put(
        [target, Dropping(copy(target)), Reading(inner), copy(target), [inner, copy(inner)]]
    )
    del target, inner
    gc.collect()
    got = ray.get(outer, timeout=GET_TIMEOUT_S)
    del outer
    assert got[1] == "dropped"
    assert got[2][0] == "read" and int(got[2][1][0]) == 22
    first_target, second_target, (first_inner, second_inner) = got[0], got[3], got[4]
    del got
    gc.collect()
    # Each instance left keeps its object on its own.
    del first_target
    gc.collect()
    assert int(ray.get(second_target, timeout=GET_TIMEOUT_S)[0]) == 21
    del first_inner
    gc.collect()
    assert int(ray.get(second_inner, timeout=GET_TIMEOUT_S)[0]) == 22
    del second_target, second_inner
    wait_for_baseline(warm)


def test_refs_captured_in_a_closure_live_while_the_function_does(warm):
    def make():
        small, large = ray.put("captured"), ray.put(big(14))

        @ray.remote
        def read_captured():
            return ray.get(small), summarize(ray.get(large))

        return read_captured

    read_captured = make()
    gc.collect()
    assert ray.get(read_captured.remote(), timeout=GET_TIMEOUT_S) == (
        "captured",
        summarize(big(14)),
    )
    assert store_stats()["num_objects"] == 1
    assert ray.get(read_captured.remote(), timeout=GET_TIMEOUT_S)[0] == "captured"
    # The driver's only hold on them is the function: they are listed as
    # owned by the driver with no local ref of its own besides the function's.
    rows = [row for row in list_objects(limit=10_000) if row["type"] == "DRIVER"]
    assert len(rows) == 2 and all(row["is_owner"] for row in rows)
    # Not asserted: freeing after the function is dropped. Workers cache the
    # function they ran, closure included, so they keep borrowing the captured
    # refs for their lifetime (as Ray pins refs serialized out of band).


def test_a_task_return_held_by_a_pending_task(warm, tmp_path):
    """A task's return passed on to a second task is kept until the second
    one ran, even though the driver dropped it at once."""
    go = tmp_path / "go"

    @ray.remote
    def produce(go):
        wait_for_file(go)
        return big(15)

    @ray.remote
    def consume(array):
        return summarize(array)

    produced = produce.remote(str(go))
    result = consume.remote(produced)
    del produced
    gc.collect()
    go.touch()
    assert ray.get(result, timeout=GET_TIMEOUT_S) == summarize(big(15))
    del result
    wait_for_baseline(warm)


# -- randomized stress -----------------------------------------------------------


@pytest.mark.timeout(120)
def test_randomized_ref_passing(warm):
    """Chains of tasks and actors pass refs around in random ways while the
    driver drops its refs in random order. Every ref still held must read
    back its value; at the end everything is freed."""
    rng = random.Random(20240607)
    actors = [Holder.remote() for _ in range(2)]
    live: list[tuple] = []  # (ref, expected summary of ray.get(ref))
    in_actors: dict[str, tuple] = {}  # key -> (actor index, expected read)
    counter = iter(range(1_000_000))

    def new_value():
        n = next(counter)
        return big(n) if rng.random() < 0.4 else {"n": n, "s": "x" * rng.randrange(50)}

    def pick(k=1):
        return rng.sample(live, min(k, len(live)))

    def op_put():
        value = new_value()
        live.append((ray.put(value), summarize(value)))

    def op_task_return():
        value = new_value()
        live.append((identity.remote(value), summarize(value)))

    def op_task_top_level():
        (ref, expected), *_ = pick()
        live.append((identity.remote(ref), expected))

    def op_nest_in_put():
        chosen = pick(rng.randint(1, 3))
        live.append((ray.put([r for r, _ in chosen]), [("ref", e) for _, e in chosen]))

    def op_nest_in_dict():
        chosen = pick(2)
        value = {f"k{i}": [r] for i, (r, _) in enumerate(chosen)}
        expected = {f"k{i}": [("ref", e)] for i, (_, e) in enumerate(chosen)}
        live.append((ray.put(value), expected))

    def op_returned_in_list():
        chosen = pick(rng.randint(1, 3))
        live.append((identity.remote([r for r, _ in chosen]), [("ref", e) for _, e in chosen]))

    def op_chain():
        # A ref through a chain of tasks, nested each time.
        (ref, expected), *_ = pick()
        out, out_expected = ref, expected
        for _ in range(rng.randint(1, 3)):
            out, out_expected = identity.remote([out]), [("ref", out_expected)]
        live.append((out, out_expected))

    def op_actor_store():
        chosen = pick(rng.randint(1, 2))
        key = f"key{next(counter)}"
        index = rng.randrange(len(actors))
        actors[index].store.remote(key, [r for r, _ in chosen])
        in_actors[key] = (index, [e for _, e in chosen])

    def op_actor_read():
        if in_actors:
            key = rng.choice(sorted(in_actors))
            index, expected = in_actors[key]
            assert ray.get(actors[index].read.remote(key), timeout=GET_TIMEOUT_S) == expected

    def op_actor_drop():
        if in_actors:
            key = rng.choice(sorted(in_actors))
            index, _ = in_actors.pop(key)
            actors[index].drop.remote(key)

    def op_actor_owned():
        value = new_value()
        actor = rng.choice(actors)
        live.append((actor.make.remote(value), [("ref", summarize(value))]))

    def op_worker_owned():
        value = new_value()
        live.append((put_in_task.remote(value), [("ref", summarize(value))]))

    def op_fire_and_forget():
        # Results dropped before they exist, holding refs nobody reads.
        chosen = pick(2)
        identity.remote([r for r, _ in chosen])
        rng.choice(actors).store.remote("scratch", [r for r, _ in chosen])

    def op_drop():
        for _ in range(rng.randint(1, 3)):
            if live:
                live.pop(rng.randrange(len(live)))

    def op_check():
        (ref, expected), *_ = pick()
        how = rng.randrange(3)
        if how == 0:
            got = summarize(ray.get(ref, timeout=GET_TIMEOUT_S))
        elif how == 1:
            got = ray.get(summarize_task.remote(ref), timeout=GET_TIMEOUT_S)
        else:
            got = ray.get(summarize_task.remote([ref]), timeout=GET_TIMEOUT_S)[0][1]
        assert got == expected, (ref, got, expected)

    ops = [
        (op_put, 4),
        (op_task_return, 3),
        (op_task_top_level, 2),
        (op_nest_in_put, 3),
        (op_nest_in_dict, 1),
        (op_returned_in_list, 2),
        (op_chain, 1),
        (op_actor_store, 2),
        (op_actor_read, 2),
        (op_actor_drop, 1),
        (op_actor_owned, 2),
        (op_worker_owned, 2),
        (op_fire_and_forget, 1),
        (op_drop, 6),
        (op_check, 5),
    ]
    functions, weights = zip(*ops, strict=True)
    for _ in range(5):
        op_put()
    for _step in range(3500):
        if len(live) < 3:
            op_put()
        rng.choices(functions, weights)[0]()
        if len(live) > 40:
            op_drop()

    # Everything still held reads back right, then all of it goes.
    for ref, expected in live:
        assert summarize(ray.get(ref, timeout=GET_TIMEOUT_S)) == expected
    for key, (index, expected) in in_actors.items():
        assert ray.get(actors[index].read.remote(key), timeout=GET_TIMEOUT_S) == expected
    rng.shuffle(live)
    while live:
        live.pop()
    del ref, expected
    in_actors.clear()
    actors.clear()
    wait_for_baseline(warm, timeout=30)
