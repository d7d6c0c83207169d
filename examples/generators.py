"""Remote generators: num_returns set by the caller, by the task ("dynamic"),
and streaming.

Ray's "Dynamic generators" page and the generator part of its "Tasks" page,
as a program: a generator yielding as many values as the caller's
num_returns (stored one at a time, never all held at once); a task splitting
an array into a number of blocks only it knows (num_returns="dynamic"), whose
DynamicObjectRefGenerator is iterated by the driver and passed to another
task; what happens when a generator raises part way; and a streaming
generator whose values the caller reads while the task still runs. Sizes and
sleeps are shrunk from the pages' so it runs in a second or two.

Run:  solray run examples/generators.py
      (on Ray itself: python examples/generators.py)
"""

import time

import numpy as np
import ray

ray.init(num_cpus=2)

# --- num_returns set by the task caller ------------------------------------


@ray.remote
def large_values(num_returns):
    return [
        np.random.randint(np.iinfo(np.int8).max, size=(1_000_000, 1), dtype=np.int8)
        for _ in range(num_returns)
    ]


@ray.remote
def large_values_generator(num_returns):
    # Yields the arrays one at a time: the task never holds them all at once.
    for i in range(num_returns):
        yield np.random.randint(np.iinfo(np.int8).max, size=(1_000_000, 1), dtype=np.int8)
        print(f"yielded return value {i}")


as_list = ray.get(large_values.remote(3))
refs = large_values_generator.options(num_returns=3).remote(3)
print(
    "num_returns=3:",
    len(as_list),
    "values from a list,",
    len(refs),
    "refs from a generator, shapes",
    [ray.get(ref).shape for ref in refs],
)

# --- num_returns set by the task executor ----------------------------------


@ray.remote(num_returns="dynamic")
def split(array, chunk_size):
    while len(array) > 0:
        yield array[:chunk_size]
        array = array[chunk_size:]


# The page draws the size at random; a fixed one makes the output checkable.
array_ref = ray.put(np.zeros(63_153))
block_size = 1000

# Returns an ObjectRef[DynamicObjectRefGenerator].
dynamic_ref = split.remote(array_ref, block_size)

i = -1
ref_generator = ray.get(dynamic_ref)
for i, ref in enumerate(ref_generator):  # noqa: B007 (i counts the blocks, as on the page)
    # Each DynamicObjectRefGenerator iteration returns an ObjectRef.
    assert len(ray.get(ref)) <= block_size
num_blocks_generated = i + 1
array_size = len(ray.get(array_ref))
assert array_size <= num_blocks_generated * block_size
print(
    f"Split array of size {array_size} into {num_blocks_generated} blocks of "
    f"size {block_size} each."
)

# NOTE: The dynamic_ref points to the generated ObjectRefs. Make sure that this
# ObjectRef goes out of scope so that Ray can garbage-collect the internal
# ObjectRefs.
del dynamic_ref


@ray.remote
def get_size(ref_generator):  # a DynamicObjectRefGenerator
    print(ref_generator)
    num_elements = 0
    for ref in ref_generator:
        array = ray.get(ref)
        assert len(array) <= block_size
        num_elements += len(array)
    return num_elements


# Returns an ObjectRef[DynamicObjectRefGenerator].
dynamic_ref = split.remote(array_ref, block_size)
assert array_size == ray.get(get_size.remote(dynamic_ref))

# This also works, but should be avoided because you have to call an additional
# `ray.get`, which blocks the driver.
ref_generator = ray.get(dynamic_ref)
assert array_size == ray.get(get_size.remote(ref_generator))
print("get_size counted", array_size, "elements from the ref and from the generator")

# --- Exception handling -----------------------------------------------------


@ray.remote
def generator():
    for i in range(2):  # noqa: UP028 (the page's code)
        yield i
    raise Exception("error")


def is_task_error(error):
    return isinstance(error, ray.exceptions.RayTaskError) and "error" in str(error)


ref1, ref2, ref3, ref4 = generator.options(num_returns=4).remote()
assert ray.get([ref1, ref2]) == [0, 1]
# All remaining ObjectRefs will contain the error.
try:
    ray.get([ref3, ref4])
except Exception as error:
    print("num_returns=4: values [0, 1], then a RayTaskError:", is_task_error(error))

dynamic_ref = generator.options(num_returns="dynamic").remote()
ref_generator = ray.get(dynamic_ref)
ref1, ref2, ref3 = ref_generator
assert ray.get([ref1, ref2]) == [0, 1]
# Generators with num_returns="dynamic" will store the exception in the final
# ObjectRef.
try:
    ray.get(ref3)
except Exception as error:
    print('num_returns="dynamic": values [0, 1], then a RayTaskError:', is_task_error(error))

# --- Streaming generators -----------------------------------------------------


@ray.remote
def task():
    for i in range(5):
        time.sleep(0.2)  # the page sleeps 5 s between values
        yield i


# The generator yields output every 0.2 seconds: each value is printed as it
# arrives, before the task has finished.
start = time.monotonic()
streamed = []
for obj_ref in task.remote():
    value = ray.get(obj_ref)
    streamed.append(value)
    print(f"  streamed {value} at {time.monotonic() - start:.1f}s")
print("streaming generator:", streamed)

ray.shutdown()
print("generators: all checks passed")
