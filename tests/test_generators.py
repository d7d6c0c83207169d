"""Generator tasks on a real local cluster: what a Ray user sees.

Static `num_returns=N` generators (values stored one at a time, too few or
too many values, an exception part way), `num_returns="dynamic"` (seed 003),
and streaming generators, the default for generator functions: items reach
the caller while the task runs, sync and async iteration, actor methods,
`ray.wait` on a generator, errors, backpressure, and freeing what the caller
never read. `import solray as ray` stands in for `import ray`.

Producers and consumers coordinate through marker files: a task that must not
get ahead waits for a file the test creates once it has seen what it needed.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import weakref

import numpy as np
import pytest
from conftest import wait_for_condition, wait_for_file

import solray as ray
from solray._private import context
from solray._private.protocol import Msg

GET_TIMEOUT_S = 60


class MyError(Exception):
    """A user exception raised by generators."""


def write_atomically(path, text: str) -> None:
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_int(path: pathlib.Path) -> int:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return 0


def store_stats() -> dict:
    return context.core_worker.request("node", Msg.STORE_STATS, None)


def never_within(predicate, timeout: float) -> None:
    """Polls `predicate` for `timeout` seconds and fails if it ever holds."""
    with pytest.raises(AssertionError, match="condition not met"):
        wait_for_condition(predicate, timeout=timeout)


# -- static num_returns ---------------------------------------------------------


def test_static_generator_stores_values_one_at_a_time(ray_start):
    """Each yielded value is stored and let go before the next one is made:
    a weakref to every array shows which are still alive in the worker while
    it makes the next. The last value reports what it saw."""
    size = 40 * 1024 * 1024

    @ray.remote(num_returns=4)
    def large_values_generator():
        arrays = []
        alive = []
        for i in range(3):
            alive.append([r() is not None for r in arrays])
            array = np.full(size, i, dtype=np.uint8)
            arrays.append(weakref.ref(array))
            yield array
            del array
        alive.append([r() is not None for r in arrays])
        yield alive

    *refs, report = large_values_generator.remote()
    alive = ray.get(report, timeout=GET_TIMEOUT_S)
    # When making value i, none of the values before it is still held.
    assert alive == [[], [False], [False, False], [False, False, False]]
    for i, ref in enumerate(refs):
        value = ray.get(ref, timeout=GET_TIMEOUT_S)
        assert value.shape == (size,) and value[0] == i and value[-1] == i
        del value


def test_static_generator_yielding_too_few_values(ray_start):
    @ray.remote
    def generator(n):
        yield from range(n)

    refs = generator.options(num_returns=4).remote(2)
    assert ray.get(refs[:2], timeout=GET_TIMEOUT_S) == [0, 1]
    for ref in refs[2:]:
        with pytest.raises(ValueError, match=r"yielded 2 value\(s\)") as info:
            ray.get(ref, timeout=GET_TIMEOUT_S)
        assert isinstance(info.value, ray.exceptions.RayTaskError)
        assert "num_returns=4" in str(info.value)


def test_static_generator_yielding_too_many_values(ray_start):
    """Ray only logs this (ray-project/ray#28689); solray makes `get` raise."""

    @ray.remote
    def generator():
        for i in range(2):  # noqa: UP028 (the seed's code)
            yield i
        raise Exception("error")

    ref = generator.options(num_returns=1).remote()
    with pytest.raises(ValueError, match="more values than its num_returns=1"):
        ray.get(ref, timeout=GET_TIMEOUT_S)

    @ray.remote
    def three():
        yield from (np.zeros(200_000), 1, 2)  # the first one goes to the store

    before = store_stats()["num_objects"]
    ref1, ref2 = three.options(num_returns=2).remote()
    for ref in (ref1, ref2):
        with pytest.raises(ValueError, match="more values than its num_returns=2"):
            ray.get(ref, timeout=GET_TIMEOUT_S)
    # The value it had stored before the extra one is not left in the store.
    wait_for_condition(lambda: store_stats()["num_objects"] == before)


def test_static_generator_exception_after_some_values(ray_start):
    # Seed 003, "Exception handling".
    @ray.remote
    def generator():
        for i in range(2):  # noqa: UP028 (the seed's code)
            yield i
        raise MyError("error")

    ref1, ref2, ref3, ref4 = generator.options(num_returns=4).remote()
    assert ray.get([ref1, ref2], timeout=GET_TIMEOUT_S) == [0, 1]
    # All remaining ObjectRefs will contain the error.
    for ref in (ref3, ref4):
        with pytest.raises(MyError, match="error") as info:
            ray.get(ref, timeout=GET_TIMEOUT_S)
        assert isinstance(info.value, ray.exceptions.RayTaskError)
    with pytest.raises(MyError):
        ray.get([ref1, ref2, ref3, ref4], timeout=GET_TIMEOUT_S)


# -- num_returns="dynamic" --------------------------------------------------------


def test_dynamic_generator_seed_split(ray_start):
    """Seed 003: `split` returns a dynamic number of blocks; the ref, and the
    generator it resolves to, can both be passed to another task."""

    @ray.remote(num_returns="dynamic")
    def split(array, chunk_size):
        while len(array) > 0:
            yield array[:chunk_size]
            array = array[chunk_size:]

    array_ref = ray.put(np.zeros(63_153))
    block_size = 1000

    # Returns an ObjectRef[DynamicObjectRefGenerator].
    dynamic_ref = split.remote(array_ref, block_size)
    assert isinstance(dynamic_ref, ray.ObjectRef)

    i = -1
    ref_generator = ray.get(dynamic_ref, timeout=GET_TIMEOUT_S)
    assert isinstance(ref_generator, ray.DynamicObjectRefGenerator)
    for i, ref in enumerate(ref_generator):  # noqa: B007 (the seed's code)
        # Each DynamicObjectRefGenerator iteration returns an ObjectRef.
        assert isinstance(ref, ray.ObjectRef)
        assert len(ray.get(ref, timeout=GET_TIMEOUT_S)) <= block_size
    num_blocks_generated = i + 1
    array_size = len(ray.get(array_ref))
    assert array_size <= num_blocks_generated * block_size
    assert num_blocks_generated == 64
    del dynamic_ref, ref_generator, ref

    @ray.remote
    def get_size(ref_generator):
        assert isinstance(ref_generator, ray.DynamicObjectRefGenerator)
        num_elements = 0
        for ref in ref_generator:
            array = ray.get(ref)
            assert len(array) <= block_size
            num_elements += len(array)
        return num_elements

    # Returns an ObjectRef[DynamicObjectRefGenerator].
    dynamic_ref = split.remote(array_ref, block_size)
    assert array_size == ray.get(get_size.remote(dynamic_ref), timeout=GET_TIMEOUT_S)

    # This also works, but should be avoided because you have to call an
    # additional `ray.get`, which blocks the driver.
    ref_generator = ray.get(dynamic_ref, timeout=GET_TIMEOUT_S)
    assert array_size == ray.get(get_size.remote(ref_generator), timeout=GET_TIMEOUT_S)


def test_dynamic_generator_exception_is_an_extra_final_ref(ray_start):
    # Seed 003, "Exception handling", num_returns="dynamic".
    @ray.remote
    def generator():
        for i in range(2):  # noqa: UP028 (the seed's code)
            yield i
        raise MyError("error")

    dynamic_ref = generator.options(num_returns="dynamic").remote()
    ref_generator = ray.get(dynamic_ref, timeout=GET_TIMEOUT_S)
    assert len(ref_generator) == 3
    ref1, ref2, ref3 = ref_generator
    assert ray.get([ref1, ref2], timeout=GET_TIMEOUT_S) == [0, 1]
    # Generators with num_returns="dynamic" store the exception in the final ObjectRef.
    with pytest.raises(MyError, match="error"):
        ray.get(ref3, timeout=GET_TIMEOUT_S)


def test_dynamic_generator_with_no_values(ray_start):
    @ray.remote(num_returns="dynamic")
    def nothing():
        yield from ()

    assert list(ray.get(nothing.remote(), timeout=GET_TIMEOUT_S)) == []


def test_seed_task_with_dynamic_returns_good(ray_start):
    # Seed 000: the generator alternative to returning ray.put() refs.
    @ray.remote(num_returns=1)
    def task_with_dynamic_returns_bad(n):
        return_value_refs = []
        for i in range(n):
            return_value_refs.append(ray.put(np.zeros(i * 1024 * 1024)))
        return return_value_refs

    @ray.remote(num_returns="dynamic")
    def task_with_dynamic_returns_good(n):
        for i in range(n):
            yield np.zeros(i * 1024 * 1024)

    assert np.array_equal(
        ray.get(ray.get(task_with_dynamic_returns_bad.remote(2))[0]),
        ray.get(next(iter(ray.get(task_with_dynamic_returns_good.remote(2))))),
    )
    values = [ray.get(ref) for ref in ray.get(task_with_dynamic_returns_good.remote(3))]
    assert [v.shape for v in values] == [(0,), (1024 * 1024,), (2 * 1024 * 1024,)]


# -- streaming generators -------------------------------------------------------


def test_streaming_items_reach_the_caller_while_the_task_runs(ray_start, tmp_path):
    """The producer yields one item, then waits for a file the test creates
    only once it has received that item: the task cannot finish first."""
    seen = tmp_path / "seen-first"

    @ray.remote
    def producer(marker):
        yield "first"
        wait_for_file(marker)
        yield "second"

    gen = producer.remote(str(seen))
    # Generator functions stream by default; .remote() returns at once.
    assert isinstance(gen, ray.ObjectRefGenerator)
    ref = next(gen)
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref, timeout=GET_TIMEOUT_S) == "first"
    seen.touch()
    assert ray.get(next(gen), timeout=GET_TIMEOUT_S) == "second"
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(StopIteration):  # and it stays over
        next(gen)
    assert gen.completed()


