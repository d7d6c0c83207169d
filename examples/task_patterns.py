"""Task anti-patterns from Ray's "Tasks" page, each next to its fix.

As a program: ray.get() in a loop (no parallelism) versus submitting first
and getting once; an unnecessary ray.get() between two tasks versus passing
the ref on; ray.get() inside a task on nested refs versus refs as direct
arguments; processing results in submission order versus in completion
order with ray.wait(); fetching every result at once versus in batches;
and tasks too small to be worth it versus batching. Each pair computes the
same result, which the program checks; the fix is the way to write it.

Run:  solray run examples/task_patterns.py
      (on Ray itself: python examples/task_patterns.py)
"""

import numpy as np
import ray

ray.init(num_cpus=2)


@ray.remote
def f(i):
    return i * i


# --- ray.get() in a loop ------------------------------------------------------
# No parallelism - waits for each task sequentially
sequential_returns = []
for i in range(100):
    sequential_returns.append(ray.get(f.remote(i)))

# Better: all tasks execute in parallel
refs = []
for i in range(100):
    refs.append(f.remote(i))
parallel_returns = ray.get(refs)
assert sequential_returns == parallel_returns
print("get in a loop vs submit first: same", len(parallel_returns), "results")


# --- an unnecessary ray.get() --------------------------------------------------
@ray.remote
def generate_rollout():
    return np.ones((1000, 1000), dtype=np.uint8)


@ray.remote
def reduce(rollout):
    return int(rollout.sum())


# Downloads result, then reuploads it
rollout = ray.get(generate_rollout.remote())
reduced_after_get = ray.get(reduce.remote(rollout))

# Pass reference - object stays in object store
rollout_obj_ref = generate_rollout.remote()
reduced = ray.get(reduce.remote(rollout_obj_ref))
assert reduced_after_get == reduced == 1_000_000
print("get then resubmit vs pass the ref: both reduce to", reduced)


# --- ray.get() on task arguments -------------------------------------------------
@ray.remote
def one():
    return 1


@ray.remote
def pass_via_nested_ref(refs):
    # Blocks inside task
    return sum(ray.get(refs))


@ray.remote
def pass_via_direct_arg(*args):
    # Ray dereferences automatically
    return sum(args)


via_nested = ray.get(pass_via_nested_ref.remote([one.remote() for _ in range(3)]))
via_direct = ray.get(pass_via_direct_arg.remote(*[one.remote() for _ in range(3)]))
assert via_nested == via_direct == 3
print("nested refs got in the task vs direct arguments: both sum to", via_direct)

# --- processing results in submission order ------------------------------------
processed = []


def process(result):
    processed.append(result)


refs = [f.remote(i) for i in range(100)]
for ref in refs:
    result = ray.get(ref)  # Blocks waiting for each in order
    process(result)
in_submission_order = sorted(processed)

# Process results in completion order using ray.wait()
processed = []
refs = [f.remote(i) for i in range(100)]
unfinished = refs
while unfinished:
    finished, unfinished = ray.wait(unfinished, num_returns=1)
    result = ray.get(finished[0])
    process(result)
assert sorted(processed) == in_submission_order
print("submission order vs completion order: same", len(processed), "results")


# --- fetching too many objects at once ---------------------------------------------
@ray.remote
def return_big_object():
    return np.ones(100_000, dtype=np.uint8)  # the page's are big; these are 100 kB


totals = []


def process_results(results):
    totals.append(sum(int(r.sum()) for r in results))


object_refs = [return_big_object.remote() for _ in range(50)]
all_at_once = sum(int(r.sum()) for r in ray.get(object_refs))  # may run out of memory

BATCH_SIZE = 10
while object_refs:
    ready_object_refs, object_refs = ray.wait(object_refs, num_returns=BATCH_SIZE)
    results = ray.get(ready_object_refs)
    process_results(results)
assert sum(totals) == all_at_once == 50 * 100_000
print(f"all at once vs in batches of {BATCH_SIZE}: both total {all_at_once}")


# --- over-parallelizing with too fine-grained tasks ----------------------------------
@ray.remote
def remote_double(number):
    return number * 2


numbers = list(range(2000))  # the page doubles 10,000 numbers

# Overhead dominates - slower than sequential
doubled_number_refs = [remote_double.remote(number) for number in numbers]
one_task_each = ray.get(doubled_number_refs)


@ray.remote
def remote_double_batch(numbers):
    return [number * 2 for number in numbers]


BATCH_SIZE = 1000
doubled_batch_refs = []
for i in range(0, len(numbers), BATCH_SIZE):
    batch = numbers[i : i + BATCH_SIZE]
    doubled_batch_refs.append(remote_double_batch.remote(batch))
batched = [n for batch in ray.get(doubled_batch_refs) for n in batch]
assert batched == one_task_each == [2 * n for n in numbers]
print(
    f"{len(doubled_number_refs)} tiny tasks vs {len(doubled_batch_refs)} batches: same doubled list"
)

ray.shutdown()
print("task_patterns: all checks passed")
