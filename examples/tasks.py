"""Tasks: remote functions, resources, passing refs, wait, multiple returns,
cancellation, retries.

Ray's "Tasks" page, as a program, section by section (its generator section
is in generators.py, its Monte Carlo example in monte_carlo_pi.py, its quick
sort in quick_sort.py and its anti-patterns in task_patterns.py). Sleeps are
shrunk from the page's so it runs in a few seconds.

Run:  solray run examples/tasks.py
      (on Ray itself: python examples/tasks.py)
"""

import time

import ray

# Resources are logical: 4 CPUs and 2 GPUs are declared so that the page's
# `num_cpus=4, num_gpus=2` task can be scheduled on any machine.
ray.init(num_cpus=4, num_gpus=2)


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
print("my_function returned", ray.get(obj_ref))


@ray.remote
def slow_function():
    time.sleep(0.5)  # the page sleeps 10 s
    return 1


# Ray tasks are executed in parallel.
# All computation is performed in the background, driven by Ray's internal event loop.
start = time.monotonic()
for _ in range(4):
    # This doesn't block.
    slow_function.remote()
print(f"4 slow tasks submitted in {time.monotonic() - start:.3f}s; they run in the background")


# Specify required resources.
@ray.remote(num_cpus=4, num_gpus=2)
def my_function():  # noqa: F811 (the page redefines it with resources)
    return 1


# Override the default resource requirements.
print("with num_cpus=3:", ray.get(my_function.options(num_cpus=3).remote()))


# Passing object refs to tasks: inside the function the argument is the value.
@ray.remote
def function_with_an_argument(value):
    return value + 1


obj_ref1 = my_function.remote()
assert ray.get(obj_ref1) == 1

# You can pass an object ref as an argument to another Ray task.
obj_ref2 = function_with_an_argument.remote(obj_ref1)
assert ray.get(obj_ref2) == 2
print("a ref passed to another task: got", ray.get(obj_ref2))

# Waiting for partial results.
object_refs = [slow_function.remote() for _ in range(2)]
# Return as soon as one of the tasks finished execution.
ready_refs, remaining_refs = ray.wait(object_refs, num_returns=1, timeout=None)
print("wait:", len(ready_refs), "ready,", len(remaining_refs), "remaining")


# Multiple returns.
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
print("multiple returns:", ray.get(object_ref), ray.get([object_ref0, object_ref1, object_ref2]))


# Cancelling tasks.
@ray.remote
def blocking_operation():
    time.sleep(10e6)


obj_ref = blocking_operation.remote()
ray.cancel(obj_ref)
try:
    ray.get(obj_ref)
except ray.exceptions.TaskCancelledError:
    print("Object reference was cancelled.")


# Fault tolerance: retry application errors of the listed types. An actor
# counts the attempts, so the task fails twice and then succeeds.
@ray.remote
class Attempts:
    def __init__(self):
        self.count = 0

    def next(self):
        self.count += 1
        return self.count


@ray.remote(max_retries=3, retry_exceptions=[ValueError])
def my_task(attempts):
    attempt = ray.get(attempts.next.remote())
    if attempt < 3:
        raise ValueError(f"attempt {attempt} failed")
    return attempt


print("retried task succeeded on attempt", ray.get(my_task.remote(Attempts.remote())))


# Task events (used by Ray's dashboard) can be turned off per task.
@ray.remote(enable_task_events=False)
def my_task():  # noqa: F811 (the page reuses the name)
    return "done"


print("without task events:", ray.get(my_task.remote()))

ray.shutdown()
print("tasks: all checks passed")