def test_streaming_option_and_for_loop(ray_start):
    @ray.remote(num_returns="streaming")
    def count(n):
        for i in range(n):
            yield i * 10

    gen = count.remote(5)
    assert isinstance(gen, ray.ObjectRefGenerator)
    assert [ray.get(ref) for ref in gen] == [0, 10, 20, 30, 40]

    @ray.remote
    def plain(n):
        yield from range(n)

    # The option overrides a function's default, in both directions.
    gen = plain.options(num_returns="streaming").remote(3)
    assert [ray.get(ref) for ref in gen] == [0, 1, 2]
    ref_a, ref_b = plain.options(num_returns=2).remote(2)
    assert ray.get([ref_a, ref_b]) == [0, 1]

    # Large values stream through the object store.
    @ray.remote
    def arrays(n):
        for i in range(n):
            yield np.full(300_000, i, dtype=np.int64)

    assert [int(ray.get(ref)[-1]) for ref in arrays.remote(3)] == [0, 1, 2]


def test_streaming_async_iteration(ray_start, tmp_path):
    seen = tmp_path / "seen-first"

    @ray.remote
    def producer(marker, n):
        yield 0
        wait_for_file(marker)
        yield from range(1, n)

    async def consume():
        gen = producer.remote(str(seen), 4)
        first = await gen.__anext__()
        assert await first == 0
        seen.touch()
        rest = [await ref async for ref in gen]
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        return rest

    assert asyncio.run(consume()) == [1, 2, 3]


