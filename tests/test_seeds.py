"""The seed documents' task and object examples (/work/shared/seeds/), run on solray.

Each test is one example from the Ray docs the project was built from, with its
code and assertions kept as close to the docs as possible; only sizes and sleeps
are shrunk so the module runs quickly. `import solray as ray` stands in for
`import ray`. Examples about actors, generators, cancellation and task events
are covered elsewhere.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from conftest import DriverOutput, barrier

import solray as ray

# --------------------------------------------------------------------------
# Seed 000/001: Anti-pattern: returning ray.put() ObjectRefs from a task.
# --------------------------------------------------------------------------


def test_return_single_small_value(ray_start):
    @ray.remote
    def task_with_single_small_return_value_bad():
        small_return_value = 1
        # The value will be stored in the object store
        # and the reference is returned to the caller.
        small_return_value_ref = ray.put(small_return_value)
        return small_return_value_ref

    @ray.remote
    def task_with_single_small_return_value_good():
        small_return_value = 1
        # Ray will return the value inline to the caller
        # which is faster than the previous approach.
        return small_return_value

    assert ray.get(ray.get(task_with_single_small_return_value_bad.remote())) == ray.get(
        task_with_single_small_return_value_good.remote()
    )


def test_return_single_large_value(ray_start):
    @ray.remote
    def task_with_single_large_return_value_bad():
        large_return_value = np.zeros(10 * 1024 * 1024)
        large_return_value_ref = ray.put(large_return_value)
        return large_return_value_ref

    @ray.remote
    def task_with_single_large_return_value_good():
        # Both approaches will store the large array to the object store
        # but this is better since it's faster and more fault tolerant.
        large_return_value = np.zeros(10 * 1024 * 1024)
        return large_return_value

    assert np.array_equal(
        ray.get(ray.get(task_with_single_large_return_value_bad.remote())),
        ray.get(task_with_single_large_return_value_good.remote()),
    )


def test_return_static_multiple_values(ray_start):
    # This will return a single object
    # which is a tuple of two ObjectRefs to the actual values.
    @ray.remote(num_returns=1)
    def task_with_static_multiple_returns_bad1():
        return_value_1_ref = ray.put(1)
        return_value_2_ref = ray.put(2)
        return (return_value_1_ref, return_value_2_ref)

    # This will return two objects each of which is an ObjectRef to the actual value.
    @ray.remote(num_returns=2)
    def task_with_static_multiple_returns_bad2():
        return_value_1_ref = ray.put(1)
        return_value_2_ref = ray.put(2)
        return (return_value_1_ref, return_value_2_ref)

    # This will return two objects each of which is the actual value.
    @ray.remote(num_returns=2)
    def task_with_static_multiple_returns_good():
        return_value_1 = 1
        return_value_2 = 2
        return (return_value_1, return_value_2)

    assert (
        ray.get(ray.get(task_with_static_multiple_returns_bad1.remote())[0])
        == ray.get(ray.get(task_with_static_multiple_returns_bad2.remote()[0]))
        == ray.get(task_with_static_multiple_returns_good.remote()[0])
    )


def test_return_dynamic_multiple_values_bad(ray_start):
    # The anti-pattern half of the "dynamic returns" example; its generator
    # counterpart (num_returns="dynamic") is not part of this module.
    @ray.remote(num_returns=1)
    def task_with_dynamic_returns_bad(n):
        return_value_refs = []
        for i in range(n):
            return_value_refs.append(ray.put(np.zeros(i * 1024 * 1024)))
        return return_value_refs

    refs = ray.get(task_with_dynamic_returns_bad.remote(2))
    assert np.array_equal(ray.get(refs[0]), np.zeros(0))
    assert np.array_equal(ray.get(refs[1]), np.zeros(1024 * 1024))


# --------------------------------------------------------------------------
# Seed 002: Objects.
# --------------------------------------------------------------------------


def test_put(ray_start):
    # Put an object in Ray's object store.
    y = 1
    object_ref = ray.put(y)
    assert ray.get(object_ref) == 1


def test_get(ray_start):
    # Get the value of one object ref.
    obj_ref = ray.put(1)
    assert ray.get(obj_ref) == 1

    # Get the values of multiple object refs in parallel.
    assert ray.get([ray.put(i) for i in range(3)]) == [0, 1, 2]


def test_get_timeout(ray_start, capsys):
    # You can also set a timeout to return early from a ``get``
    # that's blocking for too long.
    from solray.exceptions import GetTimeoutError

    @ray.remote
    def long_running_function():
        time.sleep(3)

    obj_ref = long_running_function.remote()
    try:
        ray.get(obj_ref, timeout=0.5)
    except GetTimeoutError:
        print("`get` timed out.")

    assert "`get` timed out." in capsys.readouterr().out


def test_pass_object_as_top_level_argument(ray_start, capfd):
    output = DriverOutput(capfd)

    @ray.remote
    def echo(a: int, b: int, c: int):
        """This function prints its input values to stdout."""
        print(a, b, c)

    # Passing the literal values (1, 2, 3) to `echo`.
    echo.remote(1, 2, 3)
    # -> prints "1 2 3"
    output.wait_for_lines(r"\(echo pid=\d+\) 1 2 3", count=1)

    # Put the values (1, 2, 3) into Ray's object store.
    a, b, c = ray.put(1), ray.put(2), ray.put(3)

    # Passing an object as a top-level argument to `echo`. Ray will de-reference top-level
    # arguments, so `echo` will see the literal values (1, 2, 3) in this case as well.
    echo.remote(a, b, c)
    # -> prints "1 2 3"
    output.wait_for_lines(r"\(echo pid=\d+\) 1 2 3", count=2)


def test_pass_object_as_nested_argument(ray_start, capfd):
    output = DriverOutput(capfd)

    @ray.remote
    def echo_and_get(x_list):  # List[ObjectRef]
        """This function prints its input values to stdout."""
        print("args:", x_list)
        print("values:", ray.get(x_list))

    # Put the values (1, 2, 3) into Ray's object store.
    a, b, c = ray.put(1), ray.put(2), ray.put(3)

    # Passing an object as a nested argument to `echo_and_get`. Ray does not
    # de-reference nested args, so `echo_and_get` sees the references.
    echo_and_get.remote([a, b, c])
    # -> prints args: [ObjectRef(...), ObjectRef(...), ObjectRef(...)]
    #           values: [1, 2, 3]
    ref = r"ObjectRef\([0-9a-f]+\)"
    [args_line] = output.wait_for_lines(rf"\(echo_and_get pid=\d+\) args: \[{ref}, {ref}, {ref}\]")
    assert [f"ObjectRef({r.hex()})" for r in (a, b, c)] == re.findall(
        r"ObjectRef\(\w+\)", args_line
    )
    output.wait_for_lines(r"\(echo_and_get pid=\d+\) values: \[1, 2, 3\]")


def test_closure_capture_of_objects(ray_start, capfd):
    output = DriverOutput(capfd)

    # Put the values (1, 2, 3) into Ray's object store.
    a, b, c = ray.put(1), ray.put(2), ray.put(3)

    @ray.remote
    def print_via_capture():
        """This function prints the values of (a, b, c) to stdout."""
        print(ray.get([a, b, c]))

    # Passing object references via closure-capture. Inside the `print_via_capture`
    # function, the global object refs (a, b, c) can be retrieved and printed.
    print_via_capture.remote()
    # -> prints [1, 2, 3]
    output.wait_for_lines(r"\(print_via_capture pid=\d+\) \[1, 2, 3\]")


def test_nested_objects(ray_start):
    y = 1
    object_ref = ray.put(y)

    # Objects can be nested within each other. Ray will keep the inner object
    # alive via reference counting until all outer object references are deleted.
    object_ref_2 = ray.put([object_ref])

    del object_ref
    [inner] = ray.get(object_ref_2)
    assert ray.get(inner) == 1


# --------------------------------------------------------------------------
# Seed 004: Tasks.
# --------------------------------------------------------------------------


def test_my_function(ray_start):
    # A regular Python function.
    def normal_function():
        return 1

    # By adding the `@ray.remote` decorator, a regular Python function
    # becomes a Ray remote function.
    @ray.remote
    def my_function():
        return 1

    # To invoke this remote function, use the `remote` method.
    # This will immediately return an object ref (a future) and then create
    # a task that will be executed on a worker process.
    obj_ref = my_function.remote()
    # The result can be retrieved with ray.get.
    assert ray.get(obj_ref) == 1
    assert normal_function() == 1


def test_tasks_run_in_parallel(ray_start, tmp_path):
    @ray.remote
    def slow_function():
        # The docs sleep a second here. Instead the first two tasks (one per
        # CPU) wait for each other: they return only if they ran at once.
        barrier(tmp_path, 2)
        return 1

    # Ray tasks are executed in parallel.
    # All computation is performed in the background, driven by Ray's internal event loop.
    refs = []
    for _ in range(4):
        # This doesn't block.
        refs.append(slow_function.remote())

    assert ray.get(refs) == [1, 1, 1, 1]


@pytest.mark.parametrize("ray_start", [{"num_cpus": 4, "num_gpus": 2}], indirect=True)
def test_resource_requirements(ray_start):
    # Specify required resources.
    @ray.remote(num_cpus=4, num_gpus=2)
    def my_function():
        return 1

    assert ray.get(my_function.remote()) == 1

    # Override the default resource requirements.
    assert ray.get(my_function.options(num_cpus=3).remote()) == 1


def test_passing_object_refs_to_tasks(ray_start):
    @ray.remote
    def my_function():
        return 1

    @ray.remote
    def function_with_an_argument(value):
        return value + 1

    obj_ref1 = my_function.remote()
    assert ray.get(obj_ref1) == 1

    # You can pass an object ref as an argument to another Ray task.
    obj_ref2 = function_with_an_argument.remote(obj_ref1)
    assert ray.get(obj_ref2) == 2


def test_waiting_for_partial_results(ray_start):
    @ray.remote
    def slow_function():
        time.sleep(1)
        return 1

    object_refs = [slow_function.remote() for _ in range(2)]
    # Return as soon as one of the tasks finished execution.
    ready_refs, remaining_refs = ray.wait(object_refs, num_returns=1, timeout=None)

    assert len(ready_refs) == 1 and len(remaining_refs) == 1
    assert set(ready_refs + remaining_refs) == set(object_refs)
    assert ray.get(ready_refs) == [1]


def test_multiple_returns(ray_start):
    # By default, a Ray task only returns a single Object Ref.
    @ray.remote
    def return_single():
        return 0, 1, 2

    object_ref = return_single.remote()
    assert ray.get(object_ref) == (0, 1, 2)

    # However, you can configure Ray tasks to return multiple Object Refs.
    @ray.remote(num_returns=3)
    def return_multiple():
        return 0, 1, 2

    object_ref0, object_ref1, object_ref2 = return_multiple.remote()
    assert ray.get(object_ref0) == 0
    assert ray.get(object_ref1) == 1
    assert ray.get(object_ref2) == 2


def test_nested_tasks_quick_sort(ray_start):
    from numpy import random

    def partition(collection):
        pivot = collection.pop()
        greater, lesser = [], []
        for element in collection:
            if element > pivot:
                greater.append(element)
            else:
                lesser.append(element)
        return lesser, pivot, greater

    @ray.remote
    def quick_sort_distributed(collection):
        # Use a threshold to avoid over-parallelizing
        if len(collection) <= 200:
            return sorted(collection)
        else:
            lesser, pivot, greater = partition(collection)
            lesser = quick_sort_distributed.remote(lesser)
            greater = quick_sort_distributed.remote(greater)
            return ray.get(lesser) + [pivot] + ray.get(greater)

    unsorted = random.randint(1000000, size=(2000)).tolist()
    assert ray.get(quick_sort_distributed.remote(unsorted)) == sorted(unsorted)


def test_get_in_a_loop(ray_start):
    @ray.remote
    def f(i):
        return i

    # No parallelism - waits for each task sequentially
    sequential_returns = []
    for i in range(100):
        sequential_returns.append(ray.get(f.remote(i)))

    # Better: all tasks execute in parallel
    refs = []
    for i in range(100):
        refs.append(f.remote(i))
    parallel_returns = ray.get(refs)

    assert sequential_returns == parallel_returns == list(range(100))


def test_get_unnecessarily(ray_start):
    @ray.remote
    def generate_rollout():
        return np.ones((1000, 1000), dtype=np.uint8)

    @ray.remote
    def reduce(rollout):
        return rollout.sum()

    # Downloads result, then reuploads it
    rollout = ray.get(generate_rollout.remote())
    reduced = ray.get(reduce.remote(rollout))
    assert reduced == 1000 * 1000

    # Pass reference - object stays in object store
    rollout_obj_ref = generate_rollout.remote()
    reduced = ray.get(reduce.remote(rollout_obj_ref))
    assert reduced == 1000 * 1000


def test_get_on_task_arguments(ray_start, capfd):
    output = DriverOutput(capfd)

    @ray.remote
    def f():
        return 1

    @ray.remote
    def pass_via_nested_ref(refs):
        print(sum(ray.get(refs)))  # Blocks inside task

    ray.get(pass_via_nested_ref.remote([f.remote() for _ in range(3)]))
    output.wait_for_lines(r"\(pass_via_nested_ref pid=\d+\) 3")

    @ray.remote
    def pass_via_direct_arg(*args):
        print(sum(args))  # Ray dereferences automatically

    ray.get(pass_via_direct_arg.remote(*[f.remote() for _ in range(3)]))
    output.wait_for_lines(r"\(pass_via_direct_arg pid=\d+\) 3")


def test_process_results_in_completion_order(ray_start):
    @ray.remote
    def f(i):
        time.sleep(0.01 * (i % 5))
        return i

    processed = []

    def process(result):
        processed.append(result)

    # Anti-pattern: processing results in submission order.
    refs = [f.remote(i) for i in range(100)]
    for ref in refs:
        result = ray.get(ref)  # Blocks waiting for each in order
        process(result)
    assert processed == list(range(100))

    # Solution: process results in completion order using `ray.wait()`.
    processed.clear()
    refs = [f.remote(i) for i in range(100)]
    unfinished = refs
    while unfinished:
        finished, unfinished = ray.wait(unfinished, num_returns=1)
        result = ray.get(finished[0])
        process(result)
    assert sorted(processed) == list(range(100))


def test_fetch_objects_in_batches(ray_start):
    @ray.remote
    def return_big_object():
        return np.zeros(256 * 1024, dtype=np.uint8)

    # Anti-pattern: fetching all the objects at once.
    object_refs = [return_big_object.remote() for _ in range(100)]
    results = ray.get(object_refs)  # May fail with OOM
    assert len(results) == 100

    # Solution: process results in batches.
    processed = []

    def process_results(results):
        processed.extend(int(r.sum()) for r in results)

    BATCH_SIZE = 10
    while object_refs:
        ready_object_refs, object_refs = ray.wait(object_refs, num_returns=BATCH_SIZE)
        results = ray.get(ready_object_refs)
        process_results(results)
    assert processed == [0] * 100


def test_too_fine_grained_tasks(ray_start):
    @ray.remote
    def remote_double(number):
        return number * 2

    # Overhead dominates - slower than sequential
    doubled_number_refs = [remote_double.remote(number) for number in range(1000)]
    assert ray.get(doubled_number_refs) == [number * 2 for number in range(1000)]

    @ray.remote
    def remote_double_batch(numbers):
        return [number * 2 for number in numbers]

    numbers = list(range(10000))
    BATCH_SIZE = 1000
    doubled_batch_refs = []
    for i in range(0, len(numbers), BATCH_SIZE):
        batch = numbers[i : i + BATCH_SIZE]
        doubled_batch_refs.append(remote_double_batch.remote(batch))

    doubled = [n for batch in ray.get(doubled_batch_refs) for n in batch]
    assert doubled == [number * 2 for number in numbers]


def test_retry_exceptions(ray_start, tmp_path):
    attempts = tmp_path / "attempts"

    @ray.remote(max_retries=3, retry_exceptions=[ValueError])
    def my_task():
        with open(attempts, "a") as file:
            file.write("x")
        if len(attempts.read_text()) < 3:
            raise ValueError("fails on the first two attempts")
        return "done"

    assert ray.get(my_task.remote()) == "done"
    assert attempts.read_text() == "xxx"