def test_streaming_actor_methods(ray_start, tmp_path):
    seen = tmp_path / "seen-first"

    @ray.remote
    class Producer:
        def sync_items(self, n, marker):
            yield "start"
            wait_for_file(marker)
            yield from range(n)

        def also_works(self):
            return "served"

    @ray.remote
    class AsyncProducer:
        def __init__(self):
            self.event = asyncio.Event()

        async def items(self, n):
            yield "start"
            await self.event.wait()  # set by another call: calls run concurrently
            for i in range(n):
                await asyncio.sleep(0)
                yield i

        async def release(self):
            self.event.set()

        async def failing(self):
            yield 1
            raise MyError("async boom")

    actor = Producer.remote()
    gen = actor.sync_items.remote(3, str(seen))
    assert isinstance(gen, ray.ObjectRefGenerator)
    assert ray.get(next(gen), timeout=GET_TIMEOUT_S) == "start"
    seen.touch()
    assert [ray.get(ref) for ref in gen] == [0, 1, 2]
    assert ray.get(actor.also_works.remote(), timeout=GET_TIMEOUT_S) == "served"

    async_actor = AsyncProducer.remote()
    gen = async_actor.items.remote(3)
    assert isinstance(gen, ray.ObjectRefGenerator)
    assert ray.get(next(gen), timeout=GET_TIMEOUT_S) == "start"
    ray.get(async_actor.release.remote(), timeout=GET_TIMEOUT_S)
    assert [ray.get(ref) for ref in gen] == [0, 1, 2]

    gen = async_actor.failing.remote()
    assert ray.get(next(gen), timeout=GET_TIMEOUT_S) == 1
    with pytest.raises(MyError, match="async boom"):
        next(gen)
    with pytest.raises(StopIteration):
        next(gen)

    async def consume_async():
        return [await ref async for ref in async_actor.items.remote(2)]

    # The event is already set: the second stream runs straight through.
    assert asyncio.run(consume_async()) == ["start", 0, 1]


def test_wait_on_a_streaming_generator(ray_start, tmp_path):
    go = tmp_path / "go"

    @ray.remote
    def producer(marker):
        wait_for_file(marker)
        yield "item"

    gen = producer.remote(str(go))
    # The producer cannot yield before the file exists: not ready.
    ready, not_ready = ray.wait([gen], timeout=0.5)
    assert ready == [] and not_ready == [gen]
    go.touch()
    ready, not_ready = ray.wait([gen], timeout=GET_TIMEOUT_S)
    assert ready == [gen] and not_ready == []
    assert ray.get(next(gen)) == "item"
    # The end of the stream also makes it ready; next() then stops.
    ready, _ = ray.wait([gen], timeout=GET_TIMEOUT_S)
    assert ready == [gen]
    with pytest.raises(StopIteration):
        next(gen)

    # Mixed with plain refs.
    @ray.remote
    def value():
        return 1

    go2 = tmp_path / "go2"
    gen = producer.remote(str(go2))
    ref = value.remote()
    ready, not_ready = ray.wait([gen, ref], num_returns=1, timeout=GET_TIMEOUT_S)
    assert ready == [ref] and not_ready == [gen]
    go2.touch()
    ready, not_ready = ray.wait([gen, ref], num_returns=2, timeout=GET_TIMEOUT_S)
    assert ready == [gen, ref]
    assert [ray.get(r) for r in gen] == ["item"]


def test_streaming_exception_ends_the_stream(ray_start):
    @ray.remote
    def generator():
        yield from range(2)
        raise MyError("stream failed")

    gen = generator.remote()
    assert ray.get(next(gen), timeout=GET_TIMEOUT_S) == 0
    assert ray.get(next(gen), timeout=GET_TIMEOUT_S) == 1
    with pytest.raises(MyError, match="stream failed") as info:
        next(gen)
    assert isinstance(info.value, ray.exceptions.RayTaskError)
    with pytest.raises(StopIteration):
        next(gen)

    # The same in a for loop: the values come first, then the error.
    received = []
    with pytest.raises(MyError):
        for ref in generator.remote():
            received.append(ray.get(ref))
    assert received == [0, 1]

    @ray.remote
    def fails_at_once():
        raise MyError("before any value")
        yield  # a generator function

    with pytest.raises(MyError, match="before any value"):
        next(fails_at_once.remote())


def test_streaming_backpressure_pauses_the_producer(ray_start, tmp_path):
    counter = tmp_path / "yielded"
    n = 10

    @ray.remote
    def producer(path, n):
        for i in range(n):
            write_atomically(path, str(i + 1))
            yield i

    gen = producer.options(_generator_backpressure_num_objects=2).remote(str(counter), n)
    wait_for_condition(lambda: read_int(counter) >= 2, message="the producer never started")
    # Nothing read yet: the producer waits after two unread items.
    never_within(lambda: read_int(counter) > 3, timeout=1.5)
    received = []
    for ref in gen:
        received.append(ray.get(ref))
        # It never gets far ahead of the consumer.
        assert read_int(counter) <= len(received) + 3
    assert received == list(range(n))
    assert read_int(counter) == n


def test_streaming_backpressure_for_actor_methods(ray_start, tmp_path):
    counter = tmp_path / "yielded"

    @ray.remote
    class Producer:
        def items(self, path, n):
            for i in range(n):
                write_atomically(path, str(i + 1))
                yield i

    actor = Producer.remote()
    gen = actor.items.options(_generator_backpressure_num_objects=1).remote(str(counter), 5)
    wait_for_condition(lambda: read_int(counter) >= 1, message="the producer never started")
    never_within(lambda: read_int(counter) > 2, timeout=1.0)
    assert [ray.get(ref) for ref in gen] == list(range(5))


@pytest.mark.parametrize("drop", ["after_the_end", "while_running"])
def test_dropping_a_streaming_generator_frees_unread_values(ray_start, tmp_path, drop):
    go = tmp_path / "go"
    item_size = 1024 * 1024  # > 100 KiB: the items live in the node's store
    n = 4

    done = tmp_path / "done"

    @ray.remote
    def producer(marker, wait, done):
        yield np.ones(item_size, dtype=np.uint8)
        if wait:
            wait_for_file(marker)
        for i in range(1, n):
            yield np.full(item_size, i, dtype=np.uint8)
        pathlib.Path(done).touch()  # every item is in the store by now

    before = store_stats()
    gen = producer.remote(str(go), drop == "while_running", str(done))
    first_ref = next(gen)
    first = ray.get(first_ref, timeout=GET_TIMEOUT_S)
    assert first.sum() == item_size
    if drop == "after_the_end":
        wait_for_condition(
            lambda: store_stats()["num_objects"] >= before["num_objects"] + n,
            message="the producer never stored all its items",
        )
        del gen
    else:
        del gen
        go.touch()  # the rest arrives after the caller let go
        wait_for_condition(done.exists, message="the producer never finished")
    # The item it read stays readable while it holds the ref.
    assert ray.get(first_ref).sum() == item_size
    del first, first_ref
    gc.collect()
    wait_for_condition(
        lambda: (
            store_stats()["num_objects"] == before["num_objects"]
            and store_stats()["used"] <= before["used"]
        ),
        message=lambda: f"unread items still in the store: {store_stats()} (before: {before})",
    )


def test_streaming_generator_retried_after_a_crash(ray_start, tmp_path):
    """The worker dies after the caller took two items; the retry produces
    the stream again and the caller gets each item once, in order."""
    took_two = tmp_path / "took-two"

    @ray.remote(max_retries=1)
    def producer(directory, marker):
        first_attempt = not os.path.exists(os.path.join(directory, "attempt-1"))
        pathlib.Path(directory, "attempt-1" if first_attempt else "attempt-2").touch()
        for i in range(4):
            yield i
            if first_attempt and i == 1:
                wait_for_file(marker)
                os._exit(1)

    gen = producer.remote(str(tmp_path), str(took_two))
    received = [ray.get(next(gen), timeout=GET_TIMEOUT_S) for _ in range(2)]
    took_two.touch()
    received += [ray.get(ref, timeout=GET_TIMEOUT_S) for ref in gen]
    assert received == [0, 1, 2, 3]
    assert (tmp_path / "attempt-2").exists()

    # Without retries left, the stream ends with WorkerCrashedError.
    took_two.unlink()
    for name in ("attempt-1", "attempt-2"):
        (tmp_path / name).unlink()
    gen = producer.options(max_retries=0).remote(str(tmp_path), str(took_two))
    assert [ray.get(next(gen), timeout=GET_TIMEOUT_S) for _ in range(2)] == [0, 1]
    took_two.touch()
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        next(gen)
    with pytest.raises(StopIteration):
        next(gen)


def test_streaming_generator_cannot_be_passed_to_a_task(ray_start):
    @ray.remote
    def generator():
        yield 1

    @ray.remote
    def consume(gen):
        return gen

    gen = generator.remote()
    with pytest.raises(TypeError, match="ObjectRefGenerator"):
        consume.remote(gen)
    assert [ray.get(ref) for ref in gen] == [1]
